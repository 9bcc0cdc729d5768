"""The ``poller`` enricher: what the Go netpoller was doing around a stall.

Fills ``event.poller`` with:

- ``waiting``: goroutines parked waiting for network I/O, from ``runtime.netpollWaiters`` (a
  uint32 global) read from the process right after the stall; on Go 1.21, whose counter only
  ever grows (fixed in 1.22), by walking ``runtime.allgs`` for goroutines parked with "IO wait"
  (the ``sched`` enricher's walk, same cost); else the source's
  ``runtime_counters(pid)["netpoll_waiting"]``;
- ``calls`` / ``ready``: the source's cumulative counts of netpoll calls and of goroutines the
  netpoller made ready (``runtime_counters``, counted in BPF), and ``calls_during`` /
  ``ready_during``: their growth since the last sample lgf took at or before the stall's start
  (an upper bound; absent for a process's first event or when the source does not count them).

Why: a stall with the netpoller idle and many waiters points at the network or the peer; one
with a storm of readied goroutines points at the scheduler. Reads: one 4-byte read of process
memory and one ``runtime_counters`` call per event. What it cannot read is left out and counted
in ``lgf_enrich_missing_total{enricher="poller", value, reason}``; events already carrying
``poller`` (replay) are left alone; stalls older than ``max_lag`` are not read (``stale``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from lgf import Component, hookimpl
from lgf.golang.gstatus import G_WAITING
from lgf.golang.runtime_reader import (
    RuntimeEnricher,
    Samples,
    Unreadable,
    read_lag_ns,
    runtime_counters,
)
from lgf.hookcall import for_each
from lgf.options import Duration

CUMULATIVE = ("netpoll_calls", "netpoll_ready")


@dataclass
class PollerOptions:
    max_lag: Duration = Duration(1_000_000_000)
    """Do not read process state for a stall that ended longer ago than this."""
    max_goroutines: int = 200_000
    """Go 1.21 only (see ``waiting``): do not walk processes with more goroutine slots than this."""


class PollerEnricher(RuntimeEnricher):
    name = "poller"
    Options = PollerOptions

    def __init__(self, options: PollerOptions | None, ctx):
        super().__init__(options, ctx)
        self.samples = Samples()

    @hookimpl
    def lgf_enrich(self, event):
        if event.poller or not event.pid:
            return
        lag = read_lag_ns(event)
        if lag is None or lag > self.options.max_lag:
            self._missing("waiting", "stale")
            return
        out: dict = {"read_lag_ns": lag}
        counters = runtime_counters(getattr(self.ctx, "sources", ()), event.pid)
        try:
            out["waiting"] = self._net_waiters(self.readers.get(event.pid, event.build_id))
        except Unreadable as exc:
            if "netpoll_waiting" in counters:
                out["waiting"] = counters["netpoll_waiting"]
            else:
                self._missing("waiting", str(exc))
        now = time.monotonic_ns()
        have = {k: counters[k] for k in CUMULATIVE if k in counters}
        if not have:
            self._missing("calls", "source_does_not_count")
        else:
            out["calls"], out["ready"] = have.get("netpoll_calls"), have.get("netpoll_ready")
            earlier = self.samples.before(event.pid, event.start_ns)
            self.samples.add(event.pid, now, have)
            if earlier is None:
                self._missing("calls_during", "no_earlier_sample")
            else:
                for k, short in (("netpoll_calls", "calls_during"), ("netpoll_ready", "ready_during")):
                    if k in have and k in earlier:
                        out[short] = have[k] - earlier[k]
        event.poller = {k: v for k, v in out.items() if v is not None}

    @hookimpl
    def lgf_enrich_batch(self, events) -> None:
        """``lgf_enrich`` of each event: one call per batch, so that the pipeline keeps its batch
        path with this enricher configured (lgf.hookspecs)."""
        for_each(events, self.lgf_enrich)

    def _net_waiters(self, r) -> int:
        if r.binary.version_tuple[:2] >= (1, 22):
            return r.u32(r.addr("runtime.netpollWaiters"))
        # Go 1.21 never decrements netpollWaiters when the poller readies a goroutine (fixed in
        # 1.22), so it only grows: count goroutines parked with the "IO wait" reason instead.
        try:
            io_wait = r.binary.wait_reasons.index("IO wait")
        except ValueError:
            raise Unreadable("no_wait_reasons") from None
        from lgf.golang.gtable import goroutine_state_counts  # (numpy: ~0.1 s, paid by a host using this)

        return goroutine_state_counts(r, self.options.max_goroutines).get((G_WAITING, io_wait), 0)


@hookimpl
def lgf_components():
    return [Component("enricher", "poller", PollerEnricher, PollerOptions,
                      doc="netpoller waiters and activity around the stall")]
