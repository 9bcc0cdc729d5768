"""The on-disk format of Go's pclntab (Go 1.18+): its constants, its error, its pc-value tables.

Split from :mod:`lgf.golang.pclntab` along the line between bytes and meaning: this module knows
how the linker encodes things (magic numbers, pcdata and funcdata slots, the varint-delta pc-value
tables) and nothing of ELF or of lookups; ``pclntab`` finds the table in a binary and answers PCs.

A pc-value table maps PC ranges of one function to values (file number, line, inline-tree
index): pairs of varints, a zig-zag value delta then a PC delta in units of the ``quantum``, ended
by a zero value delta. Every read is bounds-checked against the pctab and every walk is capped,
since the table comes from an untrusted file; damage raises :class:`PclntabError`.

The fast path is native: :data:`native` is the C module ``lgf.golang._pcvalue`` (built by the
package's own build, ``setup.py``), which decodes every function's tables of a binary in one call
into a flat index (see ``_pcvalue.c``) with the same semantics as the two functions here.
:func:`native_or_warn` tells a :class:`~lgf.golang.pclntab.Pclntab` whether it may use it, and
logs once, as a warning, when the module is missing and the pure-Python walk below is used.

Cost: :func:`value_at` walks a table only up to the PC asked for (as the Go runtime does);
:func:`decode_table` walks it to the end of the function once so that later PCs are a bisect.
Both copy the bytes out of the map a chunk at a time (indexing ``bytes`` is several times faster
than indexing an mmap, and most tables end within the first chunk). The two share their varint
loop by copy, on purpose: one generator behind both was tried and made the symbolizer's cold
path 25 % slower (63k -> 47k PCs/s on the Go compiler), which is the path a new stall pays.
"""

from __future__ import annotations

import functools
import logging

from .goelf import ElfError

try:
    from . import _pcvalue as native
    NATIVE_MISSING = ""
except ImportError as _exc:  # a source tree not built (`pip install -e .` builds it)
    native = None
    NATIVE_MISSING = str(_exc)

log = logging.getLogger(__name__)

MAGIC_118 = 0xFFFFFFF0
"""Go 1.18 and 1.19."""
MAGIC_120 = 0xFFFFFFF1
"""Go 1.20 and later (checked up to 1.27)."""
OLD_MAGICS = {0xFFFFFFFB: "Go 1.2-1.15", 0xFFFFFFFA: "Go 1.16-1.17"}

PCDATA_INLTREEINDEX = 2
FUNCDATA_INLTREE = 3
NO_FUNCDATA = 0xFFFFFFFF
FUNCFLAG_ASM = 4
"""abi.FuncFlagAsm: the function is written in assembly (stable since Go 1.18)."""

_MAX_VARINT_BYTES = 5
_MAX_TABLE_STEPS = 1 << 20
"""A real pc-value table has at most one step per instruction; this caps hostile ones."""


class PclntabError(ElfError):
    """The file is not a Go binary we can read, or its pclntab is damaged. Says which and why.

    A ``ValueError``, and an :class:`~lgf.golang.goelf.ElfError` (the file is unreadable as
    far as lgf is concerned), so code that handles either kind of damage catches both at once.
    """


@functools.cache
def native_or_warn() -> bool:
    """True when the C decoder is importable; else logs once why not and that lookups will be slow."""
    if native is None:
        log.warning("the C pc-value decoder lgf.golang._pcvalue is missing (%s): symbolizing falls back "
                    "to pure Python, about 15x slower; reinstall lgf (`make setup`) to build it", NATIVE_MISSING)
    return native is not None


def decode_table(buf, pctab: int, limit: int, off: int, entry: int, end: int, quantum: int
                 ) -> tuple[list[int], list[int]]:
    """Decode the pc-value table at ``off`` in the pctab ``buf[pctab:limit]``, as debug/gosym walks it.

    Stops at the table's terminator or once the ranges cover the function (later ranges are
    never consulted for PCs inside it). Returns (ends, vals): ``vals[i]`` holds below ``ends[i]``.
    Reads chunk by chunk, as :func:`value_at` does.
    """
    start = pctab + off
    if not pctab <= start < limit:
        raise PclntabError(f"pc-value table offset {off:#x} outside pctab: corrupt pclntab")
    chunk = 1024
    data = buf[start:min(limit, start + chunk)]
    n = len(data)
    p = 0
    ends: list[int] = []
    vals: list[int] = []
    val, pc, first = -1, entry, True
    for _ in range(_MAX_TABLE_STEPS):
        if p + 2 * _MAX_VARINT_BYTES > n and n < limit - start:
            data = buf[start + p:min(limit, start + p + chunk)]
            start += p
            n, p = len(data), 0
            chunk *= 2
        if p >= n:
            break
        b = data[p]
        p += 1
        if b < 0x80:
            uv = b
        else:
            uv, shift = b & 0x7F, 7
            while True:
                if p >= n or shift >= 7 * _MAX_VARINT_BYTES:
                    raise PclntabError("pc-value table runs off its table: corrupt pclntab")
                b = data[p]
                p += 1
                uv |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    break
            uv &= 0xFFFFFFFF
        if uv == 0 and not first:
            return ends, vals
        first = False
        val += -(uv >> 1) - 1 if uv & 1 else uv >> 1
        if p >= n:
            break
        b = data[p]
        p += 1
        if b < 0x80:
            pd = b
        else:
            pd, shift = b & 0x7F, 7
            while True:
                if p >= n or shift >= 7 * _MAX_VARINT_BYTES:
                    raise PclntabError("pc-value table runs off its table: corrupt pclntab")
                b = data[p]
                p += 1
                pd |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    break
            pd &= 0xFFFFFFFF
        pc += pd * quantum
        ends.append(pc)
        vals.append(val)
        if pc >= end:
            return ends, vals
    raise PclntabError("pc-value table runs off its table: corrupt pclntab")



def value_at(buf, pctab: int, limit: int, off: int, entry: int, target: int, quantum: int) -> int:
    """The value for PC ``target`` of the table at ``off`` in the pctab, walking only up to it.

    debug/gosym's pcvalue, with every read checked: -1 when the table ends first. The bytes
    are copied out of the map a chunk at a time (indexing ``bytes`` is several times faster
    than indexing an mmap, and most tables end within the first chunk).
    """
    start = pctab + off
    if not pctab <= start < limit:
        raise PclntabError(f"pc-value table offset {off:#x} outside pctab: corrupt pclntab")
    chunk = 256
    data = buf[start:min(limit, start + chunk)]
    n = len(data)
    p = 0
    val, pc, first = -1, entry, True
    for _ in range(_MAX_TABLE_STEPS):
        if p + 2 * _MAX_VARINT_BYTES > n and n < limit - start:
            data = buf[start + p:min(limit, start + p + chunk)]  # refill: keep the rest
            start += p
            n, p = len(data), 0
            chunk *= 2
        if p >= n:
            break
        b = data[p]
        p += 1
        if b < 0x80:
            uv = b
        else:
            uv, shift = b & 0x7F, 7
            while True:
                if p >= n or shift >= 7 * _MAX_VARINT_BYTES:
                    raise PclntabError("pc-value table runs off its table: corrupt pclntab")
                b = data[p]
                p += 1
                uv |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    break
            uv &= 0xFFFFFFFF
        if uv == 0 and not first:
            return -1
        first = False
        val += -(uv >> 1) - 1 if uv & 1 else uv >> 1
        if p >= n:
            break
        b = data[p]
        p += 1
        if b < 0x80:
            pd = b
        else:
            pd, shift = b & 0x7F, 7
            while True:
                if p >= n or shift >= 7 * _MAX_VARINT_BYTES:
                    raise PclntabError("pc-value table runs off its table: corrupt pclntab")
                b = data[p]
                p += 1
                pd |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    break
            pd &= 0xFFFFFFFF
        pc += pd * quantum
        if target < pc:
            return val
    raise PclntabError("pc-value table runs off its table: corrupt pclntab")

