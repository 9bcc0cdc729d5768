"""A process's TCP connection, from its file descriptor: local and peer address, and which
process on this host is at the other end.

The two addresses: ``/proc/PID/fd/N`` links to ``socket:[INODE]``; lgf takes a copy of the
descriptor with ``pidfd_getfd(2)`` and asks the socket itself (``getsockname``, ``getpeername``),
then closes the copy (the target's descriptor and connection are untouched). Where the kernel
refuses that (before Linux 5.6, or without the ptrace permission), the process's own network
namespace's socket tables, ``/proc/PID/net/tcp`` and ``tcp6``, give the inode's addresses.

The other end (:func:`other_end`): in those tables, the other end of a connection between two
processes of one namespace is the row whose local and remote addresses are this one's swapped
(``mirror``), and the server on the peer's port is the ``LISTEN`` row bound to that port on the
peer's address or a wildcard (``listener``). Which process holds a socket inode is found by
reading ``/proc/*/fd`` links (:class:`SocketOwners`, cached: a holder is checked with one
``readlink`` the next time).

Nothing here reads Go memory: :mod:`lgf.golang.pollwait` and :mod:`lgf.golang.httpclient` give
the descriptor. Only TCP (v4 and v6) is described; a Unix socket or a pipe gives ``kind``
``"unix"`` / ``"other"`` and no addresses.

Cost, measured here (bench/bench_peer.py): :func:`describe_fd` one ``readlink``, one
``pidfd_getfd`` and two socket calls, tens of microseconds; :func:`other_end` reads the two
tables (about 1-3 ms on this loaded VM with a few dozen sockets, read in one ``read`` each: the
kernel walks its whole hash table), so it runs on the pipeline's thread, not the sampler's; an owner not in the cache costs one ``readlink`` per open descriptor on the host
(about 4 ms with 100 processes here), once per inode.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import threading
from dataclasses import dataclass

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = getattr(_libc, "syscall", None)
if _syscall is not None:
    _syscall.restype = ctypes.c_long
CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    """``setns(fd, CLONE_NEWNET)`` for this thread (``os.setns`` is Python 3.12+)."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))

TCP_LISTEN = 0x0A
PIDFD_GETFD = 438
"""``pidfd_getfd(2)`` on x86-64 and arm64 (the same number on every architecture since 5.6)."""
MAX_OWNERS_KEPT = 4096


@dataclass(frozen=True)
class TcpSocket:
    """One row of a TCP table."""

    inode: int
    local: str
    """``ip:port`` (IPv6 in brackets; a v4-mapped v6 address as plain v4)."""
    peer: str
    state: int


@dataclass(frozen=True)
class FdSocket:
    """What a descriptor of a process is, as far as lgf reads it."""

    fd: int
    kind: str
    """``"tcp"``, ``"unix"``, ``"other"`` (a pipe, a file...)."""
    inode: int = 0
    local: str = ""
    peer: str = ""


def socket_inode(pid: int, fd: int) -> int | None:
    """The socket inode descriptor ``fd`` of ``pid`` is, None when it is no socket (or gone)."""
    try:
        link = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None
    if link.startswith("socket:[") and link.endswith("]"):
        return int(link[8:-1])
    return None


def _addr(hex_addr: str) -> str:
    ip_hex, port_hex = hex_addr.split(":")
    port = int(port_hex, 16)
    raw = bytes.fromhex(ip_hex)
    if len(raw) == 4:
        return f"{socket.inet_ntop(socket.AF_INET, raw[::-1])}:{port}"
    # /proc prints each 32-bit word of an IPv6 address in host (little-endian) order.
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    if raw[:12] == b"\0" * 10 + b"\xff\xff":
        return f"{socket.inet_ntop(socket.AF_INET, raw[12:])}:{port}"
    return f"[{socket.inet_ntop(socket.AF_INET6, raw)}]:{port}"


def _read_proc(path: str) -> str:
    """A /proc file in as few ``read`` calls as it allows (Python's buffered reads of 8 KiB made
    the kernel restart its socket-table walk per read: 8 ms against 1 ms for the same table)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        parts = []
        while chunk := os.read(fd, 1 << 20):
            parts.append(chunk)
    finally:
        os.close(fd)
    return b"".join(parts).decode("ascii", "replace")


def tcp_table(pid: int) -> list[TcpSocket]:
    """Every TCP socket of ``pid``'s network namespace (v4 and v6); [] when it cannot be read."""
    out: list[TcpSocket] = []
    for name in ("tcp", "tcp6"):
        try:
            lines = _read_proc(f"/proc/{pid}/net/{name}").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) < 10:
                continue
            try:
                out.append(TcpSocket(int(f[9]), _addr(f[1]), _addr(f[2]), int(f[3], 16)))
            except ValueError:
                continue
    return out


def _port(addr: str) -> str:
    return addr.rsplit(":", 1)[1]


def _host(addr: str) -> str:
    return addr.rsplit(":", 1)[0]


def describe_fd(pid: int, fd: int) -> FdSocket:
    """What descriptor ``fd`` of ``pid`` is, its two addresses for a TCP socket (module
    docstring); ``kind`` ``"gone"`` when it is not open any more. Through ``pidfd_getfd`` when
    the kernel has it (Linux 5.6; microseconds), else the socket tables (milliseconds)."""
    try:
        link = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return FdSocket(fd, "gone")
    if not (link.startswith("socket:[") and link.endswith("]")):
        return FdSocket(fd, "other")
    inode = int(link[8:-1])
    got = _ask_socket(pid, fd, inode)
    if got is not None:
        return got
    row = next((s for s in tcp_table(pid) if s.inode == inode), None)
    if row is None:
        return FdSocket(fd, "unix", inode)
    return FdSocket(fd, "tcp", inode, row.local, row.peer)


def _text(addr) -> str:
    host, port = addr[0], addr[1]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _ask_socket(pid: int, fd: int, inode: int) -> FdSocket | None:
    """The socket's own answer (``getsockname``/``getpeername`` on a copy of the descriptor taken
    with ``pidfd_getfd``, closed at once: the target's descriptor is untouched); None when the
    kernel refuses (too old, no permission) or it is another socket by now."""
    if _syscall is None or not hasattr(os, "pidfd_open"):
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        mine = _syscall(PIDFD_GETFD, pidfd, fd, 0)
    finally:
        os.close(pidfd)
    if mine < 0:
        return None
    try:
        if os.fstat(mine).st_ino != inode:
            return None
        sock = socket.socket(fileno=mine)
    except OSError:
        os.close(mine)
        return None
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
            return FdSocket(fd, "unix" if sock.family == socket.AF_UNIX else "other", inode)
        try:
            peer = _text(sock.getpeername())
        except OSError:  # not connected (a listener, or reset meanwhile)
            peer = ""
        return FdSocket(fd, "tcp", inode, _text(sock.getsockname()), peer)
    finally:
        sock.close()


def other_end(pid: int, local: str, peer: str, table: list[TcpSocket] | None = None) -> tuple[int, int]:
    """``(mirror inode, listener inode)`` for a connection ``local`` -> ``peer`` of ``pid``: the
    other end's socket and the server listening on the peer's port, in ``pid``'s network
    namespace (0 for what is not there): the kernel's look-ups (:func:`peer_sockets`), else the
    tables; ``table``: :func:`tcp_table` of ``pid``, to use instead."""
    if table is None:
        got = peer_sockets(pid, local, peer)
        if got is not None:
            return got
        table = tcp_table(pid)
    mirror = next((s.inode for s in table if s.local == peer and s.peer == local and s.inode), 0)
    wild = ("0.0.0.0", "[::]")
    listener = next((s.inode for s in table if s.state == TCP_LISTEN and _port(s.local) == _port(peer)
                     and (_host(s.local) == _host(peer) or _host(s.local) in wild)), 0)
    return mirror, listener


NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
_NO_COOKIE = 0xFFFFFFFF


def _sockid(addr: str) -> tuple[int, bytes, int]:
    """``(family, 16 address bytes, port)`` of ``ip:port`` / ``[ip6]:port`` text."""
    host, port = addr.rsplit(":", 1)
    host = host.strip("[]")
    if ":" in host:
        return socket.AF_INET6, socket.inet_pton(socket.AF_INET6, host), int(port)
    return socket.AF_INET, socket.inet_pton(socket.AF_INET, host) + bytes(12), int(port)


def _v4_mapped(addr: str) -> str:
    host, port = addr.rsplit(":", 1)
    return f"[::ffff:{host}]:{port}"


def peer_sockets(pid: int, local: str, peer: str) -> tuple[int, int] | None:
    """``(mirror inode, listener inode)`` as :func:`other_end` gives them, from the kernel's own
    look-ups (``sock_diag(7)``: one hash look-up each, tens of microseconds, where the tables
    cost a walk of the whole hash table, 7 ms of CPU here); None when the namespace cannot be
    entered or the kernel has no ``inet_diag`` (the caller falls back to the tables)."""
    try:
        sock = _diag_socket(pid)
    except OSError:
        return None
    try:
        found = []
        host = local.rsplit(":", 1)[0]
        # The listener: a destination port no connection has (0), so only a listener matches.
        for src, dst in ((peer, local), (peer, f"{host}:0")):
            inode = _diag_lookup(sock, src, dst)
            if not inode and not src.startswith("["):  # an IPv4 peer may be a dual-stack socket
                inode = _diag_lookup(sock, _v4_mapped(src), _v4_mapped(dst))
            found.append(inode)
        return found[0], found[1]
    except (OSError, ValueError):
        return None
    finally:
        sock.close()


def _diag_socket(pid: int) -> socket.socket:
    """A ``NETLINK_SOCK_DIAG`` socket of ``pid``'s network namespace (made inside it when it is
    not lgf's: ``setns`` on this thread only, and back)."""
    mine, theirs = os.stat("/proc/self/ns/net").st_ino, os.stat(f"/proc/{pid}/ns/net").st_ino
    if mine == theirs:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    there = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        _setns(there)
        try:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
        finally:
            _setns(back)
    finally:
        os.close(there)
        os.close(back)


def _diag_lookup(sock: socket.socket, src: str, dst: str) -> int:
    """Inode of the TCP socket the kernel finds for source ``src``, destination ``dst`` (0: none)."""
    family, s_ip, s_port = _sockid(src)
    d_family, d_ip, d_port = _sockid(dst)
    if family != d_family:
        return 0
    sockid = struct.pack(">HH", s_port, d_port) + s_ip + d_ip + struct.pack("<III", 0, _NO_COOKIE, _NO_COOKIE)
    req = struct.pack("<BBBxI", family, socket.IPPROTO_TCP, 0, 0xFFFFFFFF) + sockid
    sock.settimeout(1.0)
    sock.send(struct.pack("<IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0) + req)
    data = sock.recv(8192)
    _length, kind = struct.unpack_from("<IH", data, 0)
    if kind == NLMSG_ERROR or len(data) < 16 + 72:  # struct inet_diag_msg: idiag_inode at 68
        return 0
    return struct.unpack_from("<I", data, 16 + 68)[0]


class SocketOwners:
    """Which process holds a socket inode: ``/proc/*/fd`` read once per inode, then remembered
    (and checked with one ``readlink``). Thread-safe; bounded (``MAX_OWNERS_KEPT``)."""

    def __init__(self, proc: str = "/proc"):
        self.proc = proc
        self._known: dict[int, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self.scans = 0
        """How many times every process's descriptors were read (for tests and the benchmark)."""

    def owner_of(self, inode: int) -> int | None:
        """The pid holding socket ``inode`` (the lowest, when several share it), None if none."""
        if not inode:
            return None
        with self._lock:
            known = self._known.get(inode)
        if known is not None:
            pid, fd = known
            try:
                if os.readlink(f"{self.proc}/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
            except OSError:
                pass
        found = self._scan(inode)
        if found is not None:
            with self._lock:
                if len(self._known) >= MAX_OWNERS_KEPT:
                    self._known.pop(next(iter(self._known)))
                self._known[inode] = found
        return found[0] if found else None

    def _scan(self, inode: int) -> tuple[int, int] | None:
        self.scans += 1
        want = f"socket:[{inode}]"
        try:
            pids = sorted(int(p) for p in os.listdir(self.proc) if p.isdigit())
        except OSError:
            return None
        for pid in pids:
            base = f"{self.proc}/{pid}/fd"
            try:
                fds = os.listdir(base)
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink(f"{base}/{fd}") == want:
                        return pid, int(fd)
                except OSError:
                    continue
        return None


def process_names(pid: int) -> tuple[str, str]:
    """``(comm, exe)`` of ``pid`` ("" for what cannot be read)."""
    try:
        with open(f"/proc/{pid}/comm") as fh:
            comm = fh.read().strip()
    except OSError:
        comm = ""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = ""
    return comm, exe


__all__ = ["FdSocket", "SocketOwners", "TcpSocket", "describe_fd", "process_names", "socket_inode", "tcp_table"]
