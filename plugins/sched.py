"""The ``sched`` enricher: the G/P/M picture of the process when a stall ended.

Fills ``event.sched`` with (each only when it could be read):

- ``gomaxprocs``, ``ncpu``: ``runtime.gomaxprocs`` / ``runtime.ncpu`` (``numCPUStartup`` since
  Go 1.25) (int32 globals);
- ``threads``: OS threads (``Threads:`` of ``/proc/PID/status``);
- ``idle_p``, ``idle_m``, ``spinning_m``, ``global_runq``, ``system_goroutines``: fields of
  ``runtime.sched`` (``npidle``, ``nmidle``, ``nmspinning``, the global run queue's length,
  ``ngsys``), at offsets from the binary's DWARF or lgf's per-version table;
- ``goroutines`` (live, system ones included: ``goroutines - system_goroutines`` is what
  ``runtime.NumGoroutine()`` says), ``runnable``, ``running``, ``in_syscall``, ``waiting``: a walk
  of ``runtime.allgs`` reading each goroutine's status.
- ``read_lag_ns``: how long after the stall's end these were read.

Cost (bench/bench_enrich_cost.py): the walk reads 8 bytes per goroutine slot, then the pages
holding the goroutines' status words (nearby gs read as one range); the kernel's per-page cost
dominates: about 0.15-0.35 ms for 100 goroutines and 5-20 ms for 10,000 here (a busy 2-core VM).
So the result is cached per process for ``cache`` (100 ms by default: at most ten walks a
second per process, however many stalls it has), since one incident brings many stalls of the
same process; a cached answer costs about 3 us. Processes with more than ``max_goroutines`` are not walked (``too_many``). The
walk races with the running program (goroutines come and go): the counts are a snapshot, and a
read that lands on freed memory is left out (``bad_address``). What it cannot read is left out
and counted in ``lgf_enrich_missing_total{enricher="sched", value, reason}``; events already
carrying ``sched`` (replay) are left alone; stalls older than ``max_lag`` are not read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from lgf import Component, hookimpl
from lgf.golang import gstatus as gs
from lgf.golang.runtime_reader import (
    RuntimeEnricher,
    RuntimeReader,
    Unreadable,
    read_lag_ns,
)
from lgf.hookcall import for_each
from lgf.options import Duration

G_STATUS = {gs.G_RUNNABLE: "runnable", gs.G_RUNNING: "running", gs.G_SYSCALL: "in_syscall",
            gs.G_WAITING: "waiting", gs.G_PREEMPTED: "runnable"}
"""How each live state is counted (a preempted goroutine waits to be resumed: runnable)."""
G_NOT_LIVE = (gs.G_IDLE, gs.G_DEAD)


@dataclass
class SchedOptions:
    cache: Duration = Duration(100_000_000)
    """Reuse one process's reading for this long."""
    max_goroutines: int = 200_000
    """Do not walk allgs of processes with more goroutine slots than this."""
    max_lag: Duration = Duration(1_000_000_000)
    """Do not read process state for a stall that ended longer ago than this."""


class SchedEnricher(RuntimeEnricher):
    name = "sched"
    Options = SchedOptions

    def __init__(self, options: SchedOptions | None, ctx):
        super().__init__(options, ctx)
        self._cache: dict[int, tuple[int, dict]] = {}

    @hookimpl
    def lgf_enrich(self, event):
        if event.sched or not event.pid:
            return
        lag = read_lag_ns(event)
        if lag is None or lag > self.options.max_lag:
            self._missing("goroutines", "stale")
            return
        now = time.monotonic_ns()
        cached = self._cache.get(event.pid)
        if cached is None or now - cached[0] > self.options.cache:
            if len(self._cache) >= 4096:
                self._cache.clear()
            cached = (now, self.snapshot(event.pid, event.build_id))
            self._cache[event.pid] = cached
        event.sched = {**cached[1], "read_lag_ns": time.monotonic_ns() - event.end_ns}

    # -- reading ----------------------------------------------------------------------------

    @hookimpl
    def lgf_enrich_batch(self, events) -> None:
        """``lgf_enrich`` of each event: one call per batch, so that the pipeline keeps its batch
        path with this enricher configured (lgf.hookspecs)."""
        for_each(events, self.lgf_enrich)

    def snapshot(self, pid: int, build_id: str = "") -> dict:
        out: dict = {}
        threads = _threads(pid)
        if threads is None:
            self._missing("threads", "process_gone")
        else:
            out["threads"] = threads
        try:
            r = self.readers.get(pid, build_id)
        except Unreadable as exc:
            self._missing("goroutines", str(exc))
            return out
        for key, read in (("gomaxprocs", lambda: r.i32(r.addr("runtime.gomaxprocs"))),
                          ("ncpu", lambda: self._ncpu(r)),
                          ("idle_p", lambda: self._sched_i32(r, "npidle")),
                          ("idle_m", lambda: self._sched_i32(r, "nmidle")),
                          ("spinning_m", lambda: self._sched_i32(r, "nmspinning")),
                          ("system_goroutines", lambda: self._sched_i32(r, "ngsys")),
                          ("global_runq", lambda: self._global_runq(r))):
            try:
                out[key] = read()
            except Unreadable as exc:
                self._missing(key, str(exc))
        try:
            out.update(self._walk_allgs(r))
        except Unreadable as exc:
            self._missing("goroutines", str(exc))
        return out

    @staticmethod
    def _ncpu(r: RuntimeReader) -> int:
        try:
            return r.i32(r.addr("runtime.ncpu"))
        except Unreadable:  # Go 1.25 renamed it
            return r.i32(r.addr("runtime.numCPUStartup"))

    @staticmethod
    def _sched_i32(r: RuntimeReader, field: str) -> int:
        return r.i32(r.addr("runtime.sched") + r.offset("schedt", field))

    @staticmethod
    def _global_runq(r: RuntimeReader) -> int:
        base = r.addr("runtime.sched")
        try:  # Go 1.21-1.24: schedt.runqsize int32
            return r.i32(base + r.offset("schedt", "runqsize"))
        except Unreadable:  # Go 1.25+: schedt.runq is a gQueue with its own size
            return r.i32(base + r.offset("schedt", "runq") + r.offset("gQueue", "size"))

    def _walk_allgs(self, r: RuntimeReader) -> dict:
        from lgf.golang.gtable import goroutine_state_counts  # (numpy: ~0.1 s, paid by a host using this)

        counts = {"goroutines": 0, "runnable": 0, "running": 0, "in_syscall": 0, "waiting": 0}
        for (status, _reason), n in goroutine_state_counts(r, self.options.max_goroutines).items():
            if status in G_NOT_LIVE:
                continue
            counts["goroutines"] += n
            kind = G_STATUS.get(status)
            if kind:
                counts[kind] += n
        return counts


def _threads(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


@hookimpl
def lgf_components():
    return [Component("enricher", "sched", SchedEnricher, SchedOptions,
                      doc="G/P/M counts of the process: goroutines by state, GOMAXPROCS, threads, run queue")]
