"""Which upstream a goroutine inside an HTTP client round trip waits on, and which caller a
goroutine serving a request serves: read from its frames while it is parked.

Upstream. A request sent through net/http's ``Transport`` (``http.Client``, ``httputil.ReverseProxy``,
most RPC clients over HTTP/1.x) waits for its answer in ``net/http.(*persistConn).roundTrip``,
parked in a ``select`` (or, writing a large body, below it). Its receiver ``pc`` is used after the
``select``, so it sits in a slot of ``roundTrip``'s frame or of its caller's
(:mod:`lgf.golang.goframes`). A ``persistConn`` starts with::

    alt RoundTripper; t *Transport; cacheKey connectMethodKey{proxy, scheme, addr string; onlyH1 bool}
    conn net.Conn; ...

``cacheKey.addr`` is the upstream's ``host:port`` as the Transport dialled it (the request URL's
host, with the scheme's port added; the proxy's when one is used, named then in ``proxy``). A
candidate word is believed to be the ``persistConn`` only if ``t`` is non-nil, ``scheme`` reads
``http`` or ``https``, ``addr`` reads as ``host:port`` and ``conn`` is set; one found is the answer,
two different ones are refused (``ambiguous``), none is ``no_persist_conn``. Then the connection's
descriptor: ``conn``'s data pointer is a ``*net.TCPConn`` (``conn{fd *netFD}``, ``netFD{pfd
poll.FD{fdmu; Sysfd int}}``), or a ``*tls.Conn`` whose first field is the ``net.Conn`` under it;
the descriptor is kept only when the socket it names (:mod:`lgf.golang.netpeer`) has the upstream's
port as its peer port, so a wrong guess of the type can only lose the addresses, not misname them.

Caller. A goroutine serving an HTTP/1.x request has its ``*response`` found by
:mod:`lgf.golang.httpserve`; ``response.conn`` is the server's ``*conn``, whose ``remoteAddr`` is
the client's ``ip:port`` (``conn{server *Server; cancelCtx; rwc net.Conn; remoteAddr string}``)
and ``rwc`` its socket (checked as above, against ``remoteAddr``).

HTTP/2 upstream. A request the Transport sends over HTTP/2 (an ``https`` upstream that offered
``h2``) waits in the HTTP/2 client connection's round trip instead (``(*http2ClientConn).RoundTrip``
in Go 1.19-1.21, ``roundTrip`` later; ``net/http/internal/http2.(*ClientConn).roundTrip`` from Go
1.27; ``golang.org/x/net/http2.(*ClientConn).internalRoundTrip`` in programs that use that module
directly, as Caddy does), whose receiver starts with ``t *Transport; tconn net.Conn`` and then, at 24 or at 32 (Go
1.21 has a ``bool`` between, which never reads as a pointer: both are tried), ``tlsState
*tls.ConnectionState``. A candidate word is believed to be that connection only if its
``tlsState`` reads as a finished handshake that negotiated ``h2`` (``ConnectionState``: ``Version``
0x0301-0x0304 at 0, ``HandshakeComplete`` at 2, ``NegotiatedProtocol`` at 8, ``ServerName`` at 32,
the same in 1.19-1.27). It holds no dialled address: the upstream is the TLS server name (what the
request's URL named, empty for an IP) with the port of the socket under ``tconn`` (a
``*tls.Conn``), else that socket's peer address (:mod:`lgf.golang.peercapture`). Cleartext HTTP/2
(h2c) is not read.

Layout: the offsets below, the same in Go 1.19.8, 1.21.13, 1.25.5 and 1.27.3 (sources and DWARF:
tests/test_peer.py checks them against every toolchain the tests build); a Go outside 1.19-1.27
is read from its DWARF and refused without it.

Cost: one read of two frames (about 1 KiB), one scattered read of 96 bytes per candidate word
and a few small reads for the strings: well under a millisecond, once per stall, while parked.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from .goframes import frame_of, frame_words, pointer_candidates, read_each
from .golayout import dwarf_fields
from .runtime_reader import Unreadable

ROUND_TRIP = ("net/http.(*persistConn).roundTrip",)
ROUND_TRIP_H2 = tuple(f"{pkg}.(*{conn}).{fn}" for pkg, conn in (
    ("net/http", "http2ClientConn"), ("net/http/internal/http2", "ClientConn"), ("golang.org/x/net/http2", "ClientConn"))
    for fn in ("RoundTrip", "roundTrip", "internalRoundTrip"))
"""net/http's own HTTP/2 client (bundled, then an internal package from Go 1.27) and the
``golang.org/x/net/http2`` module it comes from, which programs use directly (Caddy does)."""
H2_TLS_STATE = (24, 32)
"""Where ``ClientConn.tlsState`` may be (module docstring)."""
TLS_VERSIONS = range(0x0301, 0x0305)
LAYOUT = {"persistConn.t": 16, "persistConn.cacheKey": 24, "persistConn.conn": 80,
          "connectMethodKey.proxy": 0, "connectMethodKey.scheme": 16, "connectMethodKey.addr": 32,
          "conn.rwc": 16, "conn.remoteAddr": 32, "netFD.pfd": 0, "FD.Sysfd": 16}
"""Byte offsets in Go 1.19 and 1.21-1.27 (net/http/transport.go, server.go, net/fd_posix.go,
internal/poll/fd_unix.go; DWARF of 1.19.8, 1.21.13, 1.25.5, 1.27.3; lgf refuses Go 1.20)."""
LAYOUT_GO = ((1, 19), (1, 27))
_DWARF = {"persistConn.t": ("net/http.persistConn", "t"), "persistConn.cacheKey": ("net/http.persistConn", "cacheKey"),
          "persistConn.conn": ("net/http.persistConn", "conn"),
          "connectMethodKey.proxy": ("net/http.connectMethodKey", "proxy"),
          "connectMethodKey.scheme": ("net/http.connectMethodKey", "scheme"),
          "connectMethodKey.addr": ("net/http.connectMethodKey", "addr"),
          "conn.rwc": ("net/http.conn", "rwc"), "conn.remoteAddr": ("net/http.conn", "remoteAddr"),
          "netFD.pfd": ("net.netFD", "pfd"), "FD.Sysfd": ("internal/poll.FD", "Sysfd")}
MAX_ADDR = 262
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.%\w-]+\]|[A-Za-z0-9._-]+):[0-9]{1,5}")


@dataclass(frozen=True)
class Upstream:
    """The connection a parked HTTP client round trip waits on."""

    addr: str
    """``host:port`` the Transport dialled (``cacheKey.addr``)."""
    scheme: str
    proxy: str
    """The proxy's URL when the request went through one ("" otherwise)."""
    persist_conn: int
    conn_data: int
    """The ``net.Conn``'s data pointer (for :func:`conn_fds`)."""
    protocol: str = "http/1.1"
    """``h2`` for a round trip over HTTP/2, whose ``addr`` is the TLS server name only (no port;
    "" for an IP): its port comes from the socket."""


def offsets_of(binary) -> dict[str, int]:
    """``LAYOUT`` for ``binary``: the table for Go 1.19-1.27 (lgf refuses 1.20), else DWARF;
    raises Unreadable."""
    return binary.memo("httpclient.offsets", lambda: _offsets_of(binary))


def _offsets_of(binary) -> dict[str, int]:
    if LAYOUT_GO[0] <= tuple(binary.version_tuple[:2]) <= LAYOUT_GO[1]:
        return dict(LAYOUT)
    got = dwarf_offsets(binary)
    if not got:
        raise Unreadable("unknown_layout")
    return got


def dwarf_offsets(binary) -> dict[str, int]:
    """What the binary's DWARF says of ``LAYOUT``'s fields ({} without DWARF or when one lacks)."""
    return dwarf_fields(binary, _DWARF)


def is_host_port(s: str) -> bool:
    return bool(_HOST_PORT.fullmatch(s))


def read_string(reader, ptr: int, length: int, limit: int = MAX_ADDR) -> str:
    """A Go string's bytes as text; raises Unreadable (``not_a_string``) when it cannot be one."""
    if length == 0:
        return ""
    if not ptr or not 0 < length <= limit:
        raise Unreadable("not_a_string")
    try:
        text = reader.read(ptr, length).decode("ascii")
    except UnicodeDecodeError:
        raise Unreadable("not_a_string") from None
    if not text.isprintable():
        raise Unreadable("not_a_string")
    return text


def find_upstream(reader, binary, pcs: list[int], bounds: list[tuple[int, int]],
                  stack: tuple[int, int]) -> Upstream:
    """The upstream the parked round trip waits on (module docstring). Raises :class:`Unreadable`
    (``no_round_trip``, ``no_persist_conn``, ``ambiguous``, a read's reason, ``unknown_layout``)."""
    i = frame_of(binary, reader.bias, pcs, ROUND_TRIP)
    if i is None:
        j = frame_of(binary, reader.bias, pcs, ROUND_TRIP_H2)
        if j is None:
            raise Unreadable("no_round_trip")
        return _find_h2_upstream(reader, frame_words(reader, bounds, j, j + 1), stack)
    off = offsets_of(binary)
    key = off["persistConn.cacheKey"]
    at_t, at_conn = off["persistConn.t"], off["persistConn.conn"]
    at_proxy, at_scheme, at_addr = (key + off[f"connectMethodKey.{f}"] for f in ("proxy", "scheme", "addr"))
    size = max(at_t, at_conn, at_proxy, at_scheme, at_addr) + 16
    cands = pointer_candidates(frame_words(reader, bounds, i, i + 1), stack)
    found: dict[int, Upstream] = {}
    for p, raw in zip(cands, read_each(reader, cands, size), strict=True):
        if not raw:
            continue
        (t,) = struct.unpack_from("<Q", raw, at_t)
        s_ptr, s_len = struct.unpack_from("<QQ", raw, at_scheme)
        a_ptr, a_len = struct.unpack_from("<QQ", raw, at_addr)
        x_ptr, x_len = struct.unpack_from("<QQ", raw, at_proxy)
        itab, data = struct.unpack_from("<QQ", raw, at_conn)
        if not t or not itab or not data or s_len not in (4, 5) or not 3 <= a_len <= MAX_ADDR:
            continue
        try:
            scheme = read_string(reader, s_ptr, s_len)
            addr = read_string(reader, a_ptr, a_len)
            proxy = read_string(reader, x_ptr, x_len, 2048)
        except Unreadable:
            continue
        if scheme in ("http", "https") and is_host_port(addr):
            found[p] = Upstream(addr, scheme, proxy, p, data)
    if not found:
        raise Unreadable("no_persist_conn")
    if len(found) > 1:
        raise Unreadable("ambiguous")
    return next(iter(found.values()))


def _find_h2_upstream(reader, words: list[int], stack: tuple[int, int]) -> Upstream:
    """The HTTP/2 client connection among the round trip's frame words (module docstring)."""
    cands = pointer_candidates(words, stack)
    found: dict[int, Upstream] = {}
    for p, raw in zip(cands, read_each(reader, cands, max(H2_TLS_STATE) + 8), strict=True):
        if not raw:
            continue
        t, itab, data = struct.unpack_from("<QQQ", raw)
        if not t or not itab or not data:
            continue
        for at in H2_TLS_STATE:
            (state,) = struct.unpack_from("<Q", raw, at)
            name = _h2_server_name(reader, state) if state and not state % 8 else None
            if name is not None:
                found[p] = Upstream(name, "https", "", p, data, protocol="h2")
                break
    if not found:
        raise Unreadable("no_persist_conn")
    if len(found) > 1:
        raise Unreadable("ambiguous")
    return next(iter(found.values()))


def _h2_server_name(reader, state: int) -> str | None:
    """The server name of the ``tls.ConnectionState`` at ``state``, or None unless it is a
    finished handshake that negotiated ``h2``."""
    try:
        raw = reader.read(state, 48)
    except Unreadable:
        return None
    version, complete = struct.unpack_from("<HB", raw)
    p_ptr, p_len = struct.unpack_from("<QQ", raw, 8)
    n_ptr, n_len = struct.unpack_from("<QQ", raw, 32)
    if version not in TLS_VERSIONS or complete != 1 or p_len != 2:
        return None
    try:
        if read_string(reader, p_ptr, p_len) != "h2":
            return None
        return read_string(reader, n_ptr, n_len)
    except Unreadable:
        return None


def tls_conn_fd(reader, binary, data: int) -> int | None:
    """The descriptor under the ``*tls.Conn`` ``data`` (its first field: the ``net.Conn`` it wraps,
    a ``*net.TCPConn``), or None."""
    off = offsets_of(binary)
    try:
        inner = reader.u64(data + 8)  # tls.Conn{conn net.Conn}: the interface's data word
        netfd = reader.u64(inner) if inner else 0
        fd = reader.u64(netfd + off["netFD.pfd"] + off["FD.Sysfd"]) if netfd else -1
    except Unreadable:
        return None
    return fd if 0 <= fd < 1 << 24 else None


def conn_fds(reader, binary, data: int) -> list[int]:
    """Descriptors a ``net.Conn`` whose data pointer is ``data`` may hold: as a ``*net.TCPConn``
    (or any ``net.conn``), and as a ``*tls.Conn`` over one. The caller keeps the one whose socket
    matches what it expects (module docstring); each is a plausible fd or left out."""
    off = offsets_of(binary)
    at_fd = off["netFD.pfd"] + off["FD.Sysfd"]
    out: list[int] = []
    try:
        netfd = reader.u64(data)  # conn.fd
        if netfd:
            out.append(reader.u64(netfd + at_fd))
    except Unreadable:
        pass
    out = [fd for fd in out if 0 <= fd < 1 << 24]
    tls_fd = tls_conn_fd(reader, binary, data)
    return out if tls_fd is None else [*out, tls_fd]


@dataclass(frozen=True)
class Caller:
    """The client a request-serving goroutine serves."""

    addr: str
    """``ip:port`` of the client (``conn.remoteAddr``)."""
    conn_data: int
    """The server connection's ``net.Conn`` data pointer (``rwc``)."""


def find_caller(reader, binary, response: int) -> Caller:
    """The client of the server connection whose ``*http.response`` is ``response`` (found by
    :func:`lgf.golang.httpserve.find_request`); raises :class:`Unreadable` (``not_a_conn``)."""
    off = offsets_of(binary)
    conn = reader.u64(response)  # response.conn, validated live by httpserve
    if not conn:
        raise Unreadable("not_a_conn")
    raw = reader.read(conn + off["conn.rwc"], 16)
    _itab, data = struct.unpack("<QQ", raw)
    r_ptr, r_len = struct.unpack("<QQ", reader.read(conn + off["conn.remoteAddr"], 16))
    addr = read_string(reader, r_ptr, r_len)
    if not data or not is_host_port(addr):
        raise Unreadable("not_a_conn")
    return Caller(addr, data)
