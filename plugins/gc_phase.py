"""The ``gc_phase`` enricher: where the Go GC was during a stall, and whether a cycle overlapped it.

The runtime stamps every GC cycle with ``nanotime()`` (``runtime.work.tSweepTerm``, ``tMark``,
``tMarkTerm``, ``tEnd``), which on Linux is CLOCK_MONOTONIC: the clock of ``bpf_ktime_get_ns()``
and of ``event.start_ns``. Reading those four int64s right after a stall therefore places the
stall exactly against the latest cycle. Fills ``event.gc_phase`` with:

- ``phase``: the phase when the stall began: ``"off"``, ``"sweep_termination"`` (stop-the-world),
  ``"mark"`` or ``"mark_termination"`` (stop-the-world). When the stall began before the latest
  cycle, it is ``"off"`` if a sample lgf took before the stall saw the GC off and only that one
  cycle started since; otherwise absent (the runtime keeps no stamps of older cycles);
- ``phase_at_read``: ``runtime.gcphase`` now, and ``read_lag_ns``: how long after the stall "now" is;
- ``gc_overlap``: whether a GC cycle ran during the stall; ``cycle_start_ns`` / ``cycle_end_ns``:
  the latest cycle (end absent while it runs);
- ``gc_cycles``: cycles started so far (``runtime.work.cycles``); ``gc_cycles_during``: growth
  since the last sample lgf took at or before the stall's start (an upper bound);
- ``stw_overlap_ns``: how much of the stall lies inside stop-the-world pauses: the latest cycle's
  two (sweep termination, mark termination) and any ``extra["stall"] == "stw"`` events of the same
  process lgf saw (non-GC pauses too), merged so none counts twice. The ``waitreason`` classifier
  blames a lock or channel wait on ``gc_stw`` when pauses cover more than half of it.

Offsets of ``workType``'s fields come from the binary's DWARF (``GoBinary.field_offset``); a
binary without DWARF whose per-version table lacks the timestamps falls back to ``gc_cycles``
(from memory, else the source's ``runtime_counters(pid)["gc_cycles"]``) and samples.

Cost: three reads of process memory (``process_vm_readv``) per event. A value it cannot read is
left out and counted in ``lgf_enrich_missing_total{enricher="gc_phase", value, reason}``. Events
already carrying ``gc_phase`` (a replayed recording) are left alone; a stall that ended longer
ago than ``max_lag`` is not read at all (the process has moved on; reason ``stale``).
"""

from __future__ import annotations

import struct
import time
from collections import deque
from dataclasses import dataclass

from lgf import Component, hookimpl
from lgf.golang.runtime_reader import (
    RuntimeEnricher,
    RuntimeReader,
    Samples,
    Unreadable,
    read_lag_ns,
    runtime_counters,
)
from lgf.hookcall import for_each
from lgf.options import Duration

PHASES = {0: "off", 1: "mark", 2: "mark_termination"}
CYCLE_STAMPS = ("tSweepTerm", "tMark", "tMarkTerm", "tEnd")
"""Consecutive int64 fields of runtime.workType (checked: each 8 bytes after the previous)."""


@dataclass
class GcPhaseOptions:
    max_lag: Duration = Duration(1_000_000_000)
    """Do not read process state for a stall that ended longer ago than this."""
    stw_history: int = 64
    """Stop-the-world pauses remembered per process for ``stw_overlap_ns``."""


@dataclass
class Cycle:
    """The latest GC cycle's phase boundaries (monotonic ns); later ones are None until reached."""

    start: int
    mark: int | None
    mark_term: int | None
    end: int | None

    @classmethod
    def of(cls, stamps: tuple[int, int, int, int]) -> Cycle | None:
        start, mark, term, end = stamps
        if start <= 0:
            return None  # no GC yet in this process
        later = [t if t >= start else None for t in (mark, term, end)]
        return cls(start, *later)

    def phase_at(self, t: int) -> str | None:
        """Phase at instant ``t``; None before this cycle began (an earlier cycle may have run)."""
        if t < self.start:
            return None
        for boundary, phase in ((self.mark, "sweep_termination"), (self.mark_term, "mark"),
                                (self.end, "mark_termination")):
            if boundary is None or t < boundary:
                return phase
        return "off"

    def overlaps(self, start: int, end: int) -> bool | None:
        """Did this cycle run during [start, end]? None when an earlier cycle may have instead."""
        if self.start <= end and (self.end is None or self.end >= start):
            return True
        if self.end is not None and start >= self.end:
            return False  # the stall began after the latest cycle had ended
        return None

    def pauses(self) -> list[tuple[int, int]]:
        """Its stop-the-world pauses, as far as they are known."""
        out = []
        if self.mark is not None:
            out.append((self.start, self.mark))
        if self.mark_term is not None and self.end is not None:
            out.append((self.mark_term, self.end))
        return out


class GcPhaseEnricher(RuntimeEnricher):
    name = "gc_phase"
    Options = GcPhaseOptions

    def __init__(self, options: GcPhaseOptions | None, ctx):
        super().__init__(options, ctx)
        self.samples = Samples()
        self.stws: dict[int, deque] = {}

    @hookimpl
    def lgf_enrich(self, event):
        if event.gc_phase or not event.pid:
            return
        out: dict = {}
        pauses: list[tuple[int, int]] = []
        if event.extra.get("stall") == "stw":
            self._remember_stw(event)
        lag = read_lag_ns(event)
        if lag is None or lag > self.options.max_lag:
            self._missing("phase", "stale")
        else:
            out["read_lag_ns"] = lag
            pauses = self._read_process(event, out)
            out.pop("_earlier_off", None)
        if event.extra.get("stall") != "stw":
            out["stw_overlap_ns"] = overlap_ns(pauses + list(self.stws.get(event.pid, ())),
                                               event.start_ns, event.end_ns)
        event.gc_phase = out

    @hookimpl
    def lgf_enrich_batch(self, events) -> None:
        """``lgf_enrich`` of each event: one call per batch, so that the pipeline keeps its batch
        path with this enricher configured (lgf.hookspecs)."""
        for_each(events, self.lgf_enrich)

    def _read_process(self, event, out: dict) -> list[tuple[int, int]]:
        """Fill ``out`` from the process; returns the latest cycle's pauses."""
        try:
            r = self.readers.get(event.pid, event.build_id)
        except Unreadable as exc:
            self._missing("phase", str(exc))
            self._cycles_from_source(event, out)
            return []
        try:
            out["phase_at_read"] = PHASES.get(r.u32(r.addr("runtime.gcphase")), "unknown")
        except Unreadable as exc:
            self._missing("phase_at_read", str(exc))
        try:
            out["gc_cycles"] = r.u32(r.addr("runtime.work") + r.offset("workType", "cycles"))
        except Unreadable as exc:
            self._missing("gc_cycles", str(exc))
            self._cycles_from_source(event, out)
        self._cycles_during(event, out)
        try:
            cycle = Cycle.of(read_cycle_stamps(r))
        except Unreadable as exc:
            self._missing("phase", str(exc))
            return []
        if cycle is None:
            out["phase"], out["gc_overlap"] = "off", False
            return []
        out["cycle_start_ns"] = cycle.start
        if cycle.end is not None:
            out["cycle_end_ns"] = cycle.end
        phase = cycle.phase_at(event.start_ns)
        if phase is None and self._off_until_latest_cycle(out):
            phase = "off"
        if phase is None:
            self._missing("phase", "began_before_latest_cycle")
        else:
            out["phase"] = phase
        overlap = cycle.overlaps(event.start_ns, event.end_ns)
        if overlap is not None:
            out["gc_overlap"] = overlap
        elif "gc_cycles_during" in out:
            out["gc_overlap"] = out["gc_cycles_during"] > 0
        return cycle.pauses()

    def _cycles_from_source(self, event, out: dict) -> None:
        got = runtime_counters(getattr(self.ctx, "sources", ()), event.pid).get("gc_cycles")
        if got is not None:
            out["gc_cycles"] = got

    def _cycles_during(self, event, out: dict) -> None:
        if "gc_cycles" not in out:
            return
        earlier = self.samples.before(event.pid, event.start_ns)
        self.samples.add(event.pid, time.monotonic_ns(),
                         {"gc_cycles": out["gc_cycles"], "phase_at_read": out.get("phase_at_read")})
        if earlier is None:
            self._missing("gc_cycles_during", "no_earlier_sample")
        else:
            out["gc_cycles_during"] = out["gc_cycles"] - earlier["gc_cycles"]
            out["_earlier_off"] = earlier.get("phase_at_read") == "off"

    @staticmethod
    def _off_until_latest_cycle(out: dict) -> bool:
        """A stall that began before the latest cycle: was the GC off then? Yes if an earlier
        sample (taken before the stall began) saw it off, and only this one cycle started since."""
        return out.get("gc_cycles_during") == 1 and out.get("_earlier_off", False)

    def _remember_stw(self, event) -> None:
        hist = self.stws.get(event.pid)
        if hist is None:
            if len(self.stws) >= 4096:
                self.stws.pop(next(iter(self.stws)))
            hist = self.stws[event.pid] = deque(maxlen=self.options.stw_history)
        hist.append((event.start_ns, event.end_ns))


def read_cycle_stamps(r: RuntimeReader) -> tuple[int, int, int, int]:
    """``work.tSweepTerm, tMark, tMarkTerm, tEnd`` in one read."""
    offs = [r.offset("workType", f) for f in CYCLE_STAMPS]
    if offs != list(range(offs[0], offs[0] + 32, 8)):
        raise Unreadable("unexpected_layout")
    return struct.unpack("<4q", r.read(r.addr("runtime.work") + offs[0], 32))


def overlap_ns(intervals: list[tuple[int, int]], start: int, end: int) -> int:
    """Length of [start, end] covered by the union of ``intervals``."""
    clipped = sorted((max(a, start), min(b, end)) for a, b in intervals if b > start and a < end)
    total, cur_a, cur_b = 0, None, None
    for a, b in clipped:
        if cur_b is None or a > cur_b:
            if cur_b is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_b is not None:
        total += cur_b - cur_a
    return total


@hookimpl
def lgf_components():
    return [Component("enricher", "gc_phase", GcPhaseEnricher, GcPhaseOptions,
                      doc="GC phase during the stall, GC cycle overlap, stop-the-world overlap")]
