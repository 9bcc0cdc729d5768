"""The ``gc_phase`` enricher: where the Go GC was when a stall happened, and whether it overlapped.

Fills ``event.gc_phase`` with:

- ``phase``: ``"off"``, ``"mark"`` or ``"mark_termination"``: ``runtime.gcphase`` (a uint32 global)
  read from the process right after the stall (``read_lag_ns`` says how long after);
- ``gc_cycles``: GC cycles started so far (``runtime.work.cycles``), and ``gc_cycles_during``:
  how many started between the last sample lgf took at or before the stall's start and now
  (an upper bound; absent for a process's first event), with ``gc_overlap`` = any did, or the
  phase is not ``off`` now;
- ``stw_overlap_ns``: how much of the stall lies inside stop-the-world pauses lgf itself saw
  (``extra["stall"] == "stw"`` events of the same process, remembered per process). Only pauses
  over the threshold become events, which are exactly the ones long enough to matter: the
  ``waitreason`` classifier blames a lock or channel wait on ``gc_stw`` when a pause covers more
  than half of it.

Reads: two 4-byte reads of process memory (``process_vm_readv``) per event; falls back to the
source's ``runtime_counters(pid)["gc_cycles"]`` when memory cannot be read. A value it cannot
read is left out and counted in ``lgf_enrich_missing_total{enricher="gc_phase", value, reason}``.
Events already carrying ``gc_phase`` (a replayed recording) are left as they are; a stall older
than ``max_lag`` is not read at all (the process has moved on; reason ``stale``).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from lgf import Component, hookimpl
from lgf.options import Duration
from lgf.plugins.runtime_reader import (
    Readers,
    Samples,
    Unreadable,
    count_missing,
    read_lag_ns,
    runtime_counters,
)

PHASES = {0: "off", 1: "mark", 2: "mark_termination"}


@dataclass
class GcPhaseOptions:
    max_lag: Duration = Duration(1_000_000_000)
    """Do not read process state for a stall that ended longer ago than this."""
    stw_history: int = 64
    """Stop-the-world pauses remembered per process for ``stw_overlap_ns``."""


class GcPhaseEnricher:
    name = "gc_phase"

    def __init__(self, options: GcPhaseOptions | None, ctx):
        self.options = options or GcPhaseOptions()
        self.ctx = ctx
        self.stats = getattr(ctx, "stats", None)
        self.readers = Readers()
        self.samples = Samples()
        self.stws: dict[int, deque] = {}

    def _missing(self, value: str, reason: str) -> None:
        count_missing(self.stats, self.name, value, reason)

    @hookimpl
    def lgf_enrich(self, event):
        if event.gc_phase or not event.pid:
            return
        out: dict = {}
        if event.extra.get("stall") == "stw":
            self._remember_stw(event)
        else:
            out["stw_overlap_ns"] = self._stw_overlap(event)
        lag = read_lag_ns(event)
        if lag is None or lag > self.options.max_lag:
            self._missing("phase", "stale")
        else:
            out["read_lag_ns"] = lag
            self._read_process(event, out)
        event.gc_phase = out

    def _read_process(self, event, out: dict) -> None:
        now = time.monotonic_ns()
        cycles = None
        try:
            r = self.readers.get(event.pid, event.build_id)
            out["phase"] = PHASES.get(r.u32(r.addr("runtime.gcphase")), "unknown")
            cycles = r.u32(r.addr("runtime.work") + r.offset("workType", "cycles"))
        except Unreadable as exc:
            self._missing("phase" if "phase" not in out else "gc_cycles", str(exc))
        if cycles is None:
            cycles = runtime_counters(getattr(self.ctx, "sources", ()), event.pid).get("gc_cycles")
        if cycles is None:
            return
        out["gc_cycles"] = cycles
        earlier = self.samples.before(event.pid, event.start_ns)
        self.samples.add(event.pid, now, {"gc_cycles": cycles})
        if earlier is None:
            self._missing("gc_cycles_during", "no_earlier_sample")
            return
        out["gc_cycles_during"] = cycles - earlier["gc_cycles"]
        out["gc_overlap"] = out["gc_cycles_during"] > 0 or out.get("phase", "off") != "off"

    def _remember_stw(self, event) -> None:
        hist = self.stws.get(event.pid)
        if hist is None:
            if len(self.stws) >= 4096:
                self.stws.pop(next(iter(self.stws)))
            hist = self.stws[event.pid] = deque(maxlen=self.options.stw_history)
        hist.append((event.start_ns, event.end_ns))

    def _stw_overlap(self, event) -> int:
        total = 0
        for start, end in self.stws.get(event.pid, ()):
            total += max(0, min(end, event.end_ns) - max(start, event.start_ns))
        return min(total, event.duration_ns or total)


@hookimpl
def lgf_components():
    return [Component("enricher", "gc_phase", GcPhaseEnricher, GcPhaseOptions,
                      doc="GC phase at the stall, GC cycles during it, stop-the-world overlap")]
