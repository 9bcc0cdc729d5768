"""Arming across sources: a cheap tier that saw a stall in a process asks for the costly tier there.

Why in core: the tracepoint source's blocking syscalls and the goroutine sampler are cheap tiers
that can see a stall; the uprobe source owns the costly goroutine tier that should then be armed
(``goroutine_tier = "on_stall"``). Neither source imports the other: a source that can arm
registers an ``arm(pid)`` callable here, and any cheap tier calls :func:`notify_stall`.

Cost: one lock and a loop over the (one or two) registered sources, per reported stall.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

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
