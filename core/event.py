"""The event: one stall (``kind = "stall"``) or one aggregated alert (``kind = "alert"``).

This is the event contract (docs/stalls.md, "The event"): the JSON form written by the file sink and the msgpack form
carry exactly the same keys. Keys outside the contract live in ``extra`` in Python and are written
beside the contract keys, so a third-party plugin can add fields without a schema change.

Clocks: ``start_ns``/``end_ns`` are CLOCK_MONOTONIC (what ``bpf_ktime_get_ns()`` returns);
``ts`` is the wall-clock time of ``end_ns`` in RFC 3339 with nanoseconds.

Encoded once: the pipeline calls :meth:`Event.freeze` when it is done changing an event (after
the alert policy saw it; an alert when the alert journal keeps it). From then on ``to_msgpack``
and ``to_json`` encode it once and hand every caller the same bytes: the alert journal, each
sink's spool and the file sink share one encoding instead of making three. An event nobody
froze is encoded afresh at each call, as before. The bytes are exactly what ``json`` and
``msgpack`` make of ``to_dict`` (tests/test_event.py), and those are the fallback for a value
msgspec refuses (an integer past 64 bits, a custom type).

Why a ``msgspec.Struct``: msgspec encodes it from its slots in C, in field order, where a
dataclass is read attribute by attribute through Python's lookup. Inside the pipeline, between
other stages' work, the JSON of a dataclass stall took 4-5 us (2 us in a tight loop, where the
lookups stay cached); as a Struct, lgf replay of 100,000 stalls took a tenth less time in all
(bench/bench_pipeline.py). It is a Struct without garbage-collector tracking (``gc=False``, which
the ``_Encodings`` slot requires): an event never holds itself, and nothing lgf puts in one refers
back to it, so there is no cycle for the collector to find; a plugin must not store an event in
its own ``extra``.
"""

from __future__ import annotations

import functools
import json
import operator
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import IO, Any

import msgpack
import msgspec

CAUSES = (
    "channel",
    "select",
    "lock",
    "sync",
    "syscall",
    "net_io",
    "sleep",
    "gc_stw",
    "gc_assist",
    "sched_latency",
    "unknown",
)
"""The cause vocabulary (docs/stalls.md, "Causes"). A third-party classifier may add its own."""

SEVERITIES = ("info", "warning", "critical")
"""Alert severities, lowest first (a sink's ``min_severity`` compares by this order)."""


def new_id() -> str:
    return uuid.uuid4().hex


def wallclock_of(monotonic_ns: int) -> str:
    """RFC 3339 (UTC, nanoseconds) of a CLOCK_MONOTONIC instant in the recent past."""
    return _rfc3339(_monotonic_to_real() + monotonic_ns)


def _monotonic_to_real() -> int:
    """What to add to a CLOCK_MONOTONIC instant to make it wall-clock nanoseconds, now."""
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def _rfc3339(real_ns: int) -> str:
    secs, nanos = divmod(real_ns, 1_000_000_000)
    return f"{_utc_second(secs)}.{nanos:09d}Z"


@functools.lru_cache(maxsize=64)
def _utc_second(secs: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of a Unix second: a burst's stalls share a few seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))


_UNFROZEN = object()
"""What an encoding slot reads as before :meth:`Event.freeze`."""


class _Encodings:
    """The slots :meth:`Event.freeze` fills, one per encoding: not Struct fields, so never part
    of the event. Unset: not frozen; None: frozen, not encoded yet; else the bytes."""

    __slots__ = ("_json", "_msgpack")


class Event(_Encodings, msgspec.Struct, gc=False):
    kind: str = "stall"
    id: str = msgspec.field(default_factory=new_id)
    pid: int = 0
    tid: int = 0
    comm: str = ""
    exe: str = ""
    goid: int = 0
    go_version: str = ""
    build_id: str = ""
    start_ns: int = 0
    end_ns: int = 0
    duration_ns: int = 0
    ts: str = ""
    cause: str = "unknown"
    wait_reason: str = ""
    syscall: str = ""
    stack: list[dict] = msgspec.field(default_factory=list)
    stack_summary: list[str] = msgspec.field(default_factory=list)
    gc_phase: dict = msgspec.field(default_factory=dict)
    poller: dict = msgspec.field(default_factory=dict)
    sched: dict = msgspec.field(default_factory=dict)
    tags: dict = msgspec.field(default_factory=dict)
    topology: dict = msgspec.field(default_factory=dict)
    env: str = ""
    severity: str = ""
    trace_id: str = ""
    """The trace of the request the stalled goroutine served (W3C ``traceparent``, or a tracing
    library's pprof label); an alert's is its worst stall's. "" when lgf cannot know: never made up."""
    span_id: str = ""
    """The span of that request (the ``traceparent`` parent-id, or the goroutine's own span label)."""
    labels: dict = msgspec.field(default_factory=dict)
    """The goroutine's pprof labels (``runtime/pprof.Do``) when it stalled."""
    scope: str = ""
    """``"request"`` when the stalled goroutine was serving a request (``lgf.idle``), else ""."""
    http_method: str = ""
    """The request's method, when ``scope == "request"`` and it could be read; never guessed."""
    http_path: str = ""
    """The request's URL path, likewise."""
    # Not in the contract's required list, but carried so replay reproduces a run:
    source: str = ""
    """Name of the source that produced the event ("uprobe", "tracepoint", ...)."""
    pcs: list[int] = msgspec.field(default_factory=list)
    """Raw user-stack return addresses, innermost first, as read in BPF (the symbolizer's input)."""
    extra: dict = msgspec.field(default_factory=dict)
    """Any further keys (third-party fields, alert counters); written at the top level."""

    def to_dict(self) -> dict[str, Any]:
        out = dict(zip(_WRITTEN_FIELDS, _written_values(self), strict=True))
        if self.extra:
            for k, v in self.extra.items():
                out.setdefault(k, v)
        return out

    def freeze(self) -> Event:
        """Say that nothing changes this event any more: each encoding of it is made once from
        now on and shared (see the module docstring). Changing it afterwards is a bug: whoever
        encodes it later gets the bytes of what it was."""
        if getattr(self, "_json", _UNFROZEN) is _UNFROZEN:
            self._json = self._msgpack = None
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        known = _FIELD_NAMES
        kwargs = {k: v for k, v in data.items() if k in known and k != "extra"}
        extra = {k: v for k, v in data.items() if k not in known}
        extra.update(data.get("extra") or {})
        return cls(**kwargs, extra=extra)

    def finish(self) -> Event:
        """Fill the derived keys (duration, wall-clock ts) when the source left them empty."""
        if not self.duration_ns and self.end_ns:
            self.duration_ns = self.end_ns - self.start_ns
        if not self.ts and self.end_ns:
            self.ts = wallclock_of(self.end_ns)
        return self


def finish_all(events: Iterable[Event]) -> None:
    """:meth:`Event.finish` of each of ``events``, the clocks read once for them all (the
    pipeline's batch: reading both clocks per event was a third of what finishing cost)."""
    to_real = None
    for event in events:
        if not event.duration_ns and event.end_ns:
            event.duration_ns = event.end_ns - event.start_ns
        if not event.ts and event.end_ns:
            if to_real is None:
                to_real = _monotonic_to_real()
            event.ts = _rfc3339(to_real + event.end_ns)


def freeze_all(events: Iterable[Event]) -> None:
    """:meth:`Event.freeze` of each of ``events``, the pipeline's batch of events it just judged:
    any encoding made before is dropped, not kept. (Asking an unfrozen event for its slot raises
    an AttributeError inside ``getattr``, a formatted message each: a batch does not ask.)"""
    for event in events:
        event._json = event._msgpack = None


_FIELD_NAMES = frozenset(Event.__struct_fields__)
_WRITTEN_FIELDS = tuple(f for f in Event.__struct_fields__ if f != "extra")  # hot path
_written_values = operator.attrgetter(*_WRITTEN_FIELDS)  # one C call for every field, in order
CONTRACT_KEYS = tuple(f for f in Event.__struct_fields__ if f not in ("source", "pcs", "extra"))
"""The keys every event carries in JSON and msgpack (docs/stalls.md, "The event")."""


# --- codecs -------------------------------------------------------------------------------------

def to_json(event: Event) -> str:
    """One JSON object, compact, UTF-8 as is (no ``\\u`` escapes), keys in contract order."""
    return json_bytes(event).decode()


def json_bytes(event: Event) -> bytes:
    """:func:`to_json` as UTF-8 bytes, what a file or socket takes (made once for a frozen event)."""
    return _encoded(event, "_json", _json_of)


def from_json(line: str | bytes) -> Event:
    return Event.from_dict(json.loads(line))


def to_msgpack(event: Event) -> bytes:
    """The event as a msgpack map (made once for a frozen event)."""
    return _encoded(event, "_msgpack", _msgpack_of)


def _encoded(event: Event, slot: str, encode) -> bytes:
    """``encode(event)``, kept in ``slot`` once the event is frozen (see :class:`_Encodings`)."""
    data = getattr(event, slot, _UNFROZEN)
    if data is None:  # frozen: encoded once
        data = encode(event)
        setattr(event, slot, data)
    elif data is _UNFROZEN:
        return encode(event)
    return data


def from_msgpack(data: bytes) -> Event:
    return Event.from_dict(msgpack.unpackb(data, raw=False, strict_map_key=False))


# Encoding: msgspec writes the Struct itself in field order, ``extra`` last as a nested object;
# its keys are then spliced in at the top level, which is what ``to_dict`` makes (fields, then the
# extra keys no field has), without building that dict. Checked against ``to_dict`` in
# tests/test_event.py.

_EXTRA_JSON = b',"extra":'
_EXTRA_MSGPACK = b"\xa5extra"


_JSON = msgspec.json.Encoder()
_MSGPACK = msgspec.msgpack.Encoder()


def _json_of(event: Event) -> bytes:
    extra = event.extra
    try:
        if not _FIELD_NAMES.isdisjoint(extra):  # a key a field has: the field wins, as in to_dict
            raise ValueError("extra shadows a field")
        whole = _JSON.encode(event)
        tail = _JSON.encode(extra)
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError):  # beyond msgspec: the standard library
        return json.dumps(event.to_dict(), ensure_ascii=False, separators=(",", ":")).encode()
    head = whole[: len(whole) - len(tail) - len(_EXTRA_JSON) - 1]
    return head + (b"," + tail[1:] if extra else b"}")


def _msgpack_of(event: Event) -> bytes:
    extra = event.extra
    try:
        if not _FIELD_NAMES.isdisjoint(extra) or len(extra) > 0xFFFF - len(_WRITTEN_FIELDS):
            raise ValueError("extra shadows a field, or is too big to splice")
        whole = _MSGPACK.encode(event)
        tail = _MSGPACK.encode(extra)
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
        return msgpack.packb(event.to_dict(), use_bin_type=True)
    # whole: a map16 header (0xde, count), the fields, then "extra" and its map; the map's entries
    # go after the fields, under a header that counts them.
    body = whole[3: len(whole) - len(tail) - len(_EXTRA_MSGPACK)]
    entries = tail[_map_header_size(tail[0]):]
    return b"\xde" + (len(_WRITTEN_FIELDS) + len(extra)).to_bytes(2, "big") + body + entries


def _map_header_size(first: int) -> int:
    """Bytes of a msgpack map header by its first byte: fixmap 1, map16 3, map32 5."""
    return 1 if first < 0xde else 3 if first == 0xde else 5


def read_events(path: str | os.PathLike) -> Iterator[Event]:
    """Events from a recorded file: a msgpack stream, or JSON lines (told apart by the first byte)."""
    with open(path, "rb") as fh:
        first = fh.read(1)
        fh.seek(0)
        if first in (b"{", b"\n", b" ", b""):
            yield from _read_jsonl(fh)
        else:
            for obj in msgpack.Unpacker(fh, raw=False, strict_map_key=False):
                yield Event.from_dict(obj)


def _read_jsonl(fh: IO[bytes]) -> Iterator[Event]:
    for lineno, line in enumerate(fh, 1):
        line = line.strip()
        if not line:
            continue
        try:
            yield from_json(line)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"line {lineno}: not an lgf event: {exc}") from exc


def write_events(path: str | os.PathLike, events: Iterable[Event], fmt: str = "msgpack") -> int:
    """Write events as a msgpack stream or JSON lines; returns how many were written."""
    n = 0
    with open(path, "wb") as fh:
        for ev in events:
            fh.write(to_msgpack(ev) if fmt == "msgpack" else (to_json(ev) + "\n").encode())
            n += 1
    return n
