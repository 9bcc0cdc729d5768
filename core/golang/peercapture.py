"""What a stalled goroutine waited on, read while it is still parked: the connection of an
"IO wait", the upstream of an HTTP client round trip, and the caller of the request it serves.

Why while parked: the objects that say it (the ``pollDesc`` whose ``rg`` holds the goroutine,
the ``persistConn`` in ``roundTrip``'s frame, the server ``conn`` behind the ``*response``) are
found in the goroutine's own frames (:mod:`lgf.golang.pollwait`, :mod:`lgf.golang.httpclient`),
which are rewritten as soon as it runs; and the descriptor they name is usually closed once the
request is done. So the goroutine sampler's park judge (``lgf.sources.uprobe.parkjudge``), which
walks a stall's stack while the goroutine is parked, calls :meth:`PeerCapture.capture` right
after it found the request, then checks the goroutine is still in the same park, and only then
:meth:`PeerCapture.keep`\\ s what was read, keyed by ``(pid, goid, start_ns)``: the stall event
the sampler reports when the park ends has that key (a goroutine tier that took the park over at
its hand-off reports it with an earlier start: matched by span), and the ``peer`` enricher
(``lgf.plugins.peer``) :meth:`PeerCapture.take`\\ s it, names the processes at the other ends and
puts it on the event.

The descriptor is turned into addresses at once (:func:`lgf.golang.netpeer.describe_fd`: its
socket may be gone when the event is enriched); who holds the other end is left to the enricher
(reading every process's descriptors is too dear for the sampler's thread).

Off until the ``peer`` enricher switches it on (a config without it pays nothing). Parks the
sampler never judged (those the armed goroutine tier sees begin and end) carry nothing from here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from .httpclient import conn_fds, find_caller, find_upstream, tls_conn_fd
from .netpeer import describe_fd
from .pollwait import find_poll_wait
from .runtime_reader import Unreadable

IO_WAIT = "IO wait"
MAX_KEPT = 4096
"""Captures kept for events not yet enriched (oldest dropped first)."""


def _socket_fields(sock) -> dict:
    return {"local": sock.local, "peer": sock.peer, "inode": sock.inode}


def _port(addr: str) -> str:
    return addr.rsplit(":", 1)[-1]


class PeerCapture:
    """One per host (``ctx.services.peer_capture``); see the module docstring."""

    def __init__(self) -> None:
        self.enabled = False
        self._kept: OrderedDict[tuple[int, int, int], dict] = OrderedDict()
        self._lock = threading.Lock()

    def enable(self) -> None:
        """Called by the ``peer`` enricher when it is configured."""
        self.enabled = True

    def disable(self) -> None:
        self.enabled = False

    def capture(self, reader, binary, g: int, wait_reason: str, pcs: list[int], frames: list[tuple[int, int]],
                stack: tuple[int, int], response: int = 0, count=None) -> dict:
        """What parked goroutine ``g`` waits on, as event fields (``waited_on``, ``caller``; {}
        when nothing is found). ``response``: the ``*http.response`` of the request it serves
        (:mod:`lgf.golang.httpserve`), 0 if none. ``count(value, reason)`` is told why a value
        could not be read."""
        out: dict = {}
        pid = reader.pid
        try:
            up = find_upstream(reader, binary, pcs, frames, stack)
        except Unreadable as exc:
            if str(exc) != "no_round_trip" and count:
                count("upstream", str(exc))
        else:
            waited = self._upstream(pid, reader, binary, up)
            if "peer" not in waited and count:
                count("upstream_socket", "not_found")
            if waited["addr"]:
                out["waited_on"] = waited
        if wait_reason == IO_WAIT and "waited_on" not in out:
            try:
                pw = find_poll_wait(reader, binary, g, pcs, frames, stack)
            except Unreadable as exc:
                if count:
                    count("poll_fd", str(exc))
            else:
                sock = describe_fd(pid, pw.fd)
                waited = {"kind": sock.kind if sock.kind in ("tcp", "unix") else "fd", "fd": pw.fd,
                          "mode": "read" if pw.mode == "r" else "write"}
                if sock.kind == "tcp":
                    waited.update(_socket_fields(sock))
                    waited["addr"] = sock.peer
                out["waited_on"] = waited
        if response:
            try:
                caller = find_caller(reader, binary, response)
            except Unreadable as exc:
                if count:
                    count("caller", str(exc))
            else:
                got = {"addr": caller.addr}
                sock = self._socket(pid, conn_fds(reader, binary, caller.conn_data), lambda s: s.peer == caller.addr)
                if sock is not None:
                    got.update(_socket_fields(sock))
                out["caller"] = got
        return out

    def _upstream(self, pid: int, reader, binary, up) -> dict:
        """``waited_on`` of a parked round trip: over HTTP/1.x the dialled address and the socket
        whose peer port is its port; over HTTP/2 the socket under the TLS connection, whose port
        completes the server name (its peer address stands for an IP's)."""
        waited = {"kind": "http", "addr": up.addr, "scheme": up.scheme}
        if up.proxy:
            waited["proxy"] = up.proxy
        if up.protocol == "h2":
            waited["protocol"] = "h2"
            fd = tls_conn_fd(reader, binary, up.conn_data)
            sock = self._socket(pid, [] if fd is None else [fd], lambda s: True)
            if sock is not None:
                waited["addr"] = f"{up.addr}:{_port(sock.peer)}" if up.addr else sock.peer
        else:
            sock = self._socket(pid, conn_fds(reader, binary, up.conn_data), lambda s: _port(s.peer) == _port(up.addr))
        if sock is not None:
            waited.update(_socket_fields(sock))
        return waited

    @staticmethod
    def _socket(pid: int, fds: list[int], matches):
        for fd in fds:
            sock = describe_fd(pid, fd)
            if sock.kind == "tcp" and matches(sock):
                return sock
        return None

    def keep(self, pid: int, goid: int, seen_ns: int, facts: dict) -> None:
        """Keep ``facts`` for the park of goroutine ``goid`` the sampler first saw at ``seen_ns``
        (the start of the stall event it reports)."""
        if not facts:
            return
        with self._lock:
            self._kept[(pid, goid, seen_ns)] = facts
            while len(self._kept) > MAX_KEPT:
                self._kept.popitem(last=False)

    def take(self, pid: int, goid: int, start_ns: int, end_ns: int) -> dict | None:
        """What was kept for the stall of ``goid`` over [``start_ns``, ``end_ns``] (and forget
        it), None if nothing was: a park seen by the sampler inside that span is that stall's,
        whichever tier reports it (the sampler's report starts where it first saw the park; the
        goroutine tier's, taking over a park at the hand-off, starts earlier)."""
        with self._lock:
            got = self._kept.pop((pid, goid, start_ns), None)
            if got is not None:
                return got
            for key in [k for k in self._kept if k[0] == pid and k[1] == goid and start_ns <= k[2] <= end_ns]:
                return self._kept.pop(key)
        return None
