"""Where a Go binary keeps its pclntab, and the two addresses the table does not hold itself.

Why a module of its own: :class:`lgf.golang.pclntab.Pclntab` decodes the table; finding it is
another job, done once at open, on files that may be stripped of every section header and
symbol. Three things are found here:

- the table (:func:`locate`): the ``.gopclntab`` section, else (section headers stripped) a scan
  of the file for a pcHeader whose sub-table offsets are consistent;
- ``runtime.firstmoduledata`` (:func:`find_moduledata`), found by its first word, a pointer to the
  pcHeader: it gives the start of the text segment (Go 1.27 no longer stores it in the header)
  and ``gofunc``, the base of funcdata offsets, which the inline tree needs;
- whether a candidate ``gofunc`` is the real one (:func:`gofunc_plausible`): the first inline
  trees of the table must decode to names and call sites that make sense.

Untrusted input, as in :mod:`lgf.golang.pclntab`: every search has a cap and every problem is a
:class:`~lgf.golang.pclntab_format.PclntabError`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from .goelf import ElfImage
from .pclntab_format import FUNCDATA_INLTREE, MAGIC_118, MAGIC_120, OLD_MAGICS, PclntabError

# moduledata word indexes of `text` and `gofunc` (runtime/symtab.go); pcHeader is word 0.
_MODULEDATA_TEXT = 22
_MODULEDATA_GOFUNC_CANDIDATES = (40, 43, 38)
"""1.20-1.26 (covctrs added), 1.27 (typedesclen, itaboffset, itabsize added), 1.18-1.19."""


def locate(elf: ElfImage) -> tuple[int, int]:
    """(file offset of the pcHeader, file offset where the table must end)."""
    for name in (".gopclntab", ".data.rel.ro.gopclntab"):
        sec = elf.section(name)
        if sec is not None:
            if not sec.has_file_bytes:
                raise PclntabError(f"section {name} has no contents in the file")
            return sec.offset, sec.offset + sec.size  # in the file: ElfImage checked it at open
    return _scan_for_header(elf)


def _scan_for_header(elf: ElfImage) -> tuple[int, int]:
    """No section header names the table (section headers stripped): look for a valid header.

    A candidate is the magic, two zero bytes, a sane quantum and pointer size, and sub-table
    offsets that are increasing and inside the segment; the first such one wins.
    """
    buf = elf.data
    old = None
    for magic in (MAGIC_120, MAGIC_118, *OLD_MAGICS):
        needle = struct.pack("<I", magic) + b"\0\0"
        pos = 0
        for _ in range(10_000):
            pos = buf.find(needle, pos)
            if pos < 0:
                break
            if pos + 16 <= elf.size and buf[pos + 6] in (1, 2, 4) and buf[pos + 7] in (4, 8):
                if magic in OLD_MAGICS:
                    old = magic
                    break
                end = elf.segment_end_offset(pos)
                ps = buf[pos + 7]
                if pos + 8 + 8 * ps <= end:
                    fmt = "<8Q" if ps == 8 else "<8I"
                    w = struct.unpack_from(fmt, buf, pos + 8)
                    if 0 < w[0] < (end - pos) // 8 and 0 < w[3] < w[4] <= w[5] <= w[6] <= w[7] < end - pos:
                        return pos, end
            pos += 4
    if old is not None:
        raise PclntabError(f"pclntab format of {OLD_MAGICS[old]} (magic {old:#x}) is not supported: "
                           "lgf reads binaries built by Go 1.18 or later")
    raise PclntabError("no Go pclntab found (not a Go binary, or built by Go older than 1.2)")


def read_ptr(elf: ElfImage, vaddr: int, ptrsize: int) -> int | None:
    """A pointer-sized word at ``vaddr`` as the loader would leave it (PIE relocations applied)."""
    off = elf.vaddr_to_offset(vaddr, ptrsize)
    if off is None:
        return None
    v = struct.unpack_from("<Q" if ptrsize == 8 else "<I", elf.data, off)[0]
    if v == 0 and elf.is_pie:
        v = elf.relative_relocations().get(vaddr, 0)
    return v


def find_moduledata(tab) -> tuple[int | None, int | None, int | None]:
    """``(moduledata, text, gofunc)`` of the :class:`~lgf.golang.pclntab.Pclntab` ``tab`` (each
    None when not found): runtime.firstmoduledata is the word-aligned place in a writable
    segment whose first word points at the pcHeader and whose second at the function names.
    Works on stripped binaries."""
    elf, ps = tab.elf, tab.ptrsize
    hdr_vaddr = elf.offset_to_vaddr(tab._hdr)
    if hdr_vaddr is None:
        return None, None, None
    funcnames_vaddr = hdr_vaddr + (tab._funcnames - tab._hdr)
    for md in _moduledata_candidates(elf, hdr_vaddr, ps):
        if read_ptr(elf, md + ps, ps) != funcnames_vaddr:
            continue
        text = read_ptr(elf, md + _MODULEDATA_TEXT * ps, ps) or None
        for idx in (*_MODULEDATA_GOFUNC_CANDIDATES, *range(32, 50)):
            cand = read_ptr(elf, md + idx * ps, ps)
            if cand and gofunc_plausible(tab, cand):
                return md, text, cand
        return md, text, None
    return None, None, None


def _moduledata_candidates(elf: ElfImage, hdr_vaddr: int, ps: int) -> Iterator[int]:
    needle = hdr_vaddr.to_bytes(ps, "little")
    for seg in elf.segments:
        if not seg.writable:
            continue
        pos, end = seg.offset, seg.offset + seg.filesz
        for _ in range(64):
            pos = elf.data.find(needle, pos, end)
            if pos < 0:
                break
            if (pos - seg.offset) % ps == 0:
                yield seg.vaddr + (pos - seg.offset)
            pos += 1
    if elf.is_pie:
        yield from sorted(a for a, v in elf.relative_relocations().items() if v == hdr_vaddr)[:64]


def gofunc_plausible(tab, gofunc: int) -> bool:
    """True when ``gofunc`` makes the first inline trees of ``tab`` decode sensibly: each
    inlined call's name starts a name in the function-name table and its call site lies inside
    the function (16 of them, spread over the table)."""
    checked = 0
    for i in range(0, tab.nfunc, max(1, tab.nfunc // 400)):
        try:
            f = tab._func_header(i)
        except PclntabError:
            return False
        fd = tab._funcdata_off(f, FUNCDATA_INLTREE)
        if fd is None:
            continue
        off = tab.elf.vaddr_to_offset(gofunc + fd, tab._inl_size)
        if off is None:
            return False
        name_off, parent_pc = struct.unpack_from("<ii", tab.buf, off + tab._inl_name_at)
        size = tab._entry_off(i + 1) - f[0]
        p = tab._funcnames + name_off
        if not (tab._funcnames <= p < tab._funcnames_end and (name_off == 0 or tab.buf[p - 1] == 0)
                and 0 <= parent_pc < size):
            return False
        checked += 1
        if checked >= 16:
            break
    return checked > 0
