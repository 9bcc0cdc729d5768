"""Trace ids from what a stalled goroutine carries: a W3C ``traceparent`` header, or pprof labels.

Only ids that parse are taken: a malformed header or label gives nothing, and lgf never makes an
id up (an alert whose trace id leads nowhere is worse than one without).

- ``traceparent`` (https://www.w3.org/TR/trace-context/#traceparent-header):
  ``00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>``, lowercase; all-zero ids and version
  ``ff`` are invalid; a later version may append fields after a ``-``. The parent-id is the span
  of the caller that sent the request: that span is where the stalled request came from.
- pprof labels set by tracing libraries: OpenTelemetry's profiling bridges (``otelpyroscope``,
  ``otel-profiling-go``) put the goroutine's own span as ``span_id`` (16 hex); Datadog's tracer puts
  ``span id`` and ``local root span id`` (decimal 64-bit, written here as 16 hex, the form its W3C
  propagation uses). Neither puts the trace id: only a ``trace_id`` / ``trace id`` label (32 hex, or
  Datadog-style decimal) gives one.
"""

from __future__ import annotations

import re

_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX16 = re.compile(r"[0-9a-f]{16}")
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")

SPAN_LABELS = ("span_id", "span id", "spanid", "otel.span_id")
TRACE_LABELS = ("trace_id", "trace id", "traceid", "otel.trace_id")


def parse_traceparent(value: str) -> tuple[str, str] | None:
    """``(trace_id, parent_span_id)`` of a valid ``traceparent`` value, else None."""
    m = _TRACEPARENT.fullmatch(value.strip())
    if m is None:
        return None
    version, trace_id, span_id, _flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest) or set(trace_id) == {"0"} or set(span_id) == {"0"}:
        return None
    return trace_id, span_id


def _id_of(value: str, hex_re: re.Pattern, digits: int) -> str:
    value = value.strip().lower()
    if hex_re.fullmatch(value) and set(value) != {"0"}:
        return value
    if value.isdigit() and 0 < int(value) < 16**digits:  # Datadog writes its ids in decimal
        return f"{int(value):0{digits}x}"
    return ""


def ids_from_labels(labels: dict[str, str]) -> tuple[str, str]:
    """``(trace_id, span_id)`` named by tracing libraries' pprof labels ("" where none is)."""
    trace_id = next((t for k in TRACE_LABELS if (t := _id_of(labels.get(k, ""), _HEX32, 32))), "")
    span_id = next((s for k in SPAN_LABELS if (s := _id_of(labels.get(k, ""), _HEX16, 16))), "")
    return trace_id, span_id
