"""Arming across sources: a cheap tier that saw a stall in a process asks for the costly tier there.

Why in core: the tracepoint source's blocking syscalls and the goroutine sampler are cheap tiers
that can see a stall; the uprobe source owns the costly goroutine tier that should then be armed
(``goroutine_tier = "on_stall"``). Neither source imports the other: a source that can arm
registers an ``arm(pid)`` callable here, and any cheap tier calls :func:`notify_stall`.

Only stalls arm (lgf.idle): a cheap tier that has a goroutine's stack asks :func:`is_stall` first,
so an idle wait (an accept loop, a keep-alive connection, a loop waiting for its next tick) never
makes a process pay for the goroutine tier. A stop-the-world window is the whole process's and
always a stall.

Cost: one lock and a loop over the (one or two) registered sources, per reported stall;
:func:`is_stall` symbolizes the stack once (a dict hit per frame once the symbolizer is warm).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

_ARMERS: list[Callable[[int], None]] = []
_LOCK = threading.Lock()


def register(arm: Callable[[int], None]) -> None:
    """Let ``arm(pid)`` be called whenever a cheap tier sees a stall in ``pid``."""
    with _LOCK:
        _ARMERS.append(arm)


def unregister(arm: Callable[[int], None]) -> None:
    """Undo :func:`register`; a callable never registered is ignored."""
    with _LOCK:
        if arm in _ARMERS:
            _ARMERS.remove(arm)


def notify_stall(pid: int) -> None:
    """A cheap tier somewhere saw a stall in ``pid``: ask every registered source to arm it."""
    with _LOCK:
        armers = list(_ARMERS)
    for arm in armers:
        arm(pid)


_SYMBOLIZERS = None


def is_stall(exe: str, pcs: Sequence[int], wait_reason: str = "", bias: int = 0, rules=None) -> bool:
    """lgf.idle's verdict on a wait a cheap tier saw: False only when it is idle. ``pcs``: the
    goroutine's user stack (innermost first) in process ``exe``, ``bias`` its PIE load bias;
    ``rules``: an :class:`lgf.idle.IdleRules` (the defaults when None). A stack that cannot be
    read is judged a stall: lgf would rather arm once too often than go blind."""
    global _SYMBOLIZERS
    from lgf.golang.symbols import Symbolizers

    if not pcs:
        return True
    if _SYMBOLIZERS is None:
        _SYMBOLIZERS = Symbolizers(max_open=16)
    try:
        sym = _SYMBOLIZERS.get(exe)
        functions = [f.func for pc in pcs for f in sym.frames(pc - bias)]
    except Exception:  # noqa: BLE001 - unreadable binary: a stall
        return True
    return not (rules or _default_rules()).judge(functions, wait_reason).idle


def _default_rules():
    global _DEFAULT_RULES
    if _DEFAULT_RULES is None:
        from lgf.idle import IdleRules

        _DEFAULT_RULES = IdleRules()
    return _DEFAULT_RULES


_DEFAULT_RULES = None
