"""The Python half of the goroutine tier's idle/stall verdict: what the kernel could not decide alone.

uprobe.c judges every wait over the threshold from its goroutine's stack (``judge_stack``: request
marker, cut stack, idle site, ``select {}``) and sends the verdict as event flags; this module turns
those flags into the event's fields, and settles the two rules the kernel can only see the shape of:
lgf.idle's loop head (a receive, select, sleep or Cond.Wait called directly by the goroutine's start
function) and service loop (a select or receive in a loop of its own, entered from the goroutine's
start with no loop on the way: the loops are read from the binary's code, :mod:`lgf.golang.loops`).
Return addresses hide inlined calls, so the kernel flags a candidate (``EV_LOOP_HEAD``)
and :class:`LoopHeadJudge` symbolizes its stack (inlined frames included) and asks
:meth:`lgf.idle.IdleRules.judge`, through the host's one "symbolize, then judge"
(:meth:`lgf.services.Services.judge`, its shared symbol cache and ``[idle]`` rules), so the
kernel and every other tier agree.

Cost: a candidate is any receive, select, sleep or Cond.Wait over the threshold that no earlier
rule decided (a ticker or worker loop with a period over the threshold): one symbolized stack per
wait (a dict hit per frame once the symbolizer's cache is warm, and a cached lookup per frame under
the waiter for the service-loop rule). Idle ones are counted here, under the
``idle`` histogram label, since the kernel left them out of its histogram.
"""

from __future__ import annotations

import threading

from lgf.bpf.constants import EV_IDLE, EV_LOOP_HEAD, EV_SCOPE_REQUEST, EV_STACK_CUT

__all__ = ["EV_IDLE", "EV_LOOP_HEAD", "EV_SCOPE_REQUEST", "EV_STACK_CUT", "LoopHeadJudge", "log2_slot",
           "verdict_into"]


def verdict_into(ev, flags: int, http_req: int) -> None:
    """Put the kernel's verdict (``flags``) on a goroutine event: ``extra["verdict"]``,
    ``extra["scope"]`` (and ``ev.scope`` when the event model has it), ``extra["stack_cut"]``, and
    ``extra["http_request_addr"]`` (the ``*http.Request`` the goroutine serves, for
    ``lgf.golang.httpreq`` to read its method and path)."""
    extra = ev.extra
    extra["verdict"] = "idle" if flags & EV_IDLE else "stall"
    if flags & EV_STACK_CUT:
        extra["stack_cut"] = True
    if flags & EV_SCOPE_REQUEST:
        extra["scope"] = "request"
        if hasattr(ev, "scope"):
            ev.scope = "request"
        if http_req:
            extra["http_request_addr"] = http_req


def log2_slot(duration_ns: int) -> int:
    """The log2(us) bucket of a duration, as lgf_maps.h's ``hist_add`` computes it (BCC's
    ``bpf_log2l``: the bit length, 1 for zero)."""
    return max((duration_ns // 1000).bit_length(), 1)


class LoopHeadJudge:
    """Confirms the kernel's loop-head candidates with :meth:`IdleRules.judge` and counts them.
    ``services``: the host's :class:`lgf.services.Services` (its symbol cache and idle rules)."""

    def __init__(self, services):
        self.services = services
        self._lock = threading.Lock()
        self.hist: dict[tuple[int, str, int], dict[int, int]] = {}
        """(pid, "idle" or "park", wait reason number) -> {log2(us) slot: count}."""
        self.idle_waits: dict[int, int] = {}

    def _verdict(self, target, ev):
        """lgf.idle's verdict on the event's symbolized stack; None when it cannot be read."""
        return self.services.judge(target.path or target.exe, ev.pcs, ev.wait_reason,
                                   ev.extra.get("load_bias", 0))

    def is_idle(self, target, ev) -> bool:
        """True when lgf.idle calls this candidate idle; a stack it cannot read stays a stall."""
        verdict = self._verdict(target, ev)
        return verdict is not None and verdict.idle

    def decided_by(self, target, ev) -> str:
        """The frame that made the kernel's verdict, by name (``extra["decided_by"]``): the
        request marker or idle site :meth:`IdleRules.judge` finds on the symbolized stack; ""
        when the stack cannot be read. One symbolized stack per request-scoped or idle event."""
        verdict = self._verdict(target, ev)
        return verdict.site if verdict is not None else ""

    def count(self, pid: int, idle: bool, reason: int, duration_ns: int) -> None:
        key = (pid, "idle" if idle else "park", reason)
        slot = log2_slot(duration_ns)
        with self._lock:
            slots = self.hist.setdefault(key, {})
            slots[slot] = slots.get(slot, 0) + 1
            if idle:
                self.idle_waits[pid] = self.idle_waits.get(pid, 0) + 1

    def forget(self, pid: int) -> None:
        with self._lock:
            for key in [k for k in self.hist if k[0] == pid]:
                del self.hist[key]
            self.idle_waits.pop(pid, None)

    def hist_items(self) -> list[tuple[tuple[int, str, int], dict[int, int]]]:
        with self._lock:
            return [(k, dict(v)) for k, v in self.hist.items()]
