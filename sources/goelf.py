"""The ELF side of a Go executable: sections, load segments, notes, symbols, bytes at an address.

lgf runs as root and opens other people's binaries, so everything here treats the file as
untrusted: every offset and size read from it is checked against the file's real size before use,
and any malformed structure becomes :class:`lgf.errors.TargetRefused` with one line saying what
is wrong, never an IndexError deep in a parser.

pyelftools parses the headers (sections, segments); the symbol table is unpacked here with
``struct`` because pyelftools builds one Python object per symbol, which costs seconds on a large
Go binary (100k+ symbols), while ``struct.iter_unpack`` over the mapped table takes milliseconds.
The file is memory-mapped, so opening a 200 MB binary reads only the pages actually looked at.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from lgf.errors import TargetRefused

ELF_MAGIC = b"\x7fELF"
PT_LOAD = "PT_LOAD"
PF_X, PF_W = 1, 2
MAX_NOTE_BYTES = 1 << 16
"""Build-id notes are tens of bytes; anything larger is corrupt, and is not read into memory."""


class NotGoBinary(TargetRefused):
    """The file is no Go executable at all (not ELF, not amd64, no Go build info): discovery in
    "all" mode passes over these quietly, while a refused Go binary is always reported."""


@dataclass(frozen=True)
class Section:
    name: str
    addr: int
    offset: int
    size: int
    type: str
    flags: int = 0

    @property
    def has_file_bytes(self) -> bool:
        return self.type != "SHT_NOBITS"


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


@dataclass(frozen=True)
class Symbol:
    name: str
    value: int
    size: int
    kind: str
    """"func", "object" or "other" (from the ELF symbol type)."""


class ElfImage:
    """An amd64 ELF file, mapped read-only. ``label`` names it in every error message."""

    def __init__(self, source: str | Path | bytes, label: str | None = None):
        self.label = label or (str(source) if not isinstance(source, bytes | bytearray) else "<bytes>")
        if isinstance(source, bytes | bytearray):
            self.data: bytes | mmap.mmap = bytes(source)
        else:
            try:
                with open(source, "rb") as f:  # the mapping outlives the descriptor: no fd held per binary
                    self.data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError:  # mmap refuses an empty file
                raise NotGoBinary(f"{self.label}: empty file") from None
            except OSError as exc:
                raise TargetRefused(f"{self.label}: cannot read: {exc.strerror or exc}") from None
        self.size = len(self.data)
        if self.data[:4] != ELF_MAGIC:
            self.close()
            raise NotGoBinary(f"{self.label}: not an ELF file")
        try:
            self._parse_headers()
        except TargetRefused:
            self.close()
            raise
        except (ELFError, struct.error, ValueError, KeyError, IndexError, AssertionError, TypeError,
                UnicodeDecodeError, AttributeError, OverflowError, EOFError) as exc:
            # pyelftools reports corruption with whichever exception its parser happened to hit.
            self.close()
            raise self.refuse(f"corrupt ELF headers ({type(exc).__name__}: {exc})") from None
        self._symbols: dict[str, Symbol] | None = None

    def refuse(self, why: str) -> TargetRefused:
        return TargetRefused(f"{self.label}: {why}")

    def close(self) -> None:
        if isinstance(getattr(self, "data", None), mmap.mmap):
            self.data.close()

    # -- headers ---------------------------------------------------------------------------

    def _parse_headers(self) -> None:
        stream = self.data if isinstance(self.data, mmap.mmap) else _BytesStream(self.data)
        elf = ELFFile(stream)
        if elf.elfclass != 64 or elf["e_machine"] != "EM_X86_64":
            raise NotGoBinary(f"{self.label}: not an amd64 executable (class {elf.elfclass}, {elf['e_machine']}); "
                              "lgf traces linux/amd64 Go binaries")
        if elf["e_type"] not in ("ET_EXEC", "ET_DYN"):
            raise NotGoBinary(f"{self.label}: not an executable (ELF type {elf['e_type']})")
        self.elf = elf
        self.is_pie = elf["e_type"] == "ET_DYN"
        self.entry = elf["e_entry"]
        self.segments: list[Segment] = []
        for i in range(elf.num_segments()):
            ph = elf._get_segment_header(i)
            if ph["p_type"] != PT_LOAD:
                continue
            if ph["p_offset"] + ph["p_filesz"] > self.size:
                raise self.refuse(f"load segment {i} runs past the end of the file (truncated?)")
            self.segments.append(Segment(ph["p_vaddr"], ph["p_offset"], ph["p_filesz"],
                                         ph["p_memsz"], ph["p_flags"]))
        if not self.segments:
            raise self.refuse("no loadable segment")
        self.sections: dict[str, Section] = {}
        for i in range(elf.num_sections()):
            sh = elf._get_section_header(i)
            name = elf._get_section_name(sh)
            sec = Section(name, sh["sh_addr"], sh["sh_offset"], sh["sh_size"], sh["sh_type"], sh["sh_flags"])
            if sec.has_file_bytes and sec.offset + sec.size > self.size:
                raise self.refuse(f"section {name or i} runs past the end of the file (truncated?)")
            self.sections.setdefault(name, sec)

    # -- bytes -----------------------------------------------------------------------------

    def section_bytes(self, name: str) -> bytes | None:
        sec = self.sections.get(name)
        if sec is None or not sec.has_file_bytes:
            return None
        return self.data[sec.offset:sec.offset + sec.size]

    def segment_of(self, vaddr: int) -> Segment | None:
        for seg in self.segments:
            if seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
                return seg
        return None

    def file_offset(self, vaddr: int) -> int:
        """The file offset holding the byte at ELF virtual address ``vaddr`` (what a uprobe attaches to)."""
        seg = self.segment_of(vaddr)
        if seg is None:
            raise self.refuse(f"address {vaddr:#x} is not in any loaded part of the file")
        return vaddr - seg.vaddr + seg.offset

    def read(self, vaddr: int, n: int) -> bytes:
        """``n`` bytes at ``vaddr``; they must all lie in one segment's file bytes."""
        seg = self.segment_of(vaddr)
        if seg is None or n < 0 or vaddr + n > seg.vaddr + seg.filesz:
            raise self.refuse(f"{n} bytes at {vaddr:#x} are not in the file")
        off = vaddr - seg.vaddr + seg.offset
        return bytes(self.data[off:off + n])

    def is_mapped(self, vaddr: int, n: int = 1) -> bool:
        seg = self.segment_of(vaddr)
        return seg is not None and vaddr + n <= seg.vaddr + seg.filesz

    # -- notes -----------------------------------------------------------------------------

    def notes(self) -> list[tuple[bytes, int, bytes]]:
        """Every ``(name, type, desc)`` in the SHT_NOTE sections (the build ids live here)."""
        found = []
        for sec in self.sections.values():
            if sec.type != "SHT_NOTE" or sec.size > MAX_NOTE_BYTES:
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
        if symtab is None or strtab is None or symtab.size == 0:
            return {}
        table = self.data[symtab.offset:symtab.offset + symtab.size - symtab.size % 24]
        strings = self.data[strtab.offset:strtab.offset + strtab.size]
        out: dict[str, Symbol] = {}
        kinds = {1: "object", 2: "func"}
        for st_name, st_info, _other, shndx, value, size in struct.iter_unpack("<IBBHQQ", table):
            if shndx == 0 or st_name >= len(strings):  # undefined, or a name outside the string table
                continue
            end = strings.find(b"\0", st_name)
            name = strings[st_name:end if end >= 0 else len(strings)].decode("utf-8", "replace")
            if name and name not in out:
                out[name] = Symbol(name, value, size, kinds.get(st_info & 0xF, "other"))
        return out


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
