"""Read a live Go process's runtime globals from outside: what the gc_phase, poller and sched
enrichers share.

Addresses come from the target binary (``lgf.golang.gobinary``: ``symbol_addr`` for globals such
as ``runtime.gcphase``, ``field_offset`` for struct fields such as ``schedt.npidle``, ``load_bias``
for PIE); bytes come from ``process_vm_readv(2)`` (one syscall for many scattered reads), falling
back to ``/proc/PID/mem``. Both need the same permission as ptrace (root, or CAP_SYS_PTRACE).

Nothing is guessed: a value whose symbol or offset is unknown (a stripped binary without a
layout table, a field a Go version does not have) raises :class:`Unreadable` with a short reason
the enrichers count (``lgf_enrich_missing_total{enricher, value, reason}``) and leave the value out.
A reader belongs to one process *image*: if the pid now runs another binary than the event's
(``build_id`` differs, e.g. replaying an old recording), it refuses with ``not_same_process``.

Cost: opening a reader parses the binary once (cached by ``open_binary``, shared by every process
running the same file); each read is one syscall.
"""

from __future__ import annotations

import ctypes
import os
import struct
import threading
import time
from array import array
from collections import deque

from lgf.components import member
from lgf.errors import TargetRefused

IOV_MAX = 1024


class Unreadable(Exception):
    """A value cannot be read; ``str(exc)`` is the short reason counted in stats."""


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_libc = ctypes.CDLL(None, use_errno=True)
_vm_readv = getattr(_libc, "process_vm_readv", None)
if _vm_readv is not None:
    _vm_readv.restype = ctypes.c_ssize_t
    _vm_readv.argtypes = [ctypes.c_int, ctypes.POINTER(_Iovec), ctypes.c_ulong,
                          ctypes.POINTER(_Iovec), ctypes.c_ulong, ctypes.c_ulong]


class RuntimeReader:
    """Typed reads of one process's Go runtime state."""

    def __init__(self, pid: int, build_id: str = ""):
        self.pid = pid
        try:
            from lgf.golang.gobinary import open_binary
        except ImportError:
            raise Unreadable("no_gobinary") from None
        try:
            self.binary = open_binary(f"/proc/{pid}/exe")
            self.bias = self.binary.load_bias(pid)
        except TargetRefused as exc:
            raise Unreadable("process_gone" if not os.path.exists(f"/proc/{pid}") else "not_go") from exc
        if build_id and build_id not in (self.binary.build_id, self.binary.gnu_build_id):
            raise Unreadable("not_same_process")
        self._mem_fd: int | None = None
        self._lock = threading.Lock()
        self.cache: dict = {}
        """What other modules keep about this process with its reader (e.g. ``lgf.golang.gtable``'s
        table of its goroutines): made once, gone with the reader."""

    # -- addresses --------------------------------------------------------------------------

    def addr(self, symbol: str) -> int:
        a = self.binary.symbol_addr(symbol)
        if a is None:
            raise Unreadable("no_symbol")
        return a + self.bias

    def offset(self, struct_name: str, field: str) -> int:
        try:
            return self.binary.field_offset(struct_name, field)
        except TargetRefused:
            raise Unreadable("no_offset") from None

    # -- bytes ------------------------------------------------------------------------------

    def read(self, addr: int, size: int) -> bytes:
        return self.read_many([addr], size)[0]

    def read_many(self, addrs: list[int], size: int) -> list[bytes]:
        """``size`` bytes at each address; one ``process_vm_readv`` per 1024 addresses."""
        raw = self.read_scattered(addrs, size)
        return [raw[j:j + size] for j in range(0, len(raw), size)]

    def read_scattered(self, addrs: list[int], size: int | list[int]) -> bytes:
        """``size`` bytes (or ``size[i]`` bytes) at each address, back to back in one buffer.

        The remote side is an iovec per address (built as one array of u64 pairs, not 1024
        ctypes objects); the local side is a single iovec over the whole buffer, which the
        kernel fills in order.
        """
        sizes = list(size) if isinstance(size, list) else [size] * len(addrs)
        if _vm_readv is None:
            return b"".join(self._pread(a, n) for a, n in zip(addrs, sizes, strict=True))
        parts: list[bytes] = []
        for i in range(0, len(addrs), IOV_MAX):
            chunk, lens = addrs[i:i + IOV_MAX], sizes[i:i + IOV_MAX]
            total = sum(lens)
            pairs = array("Q", bytes(16 * len(chunk)))
            pairs[0::2] = array("Q", chunk)
            pairs[1::2] = array("Q", lens)
            remote = (_Iovec * len(chunk)).from_buffer(pairs)
            buf = ctypes.create_string_buffer(total)
            local = _Iovec(ctypes.addressof(buf), total)
            n = _vm_readv(self.pid, ctypes.byref(local), 1, remote, len(chunk), 0)
            if n != total:
                err = ctypes.get_errno()
                if n < 0 and err == 3:  # ESRCH
                    raise Unreadable("process_gone")
                if n < 0 and err == 38:  # ENOSYS (some sandboxes): the slow path
                    parts.extend(self._pread(a, m) for a, m in zip(chunk, lens, strict=True))
                    continue
                if n < 0 and err in (1, 13):  # EPERM, EACCES
                    raise Unreadable("permission")
                raise Unreadable("bad_address")
            parts.append(buf.raw)
        return b"".join(parts)

    def _pread(self, addr: int, size: int) -> bytes:
        with self._lock:
            try:
                if self._mem_fd is None:
                    self._mem_fd = os.open(f"/proc/{self.pid}/mem", os.O_RDONLY)
                data = os.pread(self._mem_fd, size, addr)
            except PermissionError:
                raise Unreadable("permission") from None
            except OSError:
                raise Unreadable("process_gone" if not os.path.exists(f"/proc/{self.pid}") else "bad_address") \
                    from None
        if len(data) != size:
            raise Unreadable("bad_address")
        return data

    def u32(self, addr: int) -> int:
        return struct.unpack("<I", self.read(addr, 4))[0]

    def i32(self, addr: int) -> int:
        return struct.unpack("<i", self.read(addr, 4))[0]

    def u64(self, addr: int) -> int:
        return struct.unpack("<Q", self.read(addr, 8))[0]

    def close(self) -> None:
        if self._mem_fd is not None:
            os.close(self._mem_fd)
            self._mem_fd = None


def read_iovecs(reader: RuntimeReader, local_pairs, remote_pairs, n: int, total: int) -> None:
    """One ``process_vm_readv`` of ``n`` (at most ``IOV_MAX``) remote ranges into ``n`` local
    ones: each ``*_pairs`` is a writable buffer of ``n`` (address, length) u64 pairs, ``total``
    the sum of the lengths. For :mod:`lgf.golang.gtable`, which reads whole pages straight into
    a buffer it reuses and builds the pairs with numpy."""
    if n == 0:
        return
    local, remote = (_Iovec * n).from_buffer(local_pairs), (_Iovec * n).from_buffer(remote_pairs)
    if _vm_readv is None:
        for lo, re in zip(local, remote, strict=True):
            ctypes.memmove(lo.base, reader._pread(re.base, re.len), re.len)
        return
    got = _vm_readv(reader.pid, local, n, remote, n, 0)
    if got != total:
        err = ctypes.get_errno()
        if got < 0 and err == 3:  # ESRCH
            raise Unreadable("process_gone")
        if got < 0 and err in (1, 13):  # EPERM, EACCES
            raise Unreadable("permission")
        raise Unreadable("bad_address")


class Readers:
    """One RuntimeReader per (pid, build_id), made on first use. A failure is remembered for
    ``retry_s`` so a process lgf cannot read does not cost a binary parse per event."""

    def __init__(self, max_processes: int = 4096, retry_s: float = 5.0):
        self._readers: dict[tuple[int, str], tuple[RuntimeReader | Unreadable, float]] = {}
        self.max_processes = max_processes
        self.retry_s = retry_s

    def get(self, pid: int, build_id: str = "") -> RuntimeReader:
        key = (pid, build_id)
        got, when = self._readers.get(key, (None, 0.0))
        now = time.monotonic()
        if got is None or (isinstance(got, Unreadable) and now - when > self.retry_s):
            try:
                got = RuntimeReader(pid, build_id)
            except Unreadable as exc:
                got = exc
            if key not in self._readers and len(self._readers) >= self.max_processes:
                self.forget(next(iter(self._readers))[0])
            self._readers[key] = (got, now)
        if isinstance(got, Unreadable):
            raise got
        return got

    def forget(self, pid: int) -> None:
        for key in [k for k in self._readers if k[0] == pid]:
            r, _ = self._readers.pop(key)
            if isinstance(r, RuntimeReader):
                r.close()

    def close(self) -> None:
        """Drop every reader."""
        for pid in {k[0] for k in list(self._readers)}:
            self.forget(pid)


class Samples:
    """Per-process history of cumulative counters, to tell what changed *during* a stall.

    ``before(pid, t)`` is the latest sample taken at or before ``t`` (monotonic ns): the counters'
    growth since then is an upper bound of what happened in the stall (it may include a little
    time before it). Bounded: ``per_process`` samples for at most ``max_processes`` processes.
    """

    def __init__(self, per_process: int = 64, max_processes: int = 4096):
        self._by_pid: dict[int, deque] = {}
        self.per_process, self.max_processes = per_process, max_processes

    def add(self, pid: int, t_ns: int, values: dict) -> None:
        hist = self._by_pid.get(pid)
        if hist is None:
            if len(self._by_pid) >= self.max_processes:
                self._by_pid.pop(next(iter(self._by_pid)))
            hist = self._by_pid[pid] = deque(maxlen=self.per_process)
        hist.append((t_ns, values))

    def before(self, pid: int, t_ns: int) -> dict | None:
        for t, values in reversed(self._by_pid.get(pid, ())):
            if t <= t_ns:
                return values
        return None


def read_lag_ns(event) -> int | None:
    """How long after the stall's end a value is read now (None if the event is not from this boot)."""
    if not event.end_ns:
        return None
    lag = time.monotonic_ns() - event.end_ns
    return lag if lag >= 0 else None


RUN_GAP = 4096
"""Goroutine structs closer than this are read as one range (reading the gap costs less than
another iovec)."""
RUN_MAX = 1 << 20


def allg_pointers(r: RuntimeReader, max_goroutines: int) -> list[int]:
    """Address of every goroutine struct in ``runtime.allgs`` (two reads: slice header, array)."""
    ptr, length = struct.unpack("<QQ", r.read(r.addr("runtime.allgs"), 16))
    if length > max_goroutines:
        raise Unreadable("too_many")
    if length == 0:
        return []
    return [g for g in struct.unpack(f"<{length}Q", r.read(ptr, 8 * length)) if g]


def read_g_fields(r: RuntimeReader, gs: list[int], fields: list[tuple[int, str]]) -> list[tuple]:
    """``(g, value, ...)`` for each goroutine address in ``gs`` (in address order), one value per
    ``(offset, struct format letter)`` in ``fields`` (given in offset order, not overlapping).

    Reads the span of each g from the first field to the end of the last, nearby gs coalesced
    into ranges, in one ``process_vm_readv`` per 1024 ranges.
    """
    if not gs:
        return []
    fmt, at = "<", fields[0][0]
    for off, letter in fields:
        if off < at:
            raise Unreadable("unexpected_layout")
        fmt += f"{off - at}x{letter}" if off > at else letter
        at = off + struct.calcsize("<" + letter)
    lo, span = fields[0][0], at - fields[0][0]
    record = struct.Struct(fmt)
    # The kernel pays per iovec (about 1 us each here), and g structs sit close together in a
    # few heap spans: read runs of nearby gs as one range each, then pick the records out.
    starts = sorted(g + lo for g in gs)
    runs: list[list[int]] = []
    for a in starts:
        if runs and a - runs[-1][1] <= RUN_GAP and a + span - runs[-1][0] <= RUN_MAX:
            runs[-1][1] = max(runs[-1][1], a + span)
        else:
            runs.append([a, a + span])
    raw = r.read_scattered([lo_ for lo_, _ in runs], [hi - lo_ for lo_, hi in runs])
    out, base, run = [], 0, 0
    for a in starts:
        while a >= runs[run][1]:
            base += runs[run][1] - runs[run][0]
            run += 1
        out.append((a - lo, *record.unpack_from(raw, base + a - runs[run][0])))
    return out


class RuntimeEnricher:
    """What gc_phase, poller and sched share: options, per-process readers, and the one counter
    for a value left out (``lgf_enrich_missing_total{enricher,value,reason}``)."""

    name = ""
    Options: type = type(None)

    def __init__(self, options, ctx):
        self.options = options or self.Options()
        self.ctx = ctx
        self.stats = getattr(ctx, "stats", None)
        self.readers = Readers()

    def _missing(self, value: str, reason: str) -> None:
        if self.stats is not None:
            self.stats.inc("lgf_enrich_missing_total", enricher=self.name, value=value, reason=reason)


def runtime_counters(sources, pid: int) -> dict:
    """``runtime_counters(pid)`` of the first running source that offers it ({} if none does)."""
    for src in sources or ():
        fn = member(src, "source", "runtime_counters")
        if fn is None:
            continue
        try:
            got = fn(pid)
        except Exception:  # a source's bug or a process gone between reads: no counters
            continue
        if got:
            return dict(got)
    return {}
