"""The recent stalls the latency page draws: a bounded ring of small records, one per stall.

Why not the alert engine's windows: a window keeps counts and its worst event's id, not each
stall's duration, stack and trace id, which the heat map and the stall list need. Why not the
events themselves: an event holds its raw PCs, enrichment and tags (kilobytes); a record keeps
what the page shows, with the stack cut to ``STACK_FRAMES`` frames.

Cost: one small dict per stall (``add`` is called by the pipeline after the sinks got the
event; 3-6 us here, 5-25 % of what the file sink spends encoding the same event), at most
``capacity`` of them in memory (frames are shared with the event, not copied); a page view
copies the ring once and formats only the stacks it shows.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from ..identity import shown
from ..peerview import shown as peers_shown

STACK_FRAMES = 12
"""Frames kept per stall (innermost first): enough to see the user code that waited."""


class StallHistory:
    """``add(event)`` from the pipeline thread; ``records(service=None)`` from the HTTP threads."""

    def __init__(self, capacity: int = 4096, clock=time.time):
        self.ring: deque[dict] = deque(maxlen=capacity)
        self.clock = clock
        self._lock = threading.Lock()

    def add(self, event) -> None:
        if event.kind != "stall":
            return
        record = {
            "id": event.id,
            "at": self.clock(),
            "ts": event.ts,
            "service": event.extra.get("service") or event.comm,
            "pid": event.pid,
            "identity": shown({"pid": event.pid, **event.extra}),
            "comm": event.comm,
            "goid": event.goid,
            "cause": event.cause,
            "duration_ns": event.duration_ns,
            "wait_reason": event.wait_reason or event.syscall,
            "trace_id": event.trace_id or event.extra.get("trace_id", ""),
            "span_id": event.extra.get("span_id", ""),
            # Frames as they are (formatted only when a page is drawn): a slice, no copy of a frame.
            "stack": event.stack[:STACK_FRAMES],
            "stack_summary": event.stack_summary[:3],
            "topology": event.topology,
            "tags": event.tags,
            "peers": peers_shown(event.extra),
            "precision": event.extra.get("precision", ""),
            "severity": event.severity,
        }
        with self._lock:
            self.ring.append(record)

    def records(self) -> list[dict]:
        """Every kept record, oldest first."""
        with self._lock:
            return list(self.ring)

    def __len__(self) -> int:
        return len(self.ring)
