"""Read a Go binary's own symbol table, the pclntab, straight from the ELF file.

Why our own reader: every Go binary carries the pclntab (function names, entry PCs, and
pc-value tables for file, line and inlining) even when stripped or built with ``-s -w``; the
runtime prints tracebacks from it. Reading it directly is the fast path (pyelftools on DWARF line
tables is slow, and DWARF is gone from stripped binaries) and gives exactly what
``go tool addr2line`` prints. Formats of Go 1.18-1.19 (magic 0xfffffff0) and Go 1.20+ (magic
0xfffffff1) are read; older ones are refused with a clear :class:`PclntabError`.

Untrusted input: lgf runs as root over other people's binaries, so every offset and length read
from the file is checked against the buffer before use, every loop has a cap, and any problem
becomes a :class:`PclntabError` (a ``ValueError``), never an ``IndexError`` or a hang. The ELF
side (headers, segments, symbols, relocations) is lgf's one ELF reader,
:class:`~lgf.golang.goelf.ElfImage`, whose errors are re-raised here as ``PclntabError``; the
byte format of the table (constants, pc-value decoding) is in :mod:`lgf.golang.pclntab_format`;
finding the table, its text start and ``gofunc`` (stripped files too) in
:mod:`lgf.golang.pclntab_locate`.

Cost: opening maps the file and reads the ELF headers and the pclntab header (sub-millisecond);
the function table is cut into an entry-PC list on first lookup (a C-speed slice, about 1 ms
for 50,000 functions). The pc-value tables (file, line, inline index) of every function are
decoded on the first lookup, all at once, by the C module ``lgf.golang._pcvalue`` into one flat
*index* (:attr:`Pclntab.pc_index`: ~15 ms and 4 MiB for Go's 7 MB linker), after which a PC
costs two bisects in C; :meth:`Pclntab.addr2line_text` answers a whole batch in one C call. An
index decoded by another process can be adopted instead (:meth:`Pclntab.adopt_index`, used by
:mod:`lgf.golang.pclntab_cache`, lgf's on-disk cache of them). Without the C module (a source tree
never built; logged as a warning) the pure-Python walk of :mod:`~lgf.golang.pclntab_format`
answers the same: the first PC of a function walks its tables only up to that PC, a second
decodes them whole into a bounded cache.

Public API::

    tab = Pclntab.from_elf("/usr/bin/x")       # path, bytes, mmap or an open ElfImage
    tab.func_by_name("runtime.gopark")         # entry vaddr or None
    for name, entry, end in tab.funcs(): ...
    tab.addr2line(pc)                          # (name, file, line) exactly as go tool addr2line
    tab.frames(pc)                             # [(func, file, line, pc, inlined)], innermost first
    tab.addr2line_text(b"0x4a50fd\\n...")       # addr2line's whole output for these lines, in C
"""

from __future__ import annotations

import mmap
import os
import struct
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterator
from typing import NamedTuple

from .goelf import ElfError, ElfImage
from .pclntab_format import (
    FUNCDATA_INLTREE,
    FUNCFLAG_ASM,
    MAGIC_118,
    MAGIC_120,
    NO_FUNCDATA,
    OLD_MAGICS,
    PCDATA_INLTREEINDEX,
    PclntabError,
    decode_table,
    native,
    native_or_warn,
    value_at,
)
from .pclntab_locate import find_moduledata, gofunc_plausible, locate

__all__ = ["MAGIC_118", "MAGIC_120", "Frame", "Pclntab", "PclntabError"]

_MAX_INLINE_DEPTH = 256
"""The Go compiler's inlining budget keeps real chains far below this."""
_MAX_NAME = 1 << 16
_FUNC_CACHE = 4096
"""Function records kept per binary (name, inline tree); on the pure-Python path a decoded one
also holds its tables as int lists (1-5 KiB), so at most ~20 MiB per binary."""
_FILE, _LINE, _INL = 0, 1, 2
"""The pc-value tables' numbers in the native index (``_pcvalue.c``)."""
_INDEX_HEADER = struct.Struct("=QQQQQQIIII")
"""The native index's header: magic, text_start, pctab, pctab_end, cutab, limit (file offsets),
nfunc, nranges, quantum, padding (``ix_header`` in ``_pcvalue.c``)."""



class Frame(NamedTuple):
    """One source frame; an inlined call gives several frames for one PC."""

    func: str
    file: str
    line: int
    pc: int
    inlined: bool


# --- the pclntab ----------------------------------------------------------------------------------

class _Func:
    """One function: where its pc-value tables are, and (once it is looked up twice) their decoding.

    The first PC looked up in a function is answered by walking each table only up to that PC,
    as the Go runtime does; a second lookup decodes the tables whole (ranges ``ends`` with values
    ``vals``) so that every later PC in the function is a bisect.
    """

    __slots__ = ("index", "entry", "end", "name", "cu_offset", "file_off", "line_off", "inl_off", "inltree",
                 "decoded")

    def __init__(self, index, entry, end, name, cu_offset, file_off, line_off, inl_off, inltree) -> None:
        self.index = index
        """The function's number in the function table (and in the native index)."""
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

    def __init__(self, elf: ElfImage, hdr_off: int, hdr_end: int, owns_elf: bool = False,
                 use_native: bool = True) -> None:
        self.elf = elf
        self.buf = elf.data
        self._owns_elf = owns_elf  # opened by from_elf from a path or bytes: closed with us
        self._hdr = hdr_off
        self._limit = hdr_end
        buf = self.buf
        if hdr_off + 8 > hdr_end:
            raise PclntabError("pclntab header truncated")
        magic = struct.unpack_from("<I", buf, hdr_off)[0]
        if magic in OLD_MAGICS:
            raise PclntabError(f"pclntab format of {OLD_MAGICS[magic]} (magic {magic:#x}) is not "
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

        self.moduledata, md_text, self.gofunc = find_moduledata(self)
        text = md_text or header_text
        if not text:
            got = elf.symbols().get("runtime.text")
            sec = elf.section(".text")
            text = (got.value if got else 0) or (sec.addr if sec else 0)
        if not text:
            raise PclntabError("cannot tell where the text segment starts (no moduledata, "
                               "no runtime.text, no .text)")
        self.text_start = text
        if self.gofunc is None:
            sym = elf.symbols()
            cand = next((sym[n].value for n in ("go:func.*", "go.func.*") if n in sym), None)
            if cand and gofunc_plausible(self, cand):
                self.gofunc = cand
        self._entries: list[int] | None = None
        self._names: dict[str, int] | None = None
        self._func_cache: OrderedDict[int, _Func] = OrderedDict()
        self._strings: dict[int, str] = {}
        """Offset -> decoded name: at most the binary's own names and files, whatever the PCs."""
        self.native = use_native and native_or_warn()
        """Lookups go through the C index (False: the pure-Python walk, slower, same answers)."""
        self._index = None
        self._index_owner = None
        self.index_source = ""
        """Where :attr:`pc_index` came from: "" (not yet), "built" (decoded here) or what
        :meth:`adopt_index` was told (the on-disk cache says "cache")."""

    # --- opening ------------------------------------------------------------------------------

    @classmethod
    def from_elf(cls, source: str | os.PathLike | bytes | bytearray | mmap.mmap | ElfImage,
                 use_native: bool = True) -> Pclntab:
        """Open a Go ELF binary: a path (memory-mapped, read-only), ``bytes``, an mmap, or an
        :class:`~lgf.golang.goelf.ElfImage` already open (shared, not closed by :meth:`close`).
        ``use_native=False`` takes the pure-Python path even when the C decoder is there.

        Finds the table through the ``.gopclntab`` section, else (section headers gone) by
        scanning the file for a pclntab header whose sub-table offsets are consistent.
        Raises :class:`PclntabError` saying why when it cannot.
        """
        owns = not isinstance(source, ElfImage)
        try:
            elf = ElfImage(source) if owns else source
        except ElfError as exc:  # the ELF reader's neutral error, in this module's contract
            raise PclntabError(str(exc)) from None
        try:
            hdr, end = locate(elf)
            return cls(elf, hdr, end, owns, use_native)
        except PclntabError:
            if owns:
                elf.close()
            raise
        except (ElfError, struct.error) as exc:
            if owns:
                elf.close()
            raise PclntabError(f"truncated or corrupt file: {exc}") from None

    def close(self) -> None:
        """Unmap the file if :meth:`from_elf` mapped it, and drop the index (closing what
        :meth:`adopt_index` was given to close). Lookups after this raise ``ValueError``."""
        self._index = None
        if self._index_owner is not None:
            self._index_owner.close()
            self._index_owner = None
        if self._owns_elf:
            self.elf.close()
            self._owns_elf = False

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
        return None if v == NO_FUNCDATA else v

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
                is_asm = bool(self.buf[self._func_header(i)[7] + self._func_hdr - 3] & FUNCFLAG_ASM)
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

    def _func(self, i: int) -> _Func:
        """Function ``i``'s record, from the bounded cache; on the pure-Python path, decodes its
        tables on a second visit."""
        cache = self._func_cache
        f = cache.get(i)
        if f is not None:
            cache.move_to_end(i)
            if f.decoded is None and not self.native:
                f.decoded = {off: decode_table(self.buf, self._pctab, self._pctab_end, off, f.entry, f.end,
                                               self.quantum)
                             for off in (f.file_off, f.line_off, f.inl_off) if off is not None}
            return f
        entries = self._entries_list()
        entry, end = entries[i], entries[i + 1]
        h = self._func_header(i)
        inl_off = inltree = None
        pc_off = self._pcdata_off(h, PCDATA_INLTREEINDEX)
        fd = self._funcdata_off(h, FUNCDATA_INLTREE)
        if pc_off and fd is not None and self.gofunc is not None:
            if self.elf.vaddr_to_offset(self.gofunc + fd, self._inl_size) is not None:
                inl_off, inltree = pc_off, self.gofunc + fd
        name = self._cstring(self._funcnames + h[1], self._funcnames, self._funcnames_end, "function name")
        f = _Func(i, entry, end, name, h[2], h[3], h[4], inl_off, inltree)
        cache[i] = f
        if len(cache) > _FUNC_CACHE:
            cache.popitem(last=False)
        return f

    def _value(self, f: _Func, table: int, pc: int) -> int:
        """The value of pc-value table ``table`` (_FILE, _LINE or _INL) of ``f`` at ``pc``."""
        if self.native:
            try:
                return native.value(self.pc_index, self.buf, f.index, table, pc)
            except ValueError as exc:
                raise PclntabError(str(exc)) from None
        off = (f.file_off, f.line_off, f.inl_off)[table]
        if f.decoded is None:
            return value_at(self.buf, self._pctab, self._pctab_end, off, f.entry, pc, self.quantum)
        ends, vals = f.decoded[off]
        k = bisect_right(ends, pc)
        return vals[k] if k < len(vals) else -1

    def _file(self, f: _Func, fno: int) -> str:
        if fno < 0:
            return ""
        # uint32 arithmetic, as debug/gosym: a function without a compilation unit (cu_offset ^0: a
        # linker marker such as go:textfipsstart, Go 1.24+) wraps around to the table's start, and
        # an index past the table makes Go's slice panic, which addr2line recovers as "".
        p = self._cutab + ((f.cu_offset + fno) * 4 & 0xFFFFFFFF)
        if p + 4 > self._limit:
            return ""
        name_off = struct.unpack_from("<I", self.buf, p)[0]
        if name_off == 0xFFFFFFFF:
            return ""
        return self._cstring(self._filetab + name_off, self._filetab, self._filetab_end, "file name")

    def _file_line(self, f: _Func, pc: int) -> tuple[str, int]:
        return self._file(f, self._value(f, _FILE, pc)), self._value(f, _LINE, pc)

    # --- the native index --------------------------------------------------------------------

    @property
    def pc_index(self):
        """The C decoder's index of every function's pc-value tables (a bytes-like object), decoded
        now if none was adopted. Only on the native path (``self.native``)."""
        if self._index is None:
            self._entries_list()  # the order check: the index bisects the same entries
            try:
                self._index = native.build_index(self.buf, self.text_start, self._pcln, self._limit, self.nfunc,
                                                 self._func_hdr, self._pctab, self._pctab_end, self._cutab,
                                                 self.quantum)
            except ValueError as exc:
                raise PclntabError(str(exc)) from None
            self.index_source = "built"
        return self._index

    def index_layout(self) -> tuple[int, ...]:
        """What an index must say about the table to be this table's: (text_start, pctab, pctab_end,
        cutab, limit, nfunc, quantum)."""
        return (self.text_start, self._pctab, self._pctab_end, self._cutab, self._limit, self.nfunc, self.quantum)

    def raw_bytes(self, whole: bool = False) -> memoryview:
        """The function table's bytes (entry and record offsets of every function), or with
        ``whole`` the whole pclntab's: what tells one build's table from another's
        (lgf.golang.pclntab_cache keys on it). Release the view (``with``) before :meth:`close`."""
        with memoryview(self.buf) as view:
            if whole:
                return view[self._hdr:self._limit]
            return view[self._pcln:self._pcln + (2 * self.nfunc + 1) * 4]

    def adopt_index(self, index, source: str, owner=None) -> None:
        """Use ``index`` (made by :attr:`pc_index` in this or another process) instead of decoding.

        Checked first, in C (every range inside the index) and against this table's layout, so a
        damaged or foreign index raises :class:`PclntabError` and is never used. ``owner`` is
        closed by :meth:`close` (the mapping the index lives in); ``source`` becomes
        :attr:`index_source`.
        """
        if not self.native:
            raise PclntabError("no C decoder: an index cannot be used")
        try:
            native.check_index(index, self.buf)
        except ValueError as exc:
            raise PclntabError(str(exc)) from None
        got = _INDEX_HEADER.unpack_from(index)
        if (*got[1:6], got[6], got[8]) != self.index_layout():
            raise PclntabError("pc-value index of another binary (its layout differs)")
        self._entries_list()
        if self._index_owner is not None:
            self._index_owner.close()
        self._index, self._index_owner, self.index_source = index, owner, source

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

    def addr2line_text(self, lines: bytes) -> bytes:
        """What ``go tool addr2line`` prints for ``lines`` (input lines, each ended by a newline),
        parsing and printing included, in one C call: the batch path of ``lgf symbolize --addr2line``.

        Only on the native path. A PC in a damaged function raises :class:`PclntabError` whose
        ``partial`` holds the output for the lines before it.
        """
        out, error = native.addr2line_text(self.pc_index, self.buf, lines, self._funcnames, self._funcnames_end,
                                           self._filetab, self._filetab_end)
        if error is not None:
            exc = PclntabError(error)
            exc.partial = out
            raise exc
        return out

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
            ix = self._value(t, _INL, at) if t.inl_off is not None else -1
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
