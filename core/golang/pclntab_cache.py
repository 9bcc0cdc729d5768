"""lgf's on-disk cache of decoded pc-value tables: one file per build, under ``<spool_dir>/symcache``.

Why: the first lookup in a binary decodes the pc-value tables of all its functions into an index
(:attr:`lgf.golang.pclntab.Pclntab.pc_index`, in C: ~15 ms and ~4 MiB for Go's linker, more for
bigger binaries). A restarted lgf, an ``lgf symbolize`` run beside the running lgf, or a second
process symbolizing the same build reads the index the first one wrote instead: the file is
mapped read-only (its pages are shared through the page cache and count towards no heap), checked,
and used as is; nothing is decoded.

One file per build, ``<digest>.pcidx``: a 64-byte header (magic, format version, payload length,
CRC-32 of the payload, the key), then the index. The key is a SHA-256 of the binary's build id
(Go's, else GNU's) with its pclntab's layout and function table; a binary with no build id is keyed
by its whole pclntab instead, so a rebuilt binary never meets a stale index.

Safety: a file is written whole to a temporary name in the same directory, then renamed into place
(atomic: concurrent writers each rename a complete file, a reader sees an old or a new complete
file, never a half-written one). A file that fails any check (size, CRC, key, the C decoder's own
structure check, the table's layout) is logged, removed and rebuilt. Bounded: after each write the
least recently used files (by mtime, touched on every hit) are removed until the directory holds at
most ``max_bytes``; an index larger than that is used but not stored.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import struct
import tempfile
import time
import zlib
from pathlib import Path

from .pclntab import Pclntab, PclntabError

__all__ = ["CACHE_SUBDIR", "DEFAULT_MAX_BYTES", "IndexCache"]

CACHE_SUBDIR = "symcache"
"""The cache's directory under ``spool_dir``."""
DEFAULT_MAX_BYTES = 256 << 20
"""Bytes of index files kept at most: about 60 builds of Go's linker, 15 of a 100 MB binary."""
SUFFIX = ".pcidx"
_MAGIC = b"LGFPCIX\0"
_VERSION = 1
"""Bumped whenever the index layout in ``_pcvalue.c`` changes: older files are then rebuilt."""
_HEADER = struct.Struct("<8sIIQ32s8x")
"""magic, version, crc32 of the payload, payload length, key; 64 bytes (keeps the payload 8-aligned)."""
_STALE_TMP_S = 3600
"""A temporary file this old belongs to a writer that died: removed when the directory is trimmed."""
_GO_NOTE, _GNU_NOTE = (b"Go", 4), (b"GNU", 3)
"""ELF note (name, type) of Go's build id and of GNU's (as lgf.golang.gobinary reads them)."""

log = logging.getLogger(__name__)


class _Mapping:
    """An index file mapped read-only; the table closes it when it closes."""

    def __init__(self, mm: mmap.mmap) -> None:
        self._mm = mm
        self.view = memoryview(mm)[_HEADER.size:]

    def close(self) -> None:
        self.view.release()
        self._mm.close()


class IndexCache:
    """The pc-value indexes of builds already decoded, in ``directory`` (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.hits = self.misses = self.rebuilt = 0
        """Counts: indexes read from a file, decoded afresh, and decoded because a file was damaged."""
        self.unwritable = ""
        """Why the directory cannot be written, once it failed (logged once; no further attempts)."""

    def attach(self, tab: Pclntab) -> str:
        """Give ``tab`` its index: from the cache file of its build, else decoded now and stored.

        Returns ``tab.index_source``: "cache" or "built". Never raises for the cache's sake (an
        unwritable directory or a damaged file is logged); a damaged binary raises PclntabError.
        """
        if not tab.native:
            return tab.index_source
        key = self.key_of(tab)
        path = self.directory / (key.hex()[:40] + SUFFIX)
        if self._load(path, key, tab, "cache"):
            self.hits += 1
            return tab.index_source
        self.misses += 1
        index = tab.pc_index  # decode (raises PclntabError when the binary's tables are damaged)
        if len(index) + _HEADER.size <= self.max_bytes and not self.unwritable:
            try:
                self._store(path, key, index)
            except OSError as exc:
                self.unwritable = str(exc)
                log.warning("symbol cache %s: cannot store indexes (%s); each process decodes its own",
                            self.directory, exc)
            else:
                # Use the file just written, not the bytes decoded: file-backed pages are shared
                # with other processes and reclaimable, where the bytes would stay on the heap.
                self._load(path, key, tab, "built")
        return tab.index_source

    @staticmethod
    def key_of(tab: Pclntab) -> bytes:
        """What identifies a build's index: SHA-256 of its build id, layout and function table
        (of the whole pclntab when the binary has no build id)."""
        h = hashlib.sha256(repr(tab.index_layout()).encode())
        build_id = _build_id(tab)
        h.update(build_id)
        with tab.raw_bytes(whole=not build_id) as table:
            h.update(table)
        return h.digest()

    # --- reading ------------------------------------------------------------------------------

    def _load(self, path: Path, key: bytes, tab: Pclntab, source: str) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning("symbol cache %s: cannot read (%s)", path, exc)
            return False
        try:
            size = os.fstat(fd).st_size
            if size < _HEADER.size:
                return self._damaged(path, f"{size} bytes, shorter than its header")
            mm = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        except (OSError, ValueError) as exc:
            log.warning("symbol cache %s: cannot map (%s)", path, exc)
            return False
        finally:
            os.close(fd)
        magic, version, crc, length, got_key = _HEADER.unpack_from(mm)
        problem = None
        if magic != _MAGIC or version != _VERSION:
            problem = f"not an index file of this lgf (magic {magic!r}, version {version})"
        elif length != size - _HEADER.size:
            problem = f"truncated: {size - _HEADER.size} bytes of index, the header says {length}"
        elif got_key != key:
            problem = "another build's index under this build's name"
        if problem is None:
            mapping = _Mapping(mm)
            if zlib.crc32(mapping.view) != crc:
                problem = "its checksum does not match: the file is damaged"
            else:
                try:
                    tab.adopt_index(mapping.view, source, owner=mapping)
                except PclntabError as exc:
                    problem = str(exc)
            if problem is not None:
                mapping.close()
        else:
            mm.close()
        if problem is not None:
            return self._damaged(path, problem)
        try:
            os.utime(path)  # recently used: trimmed last
        except OSError:
            pass
        return True

    def _damaged(self, path: Path, problem: str) -> bool:
        log.warning("symbol cache %s: %s; removed, the index is decoded again", path, problem)
        self.rebuilt += 1
        try:
            path.unlink()
        except OSError:
            pass
        return False

    # --- writing ------------------------------------------------------------------------------

    def _store(self, path: Path, key: bytes, index) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        header = _HEADER.pack(_MAGIC, _VERSION, zlib.crc32(index), len(index), key)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=SUFFIX, dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(header)
                f.write(index)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self.trim()

    def trim(self) -> None:
        """Remove the least recently used index files until at most ``max_bytes`` remain (and any
        temporary file a dead writer left behind)."""
        files = []
        now = time.time()
        for entry in os.scandir(self.directory):
            if not entry.name.endswith(SUFFIX):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            if entry.name.startswith(".tmp-"):
                if now - st.st_mtime > _STALE_TMP_S:
                    _unlink_quietly(entry.path)
                continue
            files.append((st.st_mtime, st.st_size, entry.path))
        total = sum(size for _, size, _ in files)
        for _, size, file in sorted(files):
            if total <= self.max_bytes:
                break
            _unlink_quietly(file)
            total -= size


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass  # another lgf removed it first


def _build_id(tab: Pclntab) -> bytes:
    """The Go build id of the table's binary, else its GNU build id, else b""."""
    try:
        notes = tab.elf.notes()
    except ValueError:  # damaged note sections: no build id
        return b""
    gnu = b""
    for name, ntype, desc in notes:
        if (name, ntype) == _GO_NOTE:
            return b"go:" + desc
        if (name, ntype) == _GNU_NOTE and not gnu:
            gnu = b"gnu:" + desc
    return gnu
