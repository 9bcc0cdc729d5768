"""Stall windows: stalls of one process closer together than ``[lgf] window`` merge into one.

Why: one GC pause or one slow lock holder stalls many goroutines at once. An on-call engineer
wants "pid 4242 was stalled for 310 ms from 12:00:01.2, 37 goroutines, mostly lock", not 37 lines.
A stall joins the process's open window when it starts no later than ``window`` after the
window's end; otherwise it opens a new one. Windows go into a ring of the most recent
``capacity`` (``/debug/latency`` shows them), so memory stays bounded whatever the event rate.

Cost: O(1) per stall (a dict look-up and a few additions); memory is ``capacity`` windows plus one
open window per process seen recently (an open window older than ``window`` is closed as soon as
that process stalls again; ``close_idle`` closes the rest).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from .event import Event, wallclock_of

MAX_GOROUTINES_LISTED = 16
"""A window keeps the ids of at most this many goroutines (the count is exact)."""


@dataclass
class StallWindow:
    """One merged stretch of stalls of one process."""

    pid: int
    comm: str
    start_ns: int
    end_ns: int
    count: int = 0
    worst_ns: int = 0
    total_ns: int = 0
    """Sum of the stalls' durations (goroutine-time, so it can exceed ``end_ns - start_ns``)."""
    causes: Counter = field(default_factory=Counter)
    goids: list[int] = field(default_factory=list)
    goroutines: int = 0
    _listed: set[int] = field(default_factory=set, repr=False, compare=False)
    """``goids`` as a set: whether a goroutine is listed is one look-up per stall, not a scan."""
    worst_event_id: str = ""
    trace_id: str = ""
    """The worst stall's trace id ("" when it had none), so /debug/latency leads to the request."""
    closed: bool = False

    def add(self, event: Event) -> None:
        duration = event.duration_ns
        if event.start_ns < self.start_ns:
            self.start_ns = event.start_ns
        if event.end_ns > self.end_ns:
            self.end_ns = event.end_ns
        self.count += 1
        self.total_ns += duration
        if duration >= self.worst_ns:
            self.worst_ns, self.worst_event_id, self.trace_id = duration, event.id, event.trace_id
        causes = self.causes
        causes[event.cause] = causes.get(event.cause, 0) + 1
        if event.goid not in self._listed:
            self.goroutines += 1
            if len(self.goids) < MAX_GOROUTINES_LISTED:
                self.goids.append(event.goid)
                self._listed.add(event.goid)

    def to_dict(self) -> dict:
        return {"pid": self.pid, "comm": self.comm, "start_ns": self.start_ns, "end_ns": self.end_ns,
                "ts": wallclock_of(self.end_ns) if self.end_ns else "",
                "span_ns": self.end_ns - self.start_ns, "count": self.count, "worst_ns": self.worst_ns,
                "total_ns": self.total_ns, "causes": dict(self.causes.most_common()),
                "goroutines": self.goroutines, "goids": list(self.goids),
                "worst_event_id": self.worst_event_id, "trace_id": self.trace_id, "closed": self.closed}


class StallWindows:
    """Merge stalls into per-process windows; keep the most recent ``capacity`` of them."""

    def __init__(self, window_ns: int, capacity: int = 1024):
        self.window_ns = window_ns
        self.ring: deque[StallWindow] = deque(maxlen=capacity)
        self.open: dict[int, StallWindow] = {}

    def add(self, event: Event) -> StallWindow:
        """Put a stall into its process's window (opening one if needed); returns that window.

        Note on goroutine counting: a goroutine stalled twice in the same window counts once only
        while it is among the listed ids; past ``MAX_GOROUTINES_LISTED`` the count is an upper bound.
        """
        win = self.open.get(event.pid)
        if win is not None and event.start_ns > win.end_ns + self.window_ns:
            win.closed = True
            win = None
        if win is None:
            win = StallWindow(event.pid, event.comm, event.start_ns, event.end_ns)
            self.open[event.pid] = win
            self.ring.append(win)
        win.add(event)
        return win

    def close_idle(self, now_ns: int) -> None:
        """Mark windows with no stall for ``window`` as closed and forget them as open."""
        for pid, win in list(self.open.items()):
            if now_ns > win.end_ns + self.window_ns:
                win.closed = True
                del self.open[pid]
        # A window pushed out of the ring must not linger as open either.
        if len(self.open) > self.ring.maxlen:
            live = {id(w) for w in self.ring}
            for pid, win in list(self.open.items()):
                if id(win) not in live:
                    del self.open[pid]

    def recent(self, limit: int | None = None) -> list[dict]:
        """Most recent windows first, as JSON-ready dicts."""
        wins = list(self.ring)[::-1]
        return [w.to_dict() for w in (wins[:limit] if limit else wins)]
