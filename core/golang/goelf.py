"""lgf's one ELF reader: headers, load segments, sections, notes, symbols, relocations, bytes at an address.

Both users of Go binaries read through it: :mod:`lgf.golang.gobinary` (version, probe offsets,
layouts) and :mod:`lgf.golang.pclntab` (the symbolizer). lgf runs as root over other people's
binaries, so this is the single place where offsets read from a file are checked against the
file: every header table, section and load segment is bounds-checked once, when the file is
opened, and a file whose headers describe bytes it does not have is refused then, as truncated
or corrupt. Later reads (:meth:`ElfImage.read`, :meth:`ElfImage.vaddr_to_offset`) only have to
check that an address lies inside a load segment.

Errors: everything here raises :class:`ElfError`, a ``ValueError`` that names the file and says
what is wrong in one line. It belongs to neither caller: ``GoBinary`` turns it into
``TargetRefused`` and ``Pclntab`` into ``PclntabError``, each at its own front door, so this module
needs to know nothing of the two contracts. :class:`NotAnElf` marks a file that is no ELF we read
at all (empty, no ELF magic, big-endian), which discovery passes over quietly.

Works without section headers (``sstrip``-like tools remove them: only segments are left) and on
32- as well as 64-bit little-endian files. Headers are unpacked here with ``struct`` rather than
pyelftools: a hand-written reader opens in microseconds, and the symbol table in milliseconds
where pyelftools builds one Python object per symbol (seconds on a 100k-symbol Go binary).
pyelftools is used for DWARF only (:meth:`ElfImage.dwarf`). The file is memory-mapped, so
opening a 200 MB binary reads only the pages actually looked at.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass

ELF_MAGIC = b"\x7fELF"
ET_EXEC, ET_DYN = 2, 3
EM_X86_64 = 62
PT_LOAD = 1
PF_X, PF_W = 1, 2
SHT_NOTE, SHT_NOBITS = 7, 8
R_X86_64_RELATIVE, R_AARCH64_RELATIVE = 8, 1027
MAX_NOTE_BYTES = 1 << 16
"""Build-id notes are tens of bytes; anything larger is corrupt, and is not read into memory."""
MAX_SECTION_NAME = 4096


class ElfError(ValueError):
    """The file cannot be read as ELF: truncated, corrupt, or an address outside it. Says which file."""


class NotAnElf(ElfError):
    """No ELF file this reader reads: empty, no ELF magic, big-endian or an unknown class."""


@dataclass(frozen=True)
class Section:
    name: str
    addr: int
    offset: int
    size: int
    type: int
    """``sh_type``: ``SHT_NOTE``, ``SHT_NOBITS`` ..."""
    flags: int = 0

    @property
    def has_file_bytes(self) -> bool:
        return self.type != SHT_NOBITS


@dataclass(frozen=True)
class Segment:
    """One PT_LOAD program header: ``filesz`` bytes at ``offset`` in the file map to ``vaddr``."""

    vaddr: int
    offset: int
    filesz: int
    memsz: int
    flags: int

    @property
    def executable(self) -> bool:
        return bool(self.flags & PF_X)

    @property
    def writable(self) -> bool:
        return bool(self.flags & PF_W)


@dataclass(frozen=True)
class Symbol:
    name: str
    value: int
    size: int
    kind: str
    """"func", "object" or "other" (from the ELF symbol type)."""


# Field layouts by ELF class (32 or 64 bit); only the leading fields lgf uses are unpacked.
_EHDR = {64: "<HHIQQQIHHHHHH", 32: "<HHIIIIIHHHHHH"}
_PHDR = {64: ("<IIQQQQQ", 56), 32: ("<IIIIIII", 32)}
_SHDR = {64: ("<IIQQQQ", 64), 32: ("<IIIIII", 40)}
_SYM = {64: ("<IBBHQQ", 24), 32: ("<IIIBBH", 16)}


class ElfImage:
    """A little-endian ELF file, mapped read-only, its headers checked. ``label`` names it in errors.

    ``source`` is a path (mapped here, closed by :meth:`close`), ``bytes``/``bytearray``, or an
    ``mmap`` the caller keeps owning.
    """

    def __init__(self, source: str | os.PathLike | bytes | bytearray | mmap.mmap, label: str | None = None):
        self._owns_map = False
        if isinstance(source, bytes | bytearray | mmap.mmap):
            self.label = label or "<bytes>"
            self.data: bytes | mmap.mmap = bytes(source) if isinstance(source, bytearray) else source
        elif isinstance(source, str | os.PathLike):
            self.label = label or os.fspath(source)
            self.data = self._map(source)
            self._owns_map = True
        else:
            raise TypeError("ElfImage takes a path, bytes or an mmap")
        self.size = len(self.data)
        try:
            self._parse_headers()
        except ElfError:
            self.close()
            raise
        except struct.error as exc:  # a short read the checks above did not foresee: still corrupt
            self.close()
            raise self.refuse(f"corrupt ELF headers ({exc})") from None
        self._symbols: dict[str, Symbol] | None = None
        self._relocs: dict[int, int] | None = None

    def _map(self, path) -> mmap.mmap:
        try:
            with open(path, "rb") as f:  # the mapping outlives the descriptor: no fd held per binary
                if os.fstat(f.fileno()).st_size == 0:
                    raise NotAnElf(f"{self.label}: empty file")
                return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise ElfError(f"{self.label}: cannot read: {exc.strerror or exc}") from None

    def refuse(self, why: str) -> ElfError:
        """An :class:`ElfError` saying ``"<label>: <why>"``."""
        return ElfError(f"{self.label}: {why}")

    def close(self) -> None:
        """Unmap the file if this image mapped it; reads after this raise ``ValueError``."""
        if self._owns_map and isinstance(getattr(self, "data", None), mmap.mmap):
            self.data.close()

    # -- headers ---------------------------------------------------------------------------

    def _parse_headers(self) -> None:
        data = self.data
        if self.size == 0:
            raise NotAnElf(f"{self.label}: empty file")
        if data[:4] != ELF_MAGIC:
            raise NotAnElf(f"{self.label}: not an ELF file")
        if self.size < 52:
            raise self.refuse("truncated ELF header")
        ei_class, ei_data = data[4], data[5]
        if ei_data != 1:
            raise NotAnElf(f"{self.label}: big-endian ELF is not supported")
        if ei_class not in (1, 2):
            raise NotAnElf(f"{self.label}: unknown ELF class {ei_class}")
        self.elf_class = 64 if ei_class == 2 else 32
        self.ptrsize = self.elf_class // 8
        if self.size < (64 if self.elf_class == 64 else 52):
            raise self.refuse("truncated ELF header")
        (self.e_type, self.machine, _, self.entry, phoff, shoff, _, _, phentsize, phnum,
         shentsize, shnum, shstrndx) = struct.unpack_from(_EHDR[self.elf_class], data, 16)
        self.is_pie = self.e_type == ET_DYN
        self.segments = self._read_segments(phoff, phentsize, phnum)
        if not self.segments:
            raise self.refuse("no loadable segment")
        self.sections = self._read_sections(shoff, shentsize, shnum, shstrndx)

    def _table(self, off: int, entsize: int, num: int, need: int, what: str) -> None:
        """Check that a header table of ``num`` entries of ``entsize`` bytes lies in the file."""
        if entsize < need:
            raise self.refuse(f"corrupt ELF {what} (entry size {entsize})")
        if off + entsize * num > self.size:
            raise self.refuse(f"ELF {what} runs past the end of the file (truncated?)")

    def _read_segments(self, off: int, entsize: int, num: int) -> list[Segment]:
        fmt, need = _PHDR[self.elf_class]
        if num == 0:
            return []
        self._table(off, entsize, num, need, "program header table")
        out = []
        for i in range(num):  # num is a 16-bit field: the loop is bounded
            fields = struct.unpack_from(fmt, self.data, off + i * entsize)
            if self.elf_class == 64:
                p_type, flags, offset, vaddr, _, filesz, memsz = fields
            else:
                p_type, offset, vaddr, _, filesz, memsz, flags = fields
            if p_type != PT_LOAD:
                continue
            if offset + filesz > self.size:
                raise self.refuse(f"load segment {i} runs past the end of the file (truncated?)")
            out.append(Segment(vaddr, offset, filesz, memsz, flags))
        return out

    def _read_sections(self, off: int, entsize: int, num: int, strndx: int) -> dict[str, Section]:
        """Sections by name (first wins); empty when the section headers are gone."""
        fmt, need = _SHDR[self.elf_class]
        if num == 0 or off == 0:
            return {}
        self._table(off, entsize, num, need, "section header table")
        raw = [struct.unpack_from(fmt, self.data, off + i * entsize) for i in range(num)]
        names_off = names_end = 0
        if 0 <= strndx < num:
            _, _, _, _, names_off, names_size = raw[strndx]
            names_end = names_off + names_size
        out: dict[str, Section] = {}
        for i, (name_at, typ, flags, addr, offset, size) in enumerate(raw):
            name = self._section_name(names_off + name_at, names_end)
            sec = Section(name, addr, offset, size, typ, flags)
            if sec.has_file_bytes and offset + size > self.size:
                raise self.refuse(f"section {name or i} runs past the end of the file (truncated?)")
            out.setdefault(name, sec)
        return out

    def _section_name(self, start: int, end: int) -> str:
        if not start < min(end, self.size):
            return ""
        stop = self.data.find(b"\0", start, min(end, self.size, start + MAX_SECTION_NAME))
        return bytes(self.data[start:stop]).decode("utf-8", "replace") if stop >= 0 else ""

    # -- sections --------------------------------------------------------------------------

    def section(self, name: str) -> Section | None:
        return self.sections.get(name)

    def section_bytes(self, name: str) -> bytes | None:
        """The contents of section ``name`` (in the file: checked at open), or None."""
        sec = self.sections.get(name)
        if sec is None or not sec.has_file_bytes:
            return None
        return self.data[sec.offset:sec.offset + sec.size]

    # -- addresses -------------------------------------------------------------------------

    def segment_of(self, vaddr: int) -> Segment | None:
        for seg in self.segments:
            if seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
                return seg
        return None

    def vaddr_to_offset(self, vaddr: int, n: int = 1) -> int | None:
        """File offset of the ``n`` bytes at ELF virtual address ``vaddr``, or None unless all of
        them are file bytes of one load segment."""
        for seg in self.segments:
            if seg.vaddr <= vaddr and vaddr + n <= seg.vaddr + seg.filesz and n >= 0:
                return seg.offset + (vaddr - seg.vaddr)
        return None

    def offset_to_vaddr(self, off: int) -> int | None:
        for seg in self.segments:
            if seg.offset <= off < seg.offset + seg.filesz:
                return seg.vaddr + (off - seg.offset)
        return None

    def segment_end_offset(self, off: int) -> int:
        """File offset where the load segment holding ``off`` ends (or the file ends)."""
        for seg in self.segments:
            if seg.offset <= off < seg.offset + seg.filesz:
                return seg.offset + seg.filesz
        return self.size

    def file_offset(self, vaddr: int) -> int:
        """The file offset holding the byte at ``vaddr`` (what a uprobe attaches to)."""
        off = self.vaddr_to_offset(vaddr)
        if off is None:
            raise self.refuse(f"address {vaddr:#x} is not in any loaded part of the file")
        return off

    def read(self, vaddr: int, n: int) -> bytes:
        """``n`` bytes at ``vaddr``; they must all lie in one segment's file bytes."""
        off = self.vaddr_to_offset(vaddr, n)
        if off is None:
            raise self.refuse(f"{n} bytes at {vaddr:#x} are not in the file")
        return bytes(self.data[off:off + n])

    def is_mapped(self, vaddr: int, n: int = 1) -> bool:
        return self.vaddr_to_offset(vaddr, n) is not None

    # -- notes -----------------------------------------------------------------------------

    def notes(self) -> list[tuple[bytes, int, bytes]]:
        """Every ``(name, type, desc)`` in the SHT_NOTE sections (the build ids live here)."""
        found = []
        for sec in self.sections.values():
            if sec.type != SHT_NOTE or sec.size > MAX_NOTE_BYTES:
                continue
            found.extend(parse_notes(bytes(self.data[sec.offset:sec.offset + sec.size])))
        return found

    # -- symbols ---------------------------------------------------------------------------

    @property
    def has_symtab(self) -> bool:
        return ".symtab" in self.sections and self.sections[".symtab"].size > 0

    def symbols(self) -> dict[str, Symbol]:
        """``.symtab`` by name (first definition wins); empty for a stripped binary."""
        if self._symbols is None:
            self._symbols = self._read_symtab()
        return self._symbols

    def _read_symtab(self) -> dict[str, Symbol]:
        symtab, strtab = self.sections.get(".symtab"), self.sections.get(".strtab")
        if symtab is None or strtab is None or symtab.size == 0 or not strtab.has_file_bytes:
            return {}
        fmt, entsize = _SYM[self.elf_class]
        table = self.data[symtab.offset:symtab.offset + symtab.size - symtab.size % entsize]
        strings = self.data[strtab.offset:strtab.offset + strtab.size]
        out: dict[str, Symbol] = {}
        kinds = {1: "object", 2: "func"}
        for entry in struct.iter_unpack(fmt, table):
            if self.elf_class == 64:
                st_name, st_info, _other, shndx, value, size = entry
            else:
                st_name, value, size, st_info, _other, shndx = entry
            if shndx == 0 or st_name >= len(strings):  # undefined, or a name outside the string table
                continue
            end = strings.find(b"\0", st_name)
            name = strings[st_name:end if end >= 0 else len(strings)].decode("utf-8", "replace")
            if name and name not in out:
                out[name] = Symbol(name, value, size, kinds.get(st_info & 0xF, "other"))
        return out

    # -- relocations -----------------------------------------------------------------------

    def relative_relocations(self) -> dict[int, int]:
        """PIE: ``{vaddr: value}`` of the RELATIVE relocations, the pointers the loader fills in
        (the file holds 0 there). Read once (one pass over ``.rela.dyn``), 64-bit files only."""
        if self._relocs is None:
            self._relocs = {}
            for sec in self.sections.values():
                if sec.name not in (".rela.dyn", ".data.rel.ro.rela") or self.elf_class != 64:
                    continue
                if not sec.has_file_bytes:
                    continue
                with memoryview(self.data) as whole, \
                        whole[sec.offset:sec.offset + sec.size - sec.size % 24].cast("Q") as words:
                    for r_off, info, add in zip(words[0::3], words[1::3], words[2::3], strict=True):
                        if info & 0xFFFFFFFF in (R_X86_64_RELATIVE, R_AARCH64_RELATIVE):
                            self._relocs[r_off] = add
        return self._relocs

    # -- DWARF -----------------------------------------------------------------------------

    def dwarf(self):
        """pyelftools' ``DWARFInfo`` for this file (slow: for the few struct offsets lgf needs).

        pyelftools parses the headers again its own way and reports corruption with whatever
        exception its parser hits: callers catch broadly.
        """
        from elftools.elf.elffile import ELFFile

        stream = self.data if isinstance(self.data, mmap.mmap) else _BytesStream(self.data)
        return ELFFile(stream).get_dwarf_info(relocate_dwarf_sections=False)


def parse_notes(blob: bytes) -> list[tuple[bytes, int, bytes]]:
    """Split an ELF note section into ``(name, type, desc)``; stops at the first malformed note."""
    out, pos = [], 0
    while pos + 12 <= len(blob):
        namesz, descsz, ntype = struct.unpack_from("<III", blob, pos)
        pos += 12
        name_end = pos + namesz
        desc_start = pos + (namesz + 3) // 4 * 4
        desc_end = desc_start + descsz
        if desc_end > len(blob):
            break
        out.append((blob[pos:name_end].rstrip(b"\0"), ntype, blob[desc_start:desc_end]))
        pos = desc_start + (descsz + 3) // 4 * 4
    return out


class _BytesStream:
    """The seek/read/tell subset of a file that pyelftools needs, over bytes (no copy per read)."""

    def __init__(self, data: bytes):
        self._view, self._pos = memoryview(data), 0

    def seek(self, pos: int, whence: int = 0) -> int:
        self._pos = pos if whence == 0 else (self._pos + pos if whence == 1 else len(self._view) + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        end = len(self._view) if n is None or n < 0 else self._pos + n
        chunk = bytes(self._view[self._pos:end])
        self._pos += len(chunk)
        return chunk
