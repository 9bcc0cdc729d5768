"""Method and path of a live ``*net/http.Request``, read from outside the process.

Why: a stall that happens while a goroutine serves an HTTP request is far easier to act on when
the alert says which request (``GET /checkout``). The goroutine tier records the request
pointer a handler was called with (``extra["http_request_addr"]``); this module reads
``Request.Method`` and ``Request.URL.Path`` at that address.

Layout: ``Request.Method`` (a string header) and ``Request.URL`` (a ``*url.URL``), and
``url.URL.Path``, at offsets from the binary's DWARF (``net/http.Request``, ``net/url.URL``)
when it has some, else from ``LAYOUT`` below, read from net/http's and net/url's sources of every
Go release lgf supports (1.19, 1.21 to 1.27: the fields have not moved since Go 1.0 and 1.5). A Go
version outside that range without DWARF is refused (:class:`UnknownLayout`), never guessed.

Nothing is invented: the request may have been freed and reused by the time lgf reads it (the
handler returned); the strings are checked (an HTTP method token, a printable path of bounded
length) and a value that does not look like one is refused (:class:`Unreadable`), so the event
keeps an empty method and path.

Cost: two or three ``process_vm_readv`` calls per event that carries a request address; the
DWARF offsets are looked up once per binary.
"""

from __future__ import annotations

import struct

from .golayout import dwarf_fields
from .runtime_reader import Unreadable

LAYOUT = {"Request.Method": 0, "Request.URL": 16, "URL.Path": 56}
"""Byte offsets in Go 1.19 and 1.21-1.27 (checked against each toolchain's net/http/request.go and
net/url/url.go: ``Method string; URL *url.URL``; ``Scheme, Opaque string; User *Userinfo;
Host, Path string``)."""
LAYOUT_GO = ((1, 19), (1, 27))
"""The releases ``LAYOUT`` was checked on (1.20, inside the range, is refused by
:class:`lgf.golang.gobinary.GoBinary` before any of this is read)."""
MAX_METHOD = 32
MAX_PATH = 2048
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")



class UnknownLayout(Exception):
    """The binary's Request/URL layout is not known (no DWARF, Go version outside the table)."""


def offsets_of(binary) -> dict[str, int]:
    """``LAYOUT``'s keys with this binary's offsets: DWARF first, else the table; raises
    :class:`UnknownLayout`. Worked out once per binary (``GoBinary.memo``)."""
    return binary.memo("httpreq.offsets", lambda: _offsets_of(binary))


DWARF_FIELDS = {"Request.Method": ("net/http.Request", "Method"), "Request.URL": ("net/http.Request", "URL"),
                 "URL.Path": ("net/url.URL", "Path")}


def _offsets_of(binary) -> dict[str, int]:
    got = dwarf_fields(binary, DWARF_FIELDS)
    if not got:
        if not LAYOUT_GO[0] <= tuple(binary.version_tuple[:2]) <= LAYOUT_GO[1]:
            raise UnknownLayout(f"{binary.path}: {binary.go_version}: net/http.Request layout unknown "
                                "without DWARF (lgf's table covers go1.19-go1.27)")
        got = dict(LAYOUT)
    return got


def read_method_path(reader, binary, req_addr: int, offsets: dict[str, int] | None = None) -> tuple[str, str]:
    """``(method, path)`` of the ``*http.Request`` at ``req_addr`` in ``reader``'s process
    (:class:`lgf.golang.runtime_reader.RuntimeReader`). Raises :class:`Unreadable` when memory
    cannot be read or does not hold a request any more, :class:`UnknownLayout` when the layout
    is unknown. ``offsets``: ``LAYOUT``'s keys, when the caller worked them out already."""
    if not req_addr:
        raise Unreadable("no_request")
    off = offsets or offsets_of(binary)
    m_ptr, m_len = struct.unpack("<QQ", reader.read(req_addr + off["Request.Method"], 16))
    (url,) = struct.unpack("<Q", reader.read(req_addr + off["Request.URL"], 8))
    if not url or not m_ptr or not 0 < m_len <= MAX_METHOD:
        raise Unreadable("not_a_request")
    p_ptr, p_len = struct.unpack("<QQ", reader.read(url + off["URL.Path"], 16))
    if p_len > MAX_PATH or (p_len and not p_ptr):
        raise Unreadable("not_a_request")
    method = reader.read(m_ptr, m_len)
    raw_path = reader.read(p_ptr, p_len) if p_len else b""
    try:
        path = raw_path.decode("utf-8")
    except UnicodeDecodeError:
        raise Unreadable("not_a_request") from None
    if not set(method) <= _TOKEN or not path.isprintable():
        raise Unreadable("not_a_request")
    return method.decode(), path
