"""Read a stalled goroutine's pprof labels and ``traceparent`` the moment its stall is reported.

Why at once, on the source's thread, and not in the ``trace_context`` enricher: the addresses a
stall event carries (``extra["pprof_labels_addr"]``, ``extra["http_request_addr"]``) point into
the program's heap, and a busy server runs a GC cycle every few milliseconds; once the request is
done its objects may be freed and reused by another request. Measured under wrk
(bench/bench_trace_context.py): by the time the pipeline reached the enricher, a GC cycle had
started since the stall for every traced stall, so nothing could be read safely. Read here, within
a millisecond of the report, before the handler has usually even run again.

The window between the stall's end (when BPF took the addresses) and these reads is the ring
buffer's delivery, well under a millisecond here; the enricher, which may run much later, reads
only if no GC cycle has started since the source received the event (``extra["gc_cycles"]``), and
a caller that knows the count now can pass it as ``gc_cycles_now`` for the same check.

Enabled only when the ``trace_context`` enricher is configured (:meth:`TraceCapture.enable`), so a config
without it pays nothing. Results go into the event: ``labels`` and ``extra["traceparent"]`` (the
raw header value; the enricher validates and parses it). Cost: about 80 us of lgf's CPU per
reported stall that carries addresses (bench/bench_trace_context.py), on the ring-buffer thread.
"""

from __future__ import annotations

import threading

from lgf.errors import TargetRefused

from .httpheader import read_request_headers
from .pproflabels import read_labels
from .runtime_reader import Readers, Unreadable


class TraceCapture:
    """Off until the ``trace_context`` enricher switches it on; one per host (``ctx.services``)."""

    def __init__(self) -> None:
        self.enabled = False
        self.labels = True
        self.headers = True
        self.max_labels = 64
        self._readers = Readers()
        self._lock = threading.Lock()

    def enable(self, labels: bool = True, headers: bool = True, max_labels: int = 64) -> None:
        """Called by the trace_context enricher when it is configured."""
        self.labels, self.headers, self.max_labels = labels, headers, max_labels
        self.enabled = True

    def disable(self) -> None:
        self.enabled = False

    def capture(self, event, gc_cycles_now: int | None, stats=None) -> None:
        """Fill ``event.labels`` and ``event.extra["traceparent"]`` from the addresses it carries, if
        the trace_context feature is on and no GC cycle has started since the stall; a failure is
        counted (``lgf_trace_capture_missing_total{value,reason}``) and leaves the event as it was
        (the enricher may still try, under its own rule)."""
        extra = event.extra
        labels_ptr = int(extra.get("pprof_labels_addr") or 0) if self.labels else 0
        req_ptr = int(extra.get("http_request_addr") or 0) if self.headers else 0
        if not self.enabled or not (labels_ptr or req_ptr):
            return
        stamped = extra.get("gc_cycles")
        if stamped is not None and gc_cycles_now is not None and gc_cycles_now > stamped:
            _count(stats, "all", "gc_since_stall")
            return
        try:
            with self._lock:
                reader = self._readers.get(event.pid, event.build_id)
        except Unreadable as exc:
            _count(stats, "all", str(exc))
            return
        if labels_ptr and not event.labels:
            try:
                event.labels = read_labels(reader, reader.binary, labels_ptr, max_labels=self.max_labels)
                extra["labels_read"] = "at_report"
            except Unreadable as exc:
                _count(stats, "labels", str(exc))
        if req_ptr:
            try:
                values = read_request_headers(reader, reader.binary, req_ptr, ["traceparent"]).get("Traceparent")
                extra["traceparent"] = values[0] if values else ""
            except Unreadable as exc:
                _count(stats, "traceparent", str(exc))
            except TargetRefused:  # UnknownMapLayout
                _count(stats, "traceparent", "unknown_map_layout")

    def forget(self, pid: int) -> None:
        """The process exited: drop its reader."""
        with self._lock:
            self._readers.forget(pid)

    def close(self) -> None:
        with self._lock:
            self._readers.close()


def _count(stats, value: str, reason: str) -> None:
    if stats is not None:
        stats.inc("lgf_trace_capture_missing_total", value=value, reason=reason)
