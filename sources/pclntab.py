"""Read a Go binary's own symbol table, the pclntab, straight from the ELF file.

Why our own reader: every Go binary carries the pclntab (function names, entry PCs, and
pc-value tables for file, line and inlining) even when stripped or built with ``-s -w``; the
runtime prints tracebacks from it. Reading it directly is the fast path (pyelftools on DWARF line
tables is slow, and DWARF is gone from stripped binaries) and gives exactly what
``go tool addr2line`` prints. Formats of Go 1.18-1.19 (magic 0xfffffff0) and Go 1.20+ (magic
0xfffffff1) are read; older ones are refused with a clear :class:`PclntabError`.

Untrusted input: lgf runs as root over other people's binaries, so every offset and length read
from the file is checked against the buffer before use, every loop has a cap, and any problem
becomes a :class:`PclntabError` (a ``ValueError``), never an ``IndexError`` or a hang.

Cost: opening maps the file and reads the ELF headers and the pclntab header (sub-millisecond);
the function table is cut into an entry-PC list on first lookup (a C-speed slice, about 1 ms
for 50,000 functions); the first PC of a function walks its pc-value tables only up to that PC
(as the runtime does), a second PC in the same function decodes them whole into a bounded
cache, so every further PC there costs a bisect.

Public API::

    tab = Pclntab.from_elf("/usr/bin/x")       # path, bytes or mmap
    tab.func_by_name("runtime.gopark")         # entry vaddr or None
    for name, entry, end in tab.funcs(): ...
    tab.addr2line(pc)                          # (name, file, line) exactly as go tool addr2line
    tab.frames(pc)                             # [(func, file, line, pc, inlined)], innermost first
"""

from __future__ import annotations

import mmap
import os
import struct
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterator
from typing import NamedTuple

MAGIC_118 = 0xFFFFFFF0
"""Go 1.18 and 1.19."""
MAGIC_120 = 0xFFFFFFF1
"""Go 1.20 and later (checked up to 1.27)."""
_OLD_MAGICS = {0xFFFFFFFB: "Go 1.2-1.15", 0xFFFFFFFA: "Go 1.16-1.17"}

_PCDATA_INLTREEINDEX = 2
_FUNCDATA_INLTREE = 3
_NO_FUNCDATA = 0xFFFFFFFF
_FUNCFLAG_ASM = 4
"""abi.FuncFlagAsm: the function is written in assembly (stable since Go 1.18)."""

_MAX_VARINT_BYTES = 5
_MAX_TABLE_STEPS = 1 << 20
"""A real pc-value table has at most one step per instruction; this caps hostile ones."""
_MAX_INLINE_DEPTH = 256
"""The Go compiler's inlining budget keeps real chains far below this."""
_MAX_NAME = 1 << 16
_FUNC_CACHE = 4096
"""Function records kept per binary; a decoded one holds its tables as int lists (1-5 KiB), so
at most ~20 MiB per binary, far less in practice (stall stacks hit few functions)."""

# moduledata word indexes of `text` and `gofunc` (runtime/symtab.go); pcHeader is word 0.
_MODULEDATA_TEXT = 22
_MODULEDATA_GOFUNC_CANDIDATES = (40, 43, 38)
"""1.20-1.26 (covctrs added), 1.27 (typedesclen, itaboffset, itabsize added), 1.18-1.19."""


class PclntabError(ValueError):
    """The file is not a Go binary we can read, or its pclntab is damaged. Says which and why."""


class Frame(NamedTuple):
    """One source frame; an inlined call gives several frames for one PC."""

    func: str
    file: str
    line: int
    pc: int
    inlined: bool


# --- a minimal, bounds-checked ELF view ---------------------------------------------------------

class _Section(NamedTuple):
    name: str
    type: int
    addr: int
    offset: int
    size: int


class _Segment(NamedTuple):
    type: int
    flags: int
    offset: int
    vaddr: int
    filesz: int


_SHT_NOBITS = 8
_PT_LOAD = 1
_PF_W = 2
_ET_DYN = 3
_R_X86_64_RELATIVE = 8
_R_AARCH64_RELATIVE = 1027


class ElfView:
    """Just enough ELF to find Go's tables: sections, load segments, vaddr reads, a few symbols.

    pyelftools would do, but a hand-written reader lets every offset be checked against the file
    size in one place, which is what hostile input needs, and opens in microseconds.
    """

    def __init__(self, buf) -> None:
        self.buf = buf
        self.size = len(buf)
        if self.size < 64 or bytes(buf[:4]) != b"\x7fELF":
            raise PclntabError("not an ELF file")
        ei_class, ei_data = buf[4], buf[5]
        if ei_data != 1:
            raise PclntabError("big-endian ELF is not supported")
        if ei_class == 2:
            self.ptrsize = 8
            (self.e_type, self.e_machine, _, _, e_phoff, e_shoff, _, _, e_phentsize, e_phnum,
             e_shentsize, e_shnum, e_shstrndx) = struct.unpack_from("<HHIQQQIHHHHHH", buf, 16)
        elif ei_class == 1:
            self.ptrsize = 4
            (self.e_type, self.e_machine, _, _, e_phoff, e_shoff, _, _, e_phentsize, e_phnum,
             e_shentsize, e_shnum, e_shstrndx) = struct.unpack_from("<HHIIIIIHHHHHH", buf, 16)
        else:
            raise PclntabError(f"unknown ELF class {ei_class}")
        self.segments = self._read_segments(e_phoff, e_phentsize, e_phnum)
        self.sections = self._read_sections(e_shoff, e_shentsize, e_shnum, e_shstrndx)
        self._by_name = {s.name: s for s in self.sections}

    @property
    def is_pie(self) -> bool:
        return self.e_type == _ET_DYN

    def _check(self, off: int, n: int, what: str) -> None:
        if off < 0 or n < 0 or off + n > self.size:
            raise PclntabError(f"{what} lies outside the file (offset {off:#x}, {n} bytes, "
                               f"file is {self.size} bytes): truncated or corrupt")

    def _read_segments(self, off: int, entsize: int, num: int) -> list[_Segment]:
        if num == 0:
            return []
        need = 56 if self.ptrsize == 8 else 32
        if entsize < need or num > 4096:
            raise PclntabError("corrupt ELF program header table")
        self._check(off, entsize * num, "program header table")
        out = []
        for i in range(num):
            p = off + i * entsize
            if self.ptrsize == 8:
                p_type, p_flags, p_offset, p_vaddr, _, p_filesz = struct.unpack_from("<IIQQQQ", self.buf, p)
            else:
                p_type, p_offset, p_vaddr, _, p_filesz, _, p_flags = struct.unpack_from("<IIIIIII", self.buf, p)
            out.append(_Segment(p_type, p_flags, p_offset, p_vaddr, p_filesz))
        return out

    def _read_sections(self, off: int, entsize: int, num: int, strndx: int) -> list[_Section]:
        if num == 0 or off == 0:
            return []
        need = 64 if self.ptrsize == 8 else 40
        if entsize < need or num > 65535:
            raise PclntabError("corrupt ELF section header table")
        self._check(off, entsize * num, "section header table")
        raw = []
        for i in range(num):
            p = off + i * entsize
            if self.ptrsize == 8:
                name, typ, _, addr, offset, size = struct.unpack_from("<IIQQQQ", self.buf, p)
            else:
                name, typ, _, addr, offset, size = struct.unpack_from("<IIIIII", self.buf, p)
            raw.append((name, typ, addr, offset, size))
        names_off = names_size = 0
        if 0 <= strndx < num:
            _, _, _, names_off, names_size = raw[strndx]
            if names_off + names_size > self.size:
                names_size = 0
        out = []
        for name, typ, addr, offset, size in raw:
            text = ""
            if name < names_size:
                end = self.buf.find(b"\0", names_off + name, names_off + names_size)
                if end > 0:
                    text = bytes(self.buf[names_off + name:end]).decode("latin-1")
            out.append(_Section(text, typ, addr, offset, size))
        return out

    def section(self, name: str) -> _Section | None:
        return self._by_name.get(name)

    def section_bytes_range(self, sec: _Section) -> tuple[int, int]:
        """(file offset, size) of a section's contents, checked against the file."""
        if sec.type == _SHT_NOBITS:
            raise PclntabError(f"section {sec.name} has no contents in the file")
        self._check(sec.offset, sec.size, f"section {sec.name}")
        return sec.offset, sec.size

    def vaddr_to_offset(self, vaddr: int, n: int = 1) -> int | None:
        """File offset of ``n`` bytes at ``vaddr``, or None if they are not all in one load segment."""
        for seg in self.segments:
            if seg.type == _PT_LOAD and seg.vaddr <= vaddr and vaddr + n <= seg.vaddr + seg.filesz:
                off = seg.offset + (vaddr - seg.vaddr)
                if off + n <= self.size:
                    return off
        return None

    def offset_to_vaddr(self, off: int) -> int | None:
        for seg in self.segments:
            if seg.type == _PT_LOAD and seg.offset <= off < seg.offset + seg.filesz:
                return seg.vaddr + (off - seg.offset)
        return None

    def segment_end_offset(self, off: int) -> int:
        """File offset where the load segment holding ``off`` ends (or the file ends)."""
        for seg in self.segments:
            if seg.type == _PT_LOAD and seg.offset <= off < seg.offset + seg.filesz:
                return min(seg.offset + seg.filesz, self.size)
        return self.size

    def symbol(self, wanted: set[str]) -> dict[str, int]:
        """Values of the named symbols from .symtab (empty when stripped). Linear: used rarely."""
        found: dict[str, int] = {}
        sym, strs = self.section(".symtab"), self.section(".strtab")
        if sym is None or strs is None:
            return found
        soff, ssize = self.section_bytes_range(sym)
        toff, tsize = self.section_bytes_range(strs)
        entsize = 24 if self.ptrsize == 8 else 16
        encoded = {w.encode(): w for w in wanted}
        for p in range(soff, soff + ssize - entsize + 1, entsize):
            if self.ptrsize == 8:
                name, _, _, _, value = struct.unpack_from("<IBBHQ", self.buf, p)
            else:
                name, value = struct.unpack_from("<II", self.buf, p)
            if name >= tsize:
                continue
            end = self.buf.find(b"\0", toff + name, toff + tsize)
            if end < 0:
                continue
            key = encoded.get(bytes(self.buf[toff + name:end]))
            if key is not None and key not in found:
                found[key] = value
                if len(found) == len(wanted):
                    break
        return found

    def relative_relocs(self) -> dict[int, int]:
        """PIE: {vaddr: value} of the RELATIVE relocations (pointers the loader fills in)."""
        out: dict[int, int] = {}
        for sec in self.sections:
            if sec.name not in (".rela.dyn", ".data.rel.ro.rela") or self.ptrsize != 8:
                continue
            off, size = self.section_bytes_range(sec)
            words = memoryview(self.buf)[off:off + size - size % 24].cast("Q")
            r_offs, r_infos, r_adds = words[0::3], words[1::3], words[2::3]
            for r_off, info, add in zip(r_offs, r_infos, r_adds, strict=True):
                if info & 0xFFFFFFFF in (_R_X86_64_RELATIVE, _R_AARCH64_RELATIVE):
                    out[r_off] = add
            words.release()
        return out


# --- the pclntab ----------------------------------------------------------------------------------

class _Func:
    """One function: where its pc-value tables are, and (once it is looked up twice) their decoding.

    The first PC looked up in a function is answered by walking each table only up to that PC,
    as the Go runtime does; a second lookup decodes the tables whole (ranges ``ends`` with values
    ``vals``) so that every later PC in the function is a bisect.
    """

    __slots__ = ("entry", "end", "name", "cu_offset", "file_off", "line_off", "inl_off", "inltree",
                 "decoded")

    def __init__(self, entry, end, name, cu_offset, file_off, line_off, inl_off, inltree) -> None:
        self.entry, self.end, self.name, self.cu_offset = entry, end, name, cu_offset
        self.file_off, self.line_off = file_off, line_off
        self.inl_off = inl_off
        """pctab offset of the inline-index table, or None when the function has no inlining."""
        self.inltree = inltree
        """Virtual address of the inline tree (records of ``_inl_size`` bytes), or None."""
        self.decoded: dict[int, tuple[list, list]] | None = None
        """pctab offset -> (ends, vals), once decoded."""


class Pclntab:
    """A Go 1.18+ pclntab inside an ELF file; see the module docstring."""

    def __init__(self, elf: ElfView, hdr_off: int, hdr_end: int, keep=None) -> None:
        self.elf = elf
        self.buf = elf.buf
        self._keep = keep  # the mmap/file object whose lifetime we own
        self._hdr = hdr_off
        self._limit = hdr_end
        buf = self.buf
        if hdr_off + 8 > hdr_end:
            raise PclntabError("pclntab header truncated")
        magic = struct.unpack_from("<I", buf, hdr_off)[0]
        if magic in _OLD_MAGICS:
            raise PclntabError(f"pclntab format of {_OLD_MAGICS[magic]} (magic {magic:#x}) is not "
                               "supported: lgf reads binaries built by Go 1.18 or later")
        if magic not in (MAGIC_118, MAGIC_120):
            raise PclntabError(f"no Go pclntab: bad magic {magic:#x}")
        pad1, pad2, quantum, ptrsize = buf[hdr_off + 4], buf[hdr_off + 5], buf[hdr_off + 6], buf[hdr_off + 7]
        if pad1 or pad2 or quantum not in (1, 2, 4) or ptrsize not in (4, 8):
            raise PclntabError("corrupt pclntab header (padding, quantum or pointer size)")
        self.magic, self.quantum, self.ptrsize = magic, quantum, ptrsize
        self.go_format = "1.20+" if magic == MAGIC_120 else "1.18-1.19"
        pfmt = "<Q" if ptrsize == 8 else "<I"
        words = []
        for i in range(8):
            p = hdr_off + 8 + i * ptrsize
            if p + ptrsize > hdr_end:
                raise PclntabError("pclntab header truncated")
            words.append(struct.unpack_from(pfmt, buf, p)[0])
        self.nfunc, self.nfiles, header_text = words[0], words[1], words[2]
        size = hdr_end - hdr_off
        for what, w in zip(("funcname", "cu", "file", "pc", "func"), words[3:], strict=True):
            if not 0 < w < size:
                raise PclntabError(f"pclntab {what} table offset {w:#x} outside the table ({size} bytes)")
        self._funcnames = hdr_off + words[3]
        self._cutab = hdr_off + words[4]
        self._filetab = hdr_off + words[5]
        self._pctab = hdr_off + words[6]
        self._pcln = hdr_off + words[7]
        # Tables are laid out in this order by the linker; each ends where the next starts.
        self._funcnames_end = self._cutab
        self._cutab_end = self._filetab
        self._filetab_end = self._pctab
        self._pctab_end = self._pcln
        ftab_bytes = (self.nfunc * 2 + 1) * 4
        if self.nfunc == 0 or self.nfunc > size // 8 or self._pcln + ftab_bytes > hdr_end:
            raise PclntabError(f"pclntab function count {self.nfunc} does not fit the table")
        if not (self._funcnames < self._cutab <= self._filetab <= self._pctab <= self._pcln):
            raise PclntabError("pclntab sub-tables out of order: corrupt header")
        self._func_hdr = 44 if magic == MAGIC_120 else 40
        self._inl_size = 16 if magic == MAGIC_120 else 20
        self._inl_name_at = 4 if magic == MAGIC_120 else 12

        self.moduledata: int | None = None
        self._reloc: dict[int, int] | None = None
        md_text, self.gofunc = self._from_moduledata()
        text = md_text or header_text
        if not text:
            got = elf.symbol({"runtime.text"}).get("runtime.text")
            sec = elf.section(".text")
            text = got or (sec.addr if sec else 0)
        if not text:
            raise PclntabError("cannot tell where the text segment starts (no moduledata, "
                               "no runtime.text, no .text)")
        self.text_start = text
        if self.gofunc is None:
            sym = elf.symbol({"go:func.*", "go.func.*"})
            cand = sym.get("go:func.*") or sym.get("go.func.*")
            if cand and self._gofunc_plausible(cand):
                self.gofunc = cand
        self._entries: list[int] | None = None
        self._names: dict[str, int] | None = None
        self._func_cache: OrderedDict[int, _Func] = OrderedDict()
        self._strings: dict[int, str] = {}

    # --- opening ------------------------------------------------------------------------------

    @classmethod
    def from_elf(cls, source) -> Pclntab:
        """Open a Go ELF binary: a path (memory-mapped, read-only), ``bytes`` or an mmap.

        Finds the table through the ``.gopclntab`` section, else (section headers gone) by
        scanning the file for a pclntab header whose sub-table offsets are consistent.
        Raises :class:`PclntabError` saying why when it cannot.
        """
        keep = None
        if isinstance(source, (str, os.PathLike)):
            try:
                with open(source, "rb") as fh:
                    if os.fstat(fh.fileno()).st_size == 0:
                        raise PclntabError(f"{os.fspath(source)}: empty file")
                    buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            except OSError as exc:
                raise PclntabError(f"{os.fspath(source)}: {exc.strerror or exc}") from None
            keep = buf
        elif isinstance(source, (bytes, bytearray, mmap.mmap)):
            buf = bytes(source) if isinstance(source, bytearray) else source
        else:
            raise TypeError("from_elf takes a path, bytes or an mmap")
        try:
            elf = ElfView(buf)
            hdr, end = _locate(elf)
            return cls(elf, hdr, end, keep)
        except struct.error as exc:
            raise PclntabError(f"truncated file: {exc}") from None
        except PclntabError:
            if keep is not None:
                keep.close()
            raise

    def close(self) -> None:
        """Unmap the file. Lookups after this raise ``ValueError``."""
        if self._keep is not None:
            self._keep.close()
            self._keep = None

    def __enter__(self) -> Pclntab:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- raw reads (every one bounds-checked) ------------------------------------------------

    def _u32(self, off: int, lo: int, hi: int, what: str) -> int:
        if not lo <= off <= hi - 4:
            raise PclntabError(f"{what} at {off:#x} outside its table: corrupt pclntab")
        return struct.unpack_from("<I", self.buf, off)[0]

    def _cstring(self, off: int, lo: int, hi: int, what: str) -> str:
        s = self._strings.get(off)
        if s is not None:
            return s
        if not lo <= off < hi:
            raise PclntabError(f"{what} offset {off:#x} outside its table: corrupt pclntab")
        end = self.buf.find(b"\0", off, min(hi, off + _MAX_NAME))
        if end < 0:
            raise PclntabError(f"{what} at {off:#x} is not NUL-terminated: corrupt pclntab")
        s = bytes(self.buf[off:end]).decode("utf-8", "replace")
        self._strings[off] = s
        return s

    def _read_ptr(self, vaddr: int) -> int | None:
        """A pointer-sized word at ``vaddr`` as the loader would leave it (PIE relocations applied)."""
        off = self.elf.vaddr_to_offset(vaddr, self.ptrsize)
        if off is None:
            return None
        v = struct.unpack_from("<Q" if self.ptrsize == 8 else "<I", self.buf, off)[0]
        if v == 0 and self.elf.is_pie:
            if self._reloc is None:
                self._reloc = self.elf.relative_relocs()
            v = self._reloc.get(vaddr, 0)
        return v

    # --- moduledata: the runtime's own pointers to text and go:func.* -------------------------

    def _from_moduledata(self) -> tuple[int | None, int | None]:
        """Find runtime.firstmoduledata by its first word (a pointer to this pcHeader).

        Works on stripped binaries; moduledata gives ``text`` (Go 1.27 no longer stores it in the
        header) and ``gofunc``, the base of funcdata offsets, which the inline tree needs.
        """
        hdr_vaddr = self.elf.offset_to_vaddr(self._hdr)
        if hdr_vaddr is None:
            return None, None
        ps = self.ptrsize
        funcnames_vaddr = hdr_vaddr + (self._funcnames - self._hdr)
        for md in self._moduledata_candidates(hdr_vaddr):
            if self._read_ptr(md + ps) != funcnames_vaddr:
                continue
            self.moduledata = md
            text = self._read_ptr(md + _MODULEDATA_TEXT * ps) or None
            for idx in (*_MODULEDATA_GOFUNC_CANDIDATES, *range(32, 50)):
                cand = self._read_ptr(md + idx * ps)
                if cand and self._gofunc_plausible(cand):
                    return text, cand
            return text, None
        return None, None

    def _moduledata_candidates(self, hdr_vaddr: int) -> Iterator[int]:
        ps = self.ptrsize
        needle = hdr_vaddr.to_bytes(ps, "little")
        for seg in self.elf.segments:
            if seg.type != _PT_LOAD or not seg.flags & _PF_W:
                continue
            pos, end = seg.offset, min(seg.offset + seg.filesz, self.elf.size)
            for _ in range(64):
                pos = self.buf.find(needle, pos, end)
                if pos < 0:
                    break
                if (pos - seg.offset) % ps == 0:
                    yield seg.vaddr + (pos - seg.offset)
                pos += 1
        if self.elf.is_pie:
            if self._reloc is None:
                self._reloc = self.elf.relative_relocs()
            yield from sorted(a for a, v in self._reloc.items() if v == hdr_vaddr)[:64]

    def _gofunc_plausible(self, gofunc: int) -> bool:
        """True when ``gofunc`` makes the first inline trees of the table decode sensibly."""
        checked = 0
        for i in range(0, self.nfunc, max(1, self.nfunc // 400)):
            try:
                f = self._func_header(i)
            except PclntabError:
                return False
            fd = self._funcdata_off(f, _FUNCDATA_INLTREE)
            if fd is None:
                continue
            off = self.elf.vaddr_to_offset(gofunc + fd, self._inl_size)
            if off is None:
                return False
            name_off, parent_pc = struct.unpack_from("<ii", self.buf, off + self._inl_name_at)
            size = self._entry_off(i + 1) - f[0]
            p = self._funcnames + name_off
            if not (self._funcnames <= p < self._funcnames_end and (name_off == 0 or self.buf[p - 1] == 0)
                    and 0 <= parent_pc < size):
                return False
            checked += 1
            if checked >= 16:
                break
        return checked > 0

    # --- function table --------------------------------------------------------------------------

    def _entry_off(self, i: int) -> int:
        return self._u32(self._pcln + 8 * i, self._pcln, self._limit, "function table entry")

    def _func_header(self, i: int) -> tuple:
        """(entryOff, nameOff, cuOffset, pcfile, pcln, npcdata, nfuncdata, header offset)."""
        func_off = self._u32(self._pcln + 8 * i + 4, self._pcln, self._limit, "function table entry")
        p = self._pcln + func_off
        if not self._pcln <= p <= self._limit - self._func_hdr:
            raise PclntabError(f"function #{i} record at {p:#x} outside the table: corrupt pclntab")
        entry, name, _, _, _, pcfile, pcln, npcdata, cu = struct.unpack_from("<IiiIIIIII", self.buf, p)
        nfuncdata = self.buf[p + self._func_hdr - 1]
        if npcdata > 1024 or p + self._func_hdr + 4 * (npcdata + nfuncdata) > self._limit:
            raise PclntabError(f"function #{i} has a corrupt pcdata/funcdata count")
        return entry, name, cu, pcfile, pcln, npcdata, nfuncdata, p

    def _funcdata_off(self, f: tuple, index: int) -> int | None:
        npcdata, nfuncdata, p = f[5], f[6], f[7]
        if index >= nfuncdata:
            return None
        v = struct.unpack_from("<I", self.buf, p + self._func_hdr + 4 * (npcdata + index))[0]
        return None if v == _NO_FUNCDATA else v

    def _pcdata_off(self, f: tuple, index: int) -> int:
        if index >= f[5]:
            return 0
        return struct.unpack_from("<I", self.buf, f[7] + self._func_hdr + 4 * index)[0]

    def _entries_list(self) -> list[int]:
        """Entry PCs of all functions plus the end sentinel, sorted as the linker wrote them."""
        if self._entries is None:
            n = self.nfunc
            view = memoryview(self.buf)[self._pcln:self._pcln + (2 * n + 1) * 4]
            words = view.cast("I")
            base = self.text_start
            entries = [base + e for e in words[0::2]]
            words.release()
            view.release()
            if any(entries[i] > entries[i + 1] for i in range(n)):
                raise PclntabError("function table is not sorted by entry PC: corrupt pclntab")
            self._entries = entries
        return self._entries

    def func_index(self, pc: int) -> int | None:
        """Index of the function whose [entry, next entry) holds ``pc``, or None (as addr2line)."""
        entries = self._entries_list()
        if pc < entries[0] or pc >= entries[-1]:
            return None
        return bisect_right(entries, pc) - 1

    def func_name(self, i: int) -> str:
        name_off = self._func_header(i)[1]
        return self._cstring(self._funcnames + name_off, self._funcnames, self._funcnames_end, "function name")

    def funcs(self) -> Iterator[tuple[str, int, int]]:
        """Every function as (name, entry vaddr, end vaddr), in address order.

        ``end`` is the next function's entry (padding included), as ``go tool addr2line`` and
        ``debug/gosym`` count it.
        """
        entries = self._entries_list()
        for i in range(self.nfunc):
            yield self.func_name(i), entries[i], entries[i + 1]

    def func_by_name(self, name: str) -> int | None:
        """Entry vaddr of the function ``.symtab`` calls ``name``, or None; works when stripped."""
        if self._names is None:
            names: dict[str, int] = {}
            asm: set[str] = set()
            for i, (fname, entry, _) in enumerate(self.funcs()):
                is_asm = bool(self.buf[self._func_header(i)[7] + self._func_hdr - 3] & _FUNCFLAG_ASM)
                # An ABI wrapper shares its function's name: an assembly function's ABIInternal
                # wrapper is what .symtab calls by the plain name (the body is "name.abi0"), and
                # a Go function comes before its ABI0 wrapper. Keep the one .symtab names.
                if fname not in names or (fname in asm and not is_asm):
                    names[fname] = entry
                    asm.discard(fname)
                    if is_asm:
                        asm.add(fname)
            self._names = names
        return self._names.get(name)

    # --- pc-value tables -------------------------------------------------------------------------

    def _decode_table(self, off: int, entry: int, end: int) -> tuple[list, list]:
        """Decode the pc-value table at pctab offset ``off`` the way debug/gosym's pcvalue walks it.

        Stops at the table's terminator or once the ranges cover the function (later ranges are
        never consulted for PCs inside it). Returns (ends, vals): ``vals[i]`` holds below ``ends[i]``.
        Reads chunk by chunk, as :meth:`_pcvalue` does.
        """
        quantum = self.quantum
        start = self._pctab + off
        limit = self._pctab_end
        if not self._pctab <= start < limit:
            raise PclntabError(f"pc-value table offset {off:#x} outside pctab: corrupt pclntab")
        chunk = 1024
        data = self.buf[start:min(limit, start + chunk)]
        n = len(data)
        p = 0
        ends: list[int] = []
        vals: list[int] = []
        val, pc, first = -1, entry, True
        for _ in range(_MAX_TABLE_STEPS):
            if p + 2 * _MAX_VARINT_BYTES > n and n < limit - start:
                data = self.buf[start + p:min(limit, start + p + chunk)]
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

    def _pcvalue(self, off: int, entry: int, target: int) -> int:
        """The value of the table at pctab offset ``off`` for ``target``, walking only up to it.

        debug/gosym's pcvalue, with every read checked: -1 when the table ends first. The bytes
        are copied out of the map a chunk at a time (indexing ``bytes`` is several times faster
        than indexing an mmap, and most tables end within the first chunk).
        """
        quantum = self.quantum
        start = self._pctab + off
        limit = self._pctab_end
        if not self._pctab <= start < limit:
            raise PclntabError(f"pc-value table offset {off:#x} outside pctab: corrupt pclntab")
        chunk = 256
        data = self.buf[start:min(limit, start + chunk)]
        n = len(data)
        p = 0
        val, pc, first = -1, entry, True
        for _ in range(_MAX_TABLE_STEPS):
            if p + 2 * _MAX_VARINT_BYTES > n and n < limit - start:
                data = self.buf[start + p:min(limit, start + p + chunk)]  # refill: keep the rest
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

    def _func(self, i: int) -> _Func:
        """Function ``i``'s record, from the bounded cache; decodes its tables on a second visit."""
        cache = self._func_cache
        f = cache.get(i)
        if f is not None:
            cache.move_to_end(i)
            if f.decoded is None:
                f.decoded = {off: self._decode_table(off, f.entry, f.end)
                             for off in (f.file_off, f.line_off, f.inl_off) if off is not None}
            return f
        entries = self._entries_list()
        entry, end = entries[i], entries[i + 1]
        h = self._func_header(i)
        inl_off = inltree = None
        pc_off = self._pcdata_off(h, _PCDATA_INLTREEINDEX)
        fd = self._funcdata_off(h, _FUNCDATA_INLTREE)
        if pc_off and fd is not None and self.gofunc is not None:
            if self.elf.vaddr_to_offset(self.gofunc + fd, self._inl_size) is not None:
                inl_off, inltree = pc_off, self.gofunc + fd
        name = self._cstring(self._funcnames + h[1], self._funcnames, self._funcnames_end, "function name")
        f = _Func(entry, end, name, h[2], h[3], h[4], inl_off, inltree)
        cache[i] = f
        if len(cache) > _FUNC_CACHE:
            cache.popitem(last=False)
        return f

    def _value(self, f: _Func, off: int, pc: int) -> int:
        if f.decoded is None:
            return self._pcvalue(off, f.entry, pc)
        ends, vals = f.decoded[off]
        k = bisect_right(ends, pc)
        return vals[k] if k < len(vals) else -1

    def _file(self, f: _Func, fno: int) -> str:
        if fno < 0:
            return ""
        p = self._cutab + 4 * (f.cu_offset + fno)
        name_off = self._u32(p, self._cutab, self._cutab_end, "compilation-unit file index")
        if name_off == 0xFFFFFFFF:
            return ""
        return self._cstring(self._filetab + name_off, self._filetab, self._filetab_end, "file name")

    def _file_line(self, f: _Func, pc: int) -> tuple[str, int]:
        return self._file(f, self._value(f, f.file_off, pc)), self._value(f, f.line_off, pc)

    # --- lookups ---------------------------------------------------------------------------------

    def addr2line(self, pc: int) -> tuple[str, str, int] | None:
        """(function, file, line) for ``pc`` exactly as ``go tool addr2line`` computes them.

        The function is the outermost (physical) one, file and line the innermost inlined
        position; a PC past the function's table gives ``("", -1)`` as debug/gosym does. None
        when ``pc`` is in no function. No ``pc-1`` adjustment: the PC is taken as given.
        """
        i = self.func_index(pc)
        if i is None:
            return None
        f = self._func(i)
        file, line = self._file_line(f, pc)
        return f.name, file, line

    def frames(self, pc: int, is_return_addr: bool = True) -> list[Frame]:
        """The source frames at ``pc``, innermost first; several when calls were inlined there.

        For a return address (a PC read from a stack), the call instruction is what matters, so
        ``pc-1`` is looked up, as the Go runtime's traceback does; every frame carries the
        original ``pc``. Returns [] when ``pc`` is in no function.
        """
        target = pc - 1 if is_return_addr and pc > 0 else pc
        i = self.func_index(target)
        if i is None:
            return []
        t = self._func(i)
        out: list[Frame] = []
        at = target
        for _ in range(_MAX_INLINE_DEPTH):
            file, line = self._file_line(t, at)
            ix = self._value(t, t.inl_off, at) if t.inl_off is not None else -1
            if ix < 0:
                out.append(Frame(t.name, file, line, pc, False))
                return out
            rec = self.elf.vaddr_to_offset(t.inltree + ix * self._inl_size, self._inl_size)
            if rec is None:
                raise PclntabError(f"inline tree index {ix} outside the file: corrupt pclntab")
            # nameOff and parentPc are adjacent in both layouts (1.18: at 12, 1.20+: at 4).
            name_off, parent_pc = struct.unpack_from("<ii", self.buf, rec + self._inl_name_at)
            name = self._cstring(self._funcnames + name_off, self._funcnames, self._funcnames_end,
                                 "inlined function name")
            out.append(Frame(name, file, line, pc, True))
            nxt = t.entry + parent_pc
            if not t.entry <= nxt < t.end:
                raise PclntabError(f"inline call site {parent_pc:#x} outside {t.name}: corrupt pclntab")
            at = nxt
        raise PclntabError(f"inline chain at {pc:#x} deeper than {_MAX_INLINE_DEPTH}: corrupt pclntab")


def _locate(elf: ElfView) -> tuple[int, int]:
    """(file offset of the pcHeader, file offset where the table must end)."""
    for name in (".gopclntab", ".data.rel.ro.gopclntab"):
        sec = elf.section(name)
        if sec is not None:
            off, size = elf.section_bytes_range(sec)
            return off, off + size
    return _scan_for_header(elf)


def _scan_for_header(elf: ElfView) -> tuple[int, int]:
    """No section header names the table (section headers stripped): look for a valid header.

    A candidate is the magic, two zero bytes, a sane quantum and pointer size, and sub-table
    offsets that are increasing and inside the segment; the first such one wins.
    """
    buf = elf.buf
    old = None
    for magic in (MAGIC_120, MAGIC_118, *_OLD_MAGICS):
        needle = struct.pack("<I", magic) + b"\0\0"
        pos = 0
        for _ in range(10_000):
            pos = buf.find(needle, pos)
            if pos < 0:
                break
            if pos + 16 <= elf.size and buf[pos + 6] in (1, 2, 4) and buf[pos + 7] in (4, 8):
                if magic in _OLD_MAGICS:
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
        raise PclntabError(f"pclntab format of {_OLD_MAGICS[old]} (magic {old:#x}) is not supported: "
                           "lgf reads binaries built by Go 1.18 or later")
    raise PclntabError("no Go pclntab found (not a Go binary, or built by Go older than 1.2)")
