"""Go build information (``.go.buildinfo``): is this a Go binary, which Go built it, which module.

Recognising Go by this blob rather than by file name is what lets discovery say "Go" about any
process: every binary the Go linker writes carries it (``go version -m`` prints the same data).
Format, as Go's own ``debug/buildinfo`` reads it: a 32-byte header starting with the magic
``"\\xff Go buildinf:"``, then the pointer size and a flags byte. Since Go 1.18 (flag bit 2) the
Go version and the module info follow inline as varint-length strings; older linkers stored two
pointers to string headers instead, which are followed here too so an old binary is named as
such before it is refused. The module info is wrapped in two 16-byte sentinels, stripped here.

Cost: one section lookup and a few hundred bytes read; no scan unless section headers are gone,
in which case the first 64 KiB of each writable segment are searched, as ``debug/buildinfo`` does.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from lgf.errors import TargetRefused

from .goelf import ElfImage

MAGIC = b"\xff Go buildinf:"
HEADER_SIZE = 32
FLAG_BIG_ENDIAN, FLAG_INLINE = 0x1, 0x2
MAX_STRING = 1 << 20
"""A version or module-info string longer than this is corruption, not information."""
SCAN_BYTES = 64 * 1024
GO_VERSION_RE = re.compile(r"(?:^|devel )go(\d+)\.(\d+)(?:\.(\d+))?")


class NotGoBinary(TargetRefused):
    """The file is no Go executable at all (not ELF, not amd64, no Go build info): discovery in
    "all" mode passes over these quietly, while a refused Go binary is always reported."""


@dataclass
class BuildInfo:
    go_version: str
    """As the binary states it: ``"go1.25.5"`` (may carry a suffix such as ``" X:nocoverageredesign"``)."""
    path: str = ""
    """The main package path (``path`` line)."""
    module_path: str = ""
    module_version: str = ""
    settings: dict[str, str] = field(default_factory=dict)
    """``build`` lines: ``-buildmode``, ``CGO_ENABLED``, ``vcs.revision`` ..."""
    deps: list[tuple[str, str]] = field(default_factory=list)

    @property
    def version_tuple(self) -> tuple[int, int, int]:
        return version_tuple(self.go_version)


def version_tuple(go_version: str) -> tuple[int, int, int]:
    """``"go1.25.5"`` -> ``(1, 25, 5)``; ``"go1.22"`` -> ``(1, 22, 0)``; ``"devel go1.26-abc"`` ->
    ``(1, 26, 0)``; unparsable -> ``(0, 0, 0)``."""
    m = GO_VERSION_RE.search(go_version)
    if not m:
        return (0, 0, 0)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


def read_buildinfo(elf: ElfImage) -> BuildInfo:
    """The build info of ``elf``; raises :class:`NotGoBinary` when it has none, and the reader's
    :class:`~lgf.golang.goelf.ElfError` when the blob is damaged (``GoBinary`` makes both refusals)."""
    blob = _find_blob(elf)
    if blob is None:
        raise NotGoBinary(f"{elf.label}: not a Go binary (no Go build info)")
    if len(blob) < HEADER_SIZE:
        raise elf.refuse("Go build info is truncated")
    ptr_size, flags = blob[14], blob[15]
    if flags & FLAG_INLINE:
        raw_version, pos = _varint_string(blob, HEADER_SIZE, elf)
        raw_modinfo, _ = _varint_string(blob, pos, elf)
    else:
        raw_version, raw_modinfo = _pointer_strings(elf, blob, ptr_size, flags)
    version = raw_version.decode("utf-8", "replace")
    if not version.startswith("go") and not version.startswith("devel"):
        raise elf.refuse(f"Go build info names no Go version ({version[:40]!r})")
    info = BuildInfo(go_version=version)
    _parse_modinfo(_strip_sentinels(raw_modinfo).decode("utf-8", "replace"), info)
    return info


def _find_blob(elf: ElfImage) -> bytes | None:
    sec = elf.sections.get(".go.buildinfo")
    if sec is not None and sec.has_file_bytes:
        data = bytes(elf.data[sec.offset:sec.offset + min(sec.size, SCAN_BYTES)])
        return data if data.startswith(MAGIC) else None
    for seg in elf.segments:  # section headers stripped: search writable data like debug/buildinfo
        if not seg.writable:
            continue
        window = bytes(elf.data[seg.offset:seg.offset + min(seg.filesz, SCAN_BYTES)])
        i = window.find(MAGIC)
        while i >= 0 and i % 16:  # the blob is 16-byte aligned
            i = window.find(MAGIC, i + 1)
        if i >= 0:
            return window[i:]
    return None


def _uvarint(blob: bytes, pos: int, elf: ElfImage) -> tuple[int, int]:
    value = shift = 0
    for _ in range(10):
        if pos >= len(blob):
            break
        b = blob[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
    raise elf.refuse("Go build info has a malformed length")


def _varint_string(blob: bytes, pos: int, elf: ElfImage) -> tuple[bytes, int]:
    n, pos = _uvarint(blob, pos, elf)
    if n > MAX_STRING or pos + n > len(blob):
        raise elf.refuse("Go build info is truncated")
    return blob[pos:pos + n], pos + n


def _pointer_strings(elf: ElfImage, blob: bytes, ptr_size: int, flags: int) -> tuple[bytes, bytes]:
    """Pre-1.18 layout: two pointers to Go string headers (pointer, length)."""
    if ptr_size not in (4, 8):
        raise elf.refuse(f"Go build info has pointer size {ptr_size}")
    end = ">" if flags & FLAG_BIG_ENDIAN else "<"
    fmt = end + ("Q" if ptr_size == 8 else "I")

    def string_at(vaddr: int) -> bytes:
        hdr = elf.read(vaddr, 2 * ptr_size)
        ptr, n = struct.unpack(end + ("QQ" if ptr_size == 8 else "II"), hdr)
        if n > MAX_STRING:
            raise elf.refuse("Go build info string is implausibly long")
        return elf.read(ptr, n) if n else b""

    (vp,) = struct.unpack_from(fmt, blob, 16)
    (mp,) = struct.unpack_from(fmt, blob, 16 + ptr_size)
    return string_at(vp), string_at(mp)


def _strip_sentinels(modinfo: bytes) -> bytes:
    # cmd/go wraps the text in 16 bytes of sentinel on each side; debug/buildinfo strips them so.
    if len(modinfo) >= 33 and modinfo[-17] == 0x0A:
        return modinfo[16:-16]
    return modinfo


def _parse_modinfo(text: str, info: BuildInfo) -> None:
    for line in text.splitlines():
        parts = line.split("\t")
        if parts[0] == "path" and len(parts) > 1:
            info.path = parts[1]
        elif parts[0] == "mod" and len(parts) > 1:
            info.module_path = parts[1]
            info.module_version = parts[2] if len(parts) > 2 else ""
        elif parts[0] == "dep" and len(parts) > 2:
            info.deps.append((parts[1], parts[2]))
        elif parts[0] == "build" and len(parts) > 1:
            key, _, value = parts[1].partition("=")
            info.settings[key] = value
