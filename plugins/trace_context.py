"""The ``trace_context`` enricher: the stalled request's trace id, span id and pprof labels.

plugins.toml::

    [[enrichers]]
    use = "trace_context"
    labels = true          # copy the goroutine's pprof labels into the event (``labels``)
    http_headers = true    # the W3C traceparent of the net/http request it was serving
    max_lag = "2s"         # read only this soon after the stall (the addresses come from it)

What it reads, from outside the process (``process_vm_readv``) and only for stall events, never
per goroutine switch (the uprobe source does the reads the moment it receives a stall, through
:mod:`lgf.golang.tracecapture`, which this enricher turns on; it parses what they found, and reads
itself only what no source read):

- ``extra["pprof_labels_addr"]``: ``g.labels`` as the uprobe source saw it in BPF when it
  reported the stall; the labels it points to (:mod:`lgf.golang.pproflabels`) go into ``labels``
  (the sampler reads a parked goroutine's labels itself, and they arrive in ``labels`` already);
- ``extra["http_request_addr"]``: the ``*http.Request`` the goroutine was serving, recorded by the
  uprobe source's goroutine tier; its ``Traceparent`` header (:mod:`lgf.golang.httpheader`) gives
  ``trace_id`` and ``span_id`` (the caller's span: where the stalled request came from);
- without a valid header, ids that tracing libraries put in the labels (OpenTelemetry bridges'
  ``span_id``, Datadog's ``span id``; a ``trace_id`` label when one is there): :mod:`lgf.tracecontext`.

The addresses point into the program's heap: they are read only while no GC cycle has started
since the stall (the uprobe source stamps ``extra["gc_cycles"]``; ``gc_since_stall`` otherwise),
so the objects cannot have been freed and reused by another request; lgf leaves a value out
rather than report another request's. ``extra["trace_source"]`` says where the ids came from
(``"traceparent"`` or ``"pprof_labels"``). When nothing valid is found ``trace_id`` stays "":
never made up. A source's own ids are kept. A value that cannot be
read (process gone, a map being written, a layout lgf does not know) is left out and counted in
``lgf_enrich_missing_total{enricher="trace_context",value,reason}``.

Cost (bench/bench_trace_context.py): nothing per request or per goroutine switch; per reported
stall about 8 reads (labels: 3; header: 5), 77 us of lgf's CPU measured here.
"""

from __future__ import annotations

from dataclasses import dataclass

from lgf import Component, hookimpl
from lgf.errors import TargetRefused
from lgf.golang.gomap import UnknownMapLayout
from lgf.golang.httpheader import read_request_headers
from lgf.golang.pproflabels import MAX_LABELS, read_labels
from lgf.golang.runtime_reader import RuntimeEnricher, Unreadable, read_lag_ns, runtime_counters
from lgf.hookcall import for_each
from lgf.options import Duration
from lgf.tracecontext import ids_from_labels, parse_traceparent


@dataclass
class TraceContextOptions:
    labels: bool = True
    """Copy the goroutine's pprof labels into ``labels`` (and look for tracing libraries' ids there)."""
    http_headers: bool = True
    """Read the ``traceparent`` header of the net/http request the goroutine was serving."""
    max_labels: int = MAX_LABELS
    """Labels past this many make the read fail (``too_large``), not a partial copy."""
    max_lag: Duration = Duration(2_000_000_000)
    """For an event without a GC-cycle stamp (see ``_unsafe_to_read``): read the addresses taken
    at the stall only this soon after its end. Replayed recordings are never read."""


class TraceContextEnricher(RuntimeEnricher):
    name = "trace_context"
    Options = TraceContextOptions

    def __init__(self, options, ctx):
        super().__init__(options, ctx)
        # The uprobe source reads labels and the header the moment a stall is reported (see
        # lgf.golang.tracecapture: later, a busy program's GC may have reused the memory).
        self._capture = ctx.services.trace_capture
        self._capture.enable(self.options.labels, self.options.http_headers, self.options.max_labels)

    @hookimpl
    def lgf_unconfigure(self) -> None:
        self._capture.disable()

    @hookimpl
    def lgf_enrich(self, event) -> None:
        if event.kind != "stall" or not event.pid:
            return
        if "traceparent" in event.extra:  # read by the source when it received the stall
            self._ids_from(event, self._parse(event.extra["traceparent"]), event.labels)
            return
        labels_ptr = int(event.extra.get("pprof_labels_addr") or 0) if self.options.labels else 0
        req_ptr = int(event.extra.get("http_request_addr") or 0) if self.options.http_headers else 0
        if not labels_ptr and not req_ptr:
            self._ids_from(event, None, event.labels)  # labels a source read itself (the sampler)
            return
        unsafe = self._unsafe_to_read(event)
        if unsafe:
            self._missing("trace_context", unsafe)
            self._ids_from(event, None, event.labels)
            return
        try:
            reader = self.readers.get(event.pid, event.build_id)
        except Unreadable as exc:
            self._missing("trace_context", str(exc))
            return
        if labels_ptr and not event.labels:
            event.labels = self._labels(reader, labels_ptr)
        self._ids_from(event, self._traceparent(reader, req_ptr) if req_ptr else None, event.labels)

    @hookimpl
    def lgf_enrich_batch(self, events) -> None:
        """``lgf_enrich`` of each event: one call per batch, so that the pipeline keeps its batch
        path with this enricher configured (lgf.hookspecs)."""
        for_each(events, self.lgf_enrich)

    def _unsafe_to_read(self, event) -> str:
        """Why the addresses in the event may no longer hold what they held at the stall ("" if
        they still do). They were taken while the goroutine held the objects; an object is freed
        only by a GC cycle that starts after it became unreachable, so when the source stamped
        the process's GC-cycle count (``extra["gc_cycles"]``) and no cycle has started since, the
        objects are intact however late this runs. Otherwise only ``max_lag`` bounds the risk."""
        lag = read_lag_ns(event)
        if lag is None:
            return "stale"
        stamped = event.extra.get("gc_cycles")
        if stamped is not None:
            now = runtime_counters(getattr(self.ctx, "sources", None), event.pid).get("gc_cycles")
            if now is not None:
                return "gc_since_stall" if now > stamped else ""
        return "stale" if lag > self.options.max_lag else ""

    @staticmethod
    def _ids_from(event, header_ids: tuple[str, str] | None, labels: dict) -> None:
        """Set the event's ids from the request's header, else from tracing libraries' labels;
        a source's own ids are kept."""
        if event.trace_id or event.span_id:
            return
        ids, source = header_ids, "traceparent"
        if ids is None and labels:
            ids, source = ids_from_labels(labels), "pprof_labels"
        if ids is None or not any(ids):
            return
        event.trace_id, event.span_id = ids
        event.extra["trace_source"] = source

    def _labels(self, reader, ptr: int) -> dict[str, str]:
        try:
            return read_labels(reader, reader.binary, ptr, max_labels=self.options.max_labels)
        except Unreadable as exc:
            self._missing("labels", str(exc))
        return {}

    def _traceparent(self, reader, req: int) -> tuple[str, str] | None:
        try:
            values = read_request_headers(reader, reader.binary, req, ["traceparent"]).get("Traceparent")
        except Unreadable as exc:
            self._missing("traceparent", str(exc))
            return None
        except (UnknownMapLayout, TargetRefused):
            self._missing("traceparent", "unknown_map_layout")
            return None
        return self._parse(values[0] if values else "")

    def _parse(self, value: str) -> tuple[str, str] | None:
        if not value:
            return None
        ids = parse_traceparent(value)
        if ids is None:
            self._missing("traceparent", "malformed")
        return ids


@hookimpl
def lgf_components():
    return [Component("enricher", "trace_context", TraceContextEnricher, TraceContextOptions,
                      doc="trace id, span id and pprof labels of the stalled goroutine's request")]
