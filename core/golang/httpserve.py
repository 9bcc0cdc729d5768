"""The ``*http.Request`` a parked goroutine is serving, found in its own stack frames.

Why: the goroutine tier learns which request a goroutine serves from a probe on
``net/http.serverHandler.ServeHTTP`` (``extra["http_request_addr"]``), but that probe is only on
while the tier is armed, and the tier is armed *because* the sampler saw a stall. So the first stall
of a process, the one the sampler reports, had no request: no method, no path, no trace id. The
request is there to be read, though, from outside, while the goroutine is still parked: every
net/http/1.x server goroutine runs ``net/http.(*conn).serve``, which calls the handler as::

    w, err := c.readRequest(ctx)          // w *response
    ...
    serverHandler{c.server}.ServeHTTP(w, w.req)
    ...
    w.finishRequest()                     // w is used after the call: it stays live across it

Go's register ABI saves no register across a call, so a value used after the call (``w``, and the
receiver ``c``) is in a stack slot of ``serve``'s frame for the handler's whole run. ``response``
starts with ``conn *conn; req *Request`` (checked in net/http/server.go and in the DWARF of the
toolchains the tests build, 1.19.8, 1.21.13, 1.25.5 and 1.27.3; the 1.22-1.24 and 1.26 sources were not
at hand, and these two fields have led the struct since long before 1.21). Measured on those
three: the response pointer sits in three slots of ``serve``'s frame, the connection in its own
frame and its caller's.

How (:func:`find_request`): the parked goroutine's stack is walked by frame pointers with each
frame's bounds (:func:`lgf.golang.goroutine_stack.walk`); the frame whose pc lies in
``net/http.(*conn).serve`` (its span from the symbol table, or the pclntab of a stripped binary)
is read whole, with its caller's frame (where ``serve``'s register arguments, ``c`` among them, are
spilled). Every word of ``serve``'s own frame that could be a heap pointer (aligned, outside the
goroutine's stack) is a candidate ``p``, and is kept only if

- ``*(p + response.conn)`` is a word of those two frames: the connection ``serve`` runs for is
  live there too (``c``), so ``p`` is that connection's response, not some other object;
- ``*(p + response.req)`` leads to a plausible request (:func:`lgf.golang.httpreq.read_method_path`:
  an HTTP method token, a ``*url.URL``, a printable path of bounded length), whose path starts with
  ``/`` or is ``*`` (what a server reads from a request line; an absolute URI's path does too).

One request found is the answer; none is refused (``no_response``), and two different ones
(a stale slot of an earlier request on a keep-alive connection that still looks alive) are
refused too (``ambiguous``): never a guess. What this does not see: HTTP/2 handlers (they run on
goroutines of their own, started by ``http2serverConn.runHandler``, with no ``conn.serve``
frame: ``no_serve_frame``) and servers that do not use net/http.

Layout: ``response.conn`` and ``response.req``, and the ``Request``/``URL`` fields
:mod:`lgf.golang.httpreq` reads, come from ``LAYOUT`` and :data:`lgf.golang.httpreq.LAYOUT` for
Go 1.19 and 1.21-1.27 (read from each release's sources; tests/test_sampler_request.py checks them against
the DWARF of every toolchain the tests build), and from the binary's DWARF only for a newer Go
(one walk for the three structs, kept with the binary, ``GoBinary.memo``, and shared with
:mod:`lgf.golang.httpreq`). Not DWARF first, as the runtime's layout is: that walk takes 1-2 s
with pyelftools on these small fixtures, on the sampler's thread, while the goroutine is parked;
measured, the handler of the first stall had often returned by the end of it, and its request was
lost, which is the one stall this module exists for. A Go release outside the table without
DWARF is refused (:class:`lgf.golang.httpreq.UnknownLayout`), never guessed; and whatever the
offsets' source, a response is only believed when its connection is live in the same frames and
its request reads as one.

When: only for a goroutine still parked in the same park (the caller checks it after reading,
as it does for pprof labels), so ``serve``'s frame was not being rewritten; a request is alive
while its handler runs (``w`` references it from the stack), so what is read is that request.

Cost: one read of ``serve``'s frame and its caller's (about 1-2 KiB), one scattered read of 16
bytes per candidate word (47 of them on the Go 1.21 fixture), and the request's few small reads
per candidate that passes the connection check (0.15-0.8 ms of lgf's CPU per call on this loaded 2-core
VM, Go 1.21-1.27, stripped fixtures); only for a stall whose stack is request-scoped,
once per park.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .goframes import read_each
from .golayout import dwarf_fields
from .httpreq import DWARF_FIELDS as REQUEST_DWARF_FIELDS
from .httpreq import LAYOUT as REQUEST_LAYOUT
from .httpreq import LAYOUT_GO, UnknownLayout, read_method_path
from .runtime_reader import Unreadable

SERVE = "net/http.(*conn).serve"
"""The function whose frame holds the connection's current ``*response``."""
LAYOUT = {"response.conn": 0, "response.req": 8}
"""Byte offsets in Go 1.19 and 1.21-1.27 (``type response struct { conn *conn; req *Request; ...}``;
read in net/http/server.go and DWARF of 1.19.8, 1.21.13, 1.25.5, 1.27.3, see the module docstring)."""
MAX_FRAME_BYTES = 16 * 1024
"""A ``serve`` frame (or its caller's) larger than this is taken for a broken walk (they are about
1.1 KiB on Go 1.21-1.27)."""
MAX_CANDIDATES = 512
_DWARF_FIELDS = {"response.conn": ("net/http.response", "conn"), "response.req": ("net/http.response", "req"),
                 **REQUEST_DWARF_FIELDS}
_HEAP_MIN = 0x10000
_USER_MAX = 1 << 47


@dataclass(frozen=True)
class ServedRequest:
    """The request a parked goroutine serves, as read while it was parked."""

    addr: int
    """The ``*http.Request``."""
    method: str
    path: str
    response: int
    """The ``*http.response`` in ``serve``'s frame that led to it."""


def serve_span(binary) -> tuple[int, int] | None:
    """``[entry, end)`` of ``net/http.(*conn).serve`` in ``binary`` (unbiased), None if it has none."""
    return binary.memo("httpserve.serve", lambda: _serve_span(binary))


def _serve_span(binary) -> tuple[int, int] | None:
    entry, size = binary.func_addr(SERVE), binary.func_size(SERVE)
    return (entry, entry + size) if entry and size else None


def offsets_of(binary) -> dict[str, int]:
    """``response.conn``, ``response.req`` and :data:`lgf.golang.httpreq.LAYOUT`'s keys for
    ``binary``: the tables for Go 1.19 and 1.21-1.27, else DWARF (module docstring); raises
    :class:`UnknownLayout`. Worked out once per binary; what DWARF gave is handed to
    :mod:`lgf.golang.httpreq` too (one walk for both)."""
    off = binary.memo("httpserve.offsets", lambda: _offsets_of(binary))
    if not _in_table(binary):  # from DWARF: httpreq, which would walk it again, takes them
        binary.memo("httpreq.offsets", lambda: {k: off[k] for k in REQUEST_LAYOUT})
    return off


def _in_table(binary) -> bool:
    return LAYOUT_GO[0] <= tuple(binary.version_tuple[:2]) <= LAYOUT_GO[1]


def dwarf_offsets(binary) -> dict[str, int]:
    """What the binary's DWARF says of the same fields ({} without DWARF, or when it lacks one):
    for checking the tables."""
    return dwarf_fields(binary, _DWARF_FIELDS)


def _offsets_of(binary) -> dict[str, int]:
    if _in_table(binary):
        return {**REQUEST_LAYOUT, **LAYOUT}
    got = dwarf_offsets(binary)
    if got:
        return got
    raise UnknownLayout(f"{binary.path}: {binary.go_version}: net/http.response layout unknown "
                        "without DWARF (lgf's table covers go1.19-go1.27)")


def serve_frame(binary, bias: int, pcs: list[int]) -> int | None:
    """Index in ``pcs`` of the frame running ``net/http.(*conn).serve`` (None: there is none)."""
    span = serve_span(binary)
    if span is None:
        return None
    lo, hi = span
    return next((i for i, pc in enumerate(pcs) if lo <= pc - bias < hi), None)


def find_request(reader, binary, pcs: list[int], bounds: list[tuple[int, int]],
                 stack: tuple[int, int]) -> ServedRequest:
    """The request served by the goroutine whose stack walk gave ``pcs`` and ``bounds``
    (:func:`lgf.golang.goroutine_stack.walk`), ``stack`` its ``[sp, stack.hi)``; see the module
    docstring. Raises :class:`Unreadable` (``no_serve_frame``, ``frame_bounds``, ``no_response``,
    ``ambiguous``, or a read's reason) or :class:`UnknownLayout`."""
    i = serve_frame(binary, reader.bias, pcs)
    if i is None or i >= len(bounds):
        raise Unreadable("no_serve_frame")
    lo, hi = bounds[i]
    if lo % 8 or not lo < hi <= lo + MAX_FRAME_BYTES:
        raise Unreadable("frame_bounds")
    # The caller's frame holds serve's spilled register arguments (c among them): read it too,
    # when its bounds are sane (the outermost frame's end is unknown: then serve's own only).
    _clo, chi = bounds[i + 1] if i + 1 < len(bounds) else (hi, 0)
    end = chi if hi < chi <= hi + MAX_FRAME_BYTES else hi
    off = offsets_of(binary)
    raw = reader.read(lo, end - lo)
    words = struct.unpack(f"<{len(raw) // 8}Q", raw)
    live = frozenset(words)
    sp, stack_hi = stack
    candidates = sorted({w for w in words[:(hi - lo) // 8]
                         if not w % 8 and _HEAP_MIN <= w < _USER_MAX and not sp <= w < stack_hi})
    found: dict[int, ServedRequest] = {}
    for p, conn, req in _pointers(reader, candidates[:MAX_CANDIDATES], off["response.conn"], off["response.req"]):
        if not conn or conn == p or conn not in live or not req or req in found:
            continue
        try:
            method, path = read_method_path(reader, binary, req, off)
        except Unreadable:
            continue
        if path.startswith("/") or path == "*":
            found[req] = ServedRequest(req, method, path, p)
    if not found:
        raise Unreadable("no_response")
    if len(found) > 1:
        raise Unreadable("ambiguous")
    return next(iter(found.values()))


def _pointers(reader, candidates: list[int], off_conn: int, off_req: int) -> list[tuple[int, int, int]]:
    """``(p, *(p + off_conn), *(p + off_req))`` for each candidate that can be read, in one
    ``process_vm_readv`` when all can (about 35 us for 47 candidates, against 1 ms one by one)."""
    lo, size = min(off_conn, off_req), abs(off_req - off_conn) + 8
    at_conn, at_req = off_conn - lo, off_req - lo
    raws = read_each(reader, [p + lo for p in candidates], size)
    return [(p, *struct.unpack_from("<Q", raw, at_conn), *struct.unpack_from("<Q", raw, at_req))
            for p, raw in zip(candidates, raws, strict=True) if raw]
