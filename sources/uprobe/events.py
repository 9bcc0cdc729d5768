"""From uprobe.c's ring buffer to lgf events: decoding, the Python half of the verdict, the claim.

Each ring-buffer record (``struct event``) becomes an :class:`lgf.Event` with ``source = "uprobe"``:
the stall kind (``park``, ``gc_assist`` for a "GC assist wait" park, ``runnable``, ``stw``), the wait
reason by the binary's own name, ``runnable_from`` (what made it runnable: lgf.sources.uprobe.runnable),
the kernel's verdict (lgf.sources.uprobe.verdict), ``load_bias``, ``pprof_labels_addr`` and
``gc_cycles`` (for trace_context). Then, in order: a loop-head candidate is judged (and dropped if
idle, unless ``report_idle``); a park goes through the sampler's claim (sent once when it reached both
tiers); a stop-the-world stall arms the goroutine tier (``ctx.services.arming``); any other event has
its labels and ``traceparent`` captured while the objects surely live, when trace_context asked.
Runs on the program's ring-buffer thread.
"""

from __future__ import annotations

from collections.abc import Callable

from lgf import Event
from lgf.bpf import constants as bpf_constants
from lgf.bpf import loader
from lgf.causes import GC_ASSIST_REASON

from . import runnable
from .handoff import SampledTier
from .metrics import gc_cycles, reason_name
from .program import Program
from .targets import Attached, Targets
from .verdict import EV_IDLE, EV_LOOP_HEAD, EV_SCOPE_REQUEST, LoopHeadJudge, verdict_into

STALL_NAMES = bpf_constants.STALL_NAMES


class EventPath:
    """What becomes of each ring-buffer record (see the module docstring)."""

    def __init__(self, targets: Targets, verdicts: LoopHeadJudge, services, stats, report_idle: bool):
        self.targets, self.verdicts, self.services = targets, verdicts, services
        self.stats, self.report_idle = stats, report_idle
        self.emit: Callable[[Event], None] | None = None
        self.sampler: SampledTier | None = None

    def on_ring_event(self, prog: Program, data) -> None:
        raw = prog.bpf[b"events"].event(data)
        pid = int(raw.pid)
        att = self.targets.attached.get(pid)
        ev = decode(raw, att)
        flags = int(raw.flags)
        if flags & (EV_SCOPE_REQUEST | EV_IDLE) and att is not None:
            site = self.verdicts.decided_by(att.target, ev)
            if site:
                ev.extra["decided_by"] = site
        if flags & EV_LOOP_HEAD and att is not None:
            idle = self.verdicts.is_idle(att.target, ev)
            self.verdicts.count(pid, idle, int(raw.reason), ev.duration_ns)
            if idle:
                ev.extra["verdict"] = "idle"
                ev.extra["decided_by"] = "loop head"
                if not self.report_idle:
                    return
        if (ev.extra["stall"] in ("park", "gc_assist") and self.sampler is not None
                and not self.sampler.claim(pid, ev.goid, ev.start_ns, ev.end_ns)):
            return  # the sampler reported this park (it began before the tier could note it)
        if ev.extra["stall"] == "stw":
            self.services.arming.notify_stall(pid)
        elif self.services.trace_capture.enabled:  # labels and traceparent while the objects surely live
            self.services.trace_capture.capture(ev, None, self.stats)
        if self.emit is not None:
            self.emit(ev)


def decode(raw, att: Attached | None) -> Event:
    """The event of one ``struct event`` (``att``: its process, None if it was detached meanwhile)."""
    kind = STALL_NAMES.get(int(raw.kind), "park")
    reason = int(raw.reason)
    extra: dict = {"stall": kind}
    ev = Event(source="uprobe", pid=int(raw.pid), tid=int(raw.tid),
               comm=raw.comm.decode("utf-8", "replace"), goid=int(raw.goid),
               start_ns=int(raw.start_ns), end_ns=int(raw.end_ns),
               duration_ns=int(raw.end_ns) - int(raw.start_ns), pcs=loader.pcs_of(raw), extra=extra)
    if att is not None:
        target = att.target
        ev.exe, ev.go_version, ev.build_id = target.exe, target.binary.go_version, target.binary.build_id
        if att.load_bias:
            extra["load_bias"] = att.load_bias
        if raw.labels:
            extra["pprof_labels_addr"] = int(raw.labels)
        if raw.labels or raw.http_req:  # heap addresses: trace_context reads them if no GC since
            extra["gc_cycles"] = gc_cycles(att.program, int(raw.pid))
        if kind == "stw":
            # Go 1.20 and older name no reason (no stwReasonStrings): "", not "reason 0"
            extra["stw_reason"] = reason_name(att.stw_reasons, reason) if att.stw_reasons else ""
        else:
            if kind == "runnable":  # what made it runnable rides in the reason's high byte
                reason, extra["runnable_from"] = runnable.split_reason(reason, att.wait_reasons)
            ev.wait_reason = "" if reason == runnable.NO_REASON else reason_name(att.wait_reasons, reason)
            if kind == "park" and ev.wait_reason == GC_ASSIST_REASON:
                extra["stall"] = "gc_assist"
    if kind != "stw":
        verdict_into(ev, int(raw.flags), int(raw.http_req))
    return ev.finish()
