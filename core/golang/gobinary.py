"""One Go executable, as the probes and enrichers need it: version, ids, addresses and offsets.

``open_binary(path)`` returns a :class:`GoBinary`, cached by Go build id, so a hundred processes
running the same file cost one parse. Everything the tracing side needs to know about a Go binary
is answered here, each from the most direct source available:

- version and module: ``.go.buildinfo`` (:mod:`lgf.golang.buildinfo`);
- function addresses: ``.symtab``, or the pclntab (:mod:`lgf.golang.pclntab`) when stripped;
- probe offsets and RET sites: the machine code itself, decoded (:mod:`lgf.golang.prologue`);
- struct field offsets: the binary's DWARF, else a per-Go-version table (:mod:`lgf.golang.golayout`);
- wait-reason and STW-reason strings: the binary's own ``runtime.waitReasonStrings`` /
  ``runtime.stwReasonStrings`` arrays, by symbol ("binary"), or found in .data when stripped
  ("binary-scan", the length taken from the table), else the table for its Go version ("table").

A binary whose layout cannot be established raises :class:`lgf.errors.TargetRefused` with one line
``"<path>: <why>"``: not Go, not amd64, corrupt, or a Go version without DWARF that the table does
not know. The ELF reader (:mod:`lgf.golang.goelf`) and the helpers here that read through it raise
its neutral ``ElfError``; :func:`_as_refusal` turns that into ``TargetRefused`` wherever this class
reads the file, so a damaged binary never escapes as another exception type. Cost: opening maps the file and reads headers, notes and build info (milliseconds); the
symbol table, DWARF (about 0.4 s per 2 MB binary) and string tables are read on first use.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from lgf.errors import TargetRefused

from . import golayout

if TYPE_CHECKING:
    from .prologue import Instruction

# prologue and globalrefs disassemble with capstone, whose import costs ~80 ms: imported where
# code is decoded, so that reading a binary's build info or symbols (naming a service, a replay,
# `lgf check`) does not pay for it.
from .buildinfo import NotGoBinary, read_buildinfo
from .goelf import EM_X86_64, ET_DYN, ET_EXEC, ElfError, ElfImage, NotAnElf
from .golayout import DATA_SYMBOLS

__all__ = ["GoBinary", "NotGoBinary", "clear_cache", "open_binary"]

try:  # written by the symbolizer's engineer; needed only for stripped binaries
    from . import pclntab as _pclntab
except ImportError:  # pragma: no cover - absent in early trees
    _pclntab = None

MIN_GO = (1, 19)
"""The oldest Go lgf is tested against (Debian 12 builds its Go services with 1.19); older binaries
are refused (their layouts are unchecked)."""
UNCHECKED_GO = {(1, 20): "lgf has no Go 1.20 toolchain to check its runtime against (1.19 and 1.21 "
                         "are checked)"}
"""Releases inside the supported range that lgf refuses, and why: never traced on a guess."""

PROBE_FUNCTIONS = (
    "runtime.gopark", "runtime.ready", "runtime.execute", "runtime.casgstatus",
    "runtime.entersyscall", "runtime.exitsyscall", "runtime.netpoll", "runtime.gcStart",
    "runtime.gcAssistAlloc", "runtime.stopTheWorldWithSema", "runtime.startTheWorldWithSema",
    "runtime.newproc1", "runtime.goexit1",
)
"""Runtime functions lgf's sources probe or may probe (``sources/uprobe/`` uses execute, ready,
netpoll, gcStart and the two STW functions); ``lgf inspect`` shows where each probe would go.
(``runtime.goready`` is not here: the compiler inlines it into every caller.)"""

STW_FUNCTIONS = ("runtime.stopTheWorldWithSema", "runtime.startTheWorldWithSema")

GO_NOTE_NAME, GO_NOTE_BUILDID = b"Go", 4
GNU_NOTE_NAME, GNU_NOTE_BUILDID = b"GNU", 3


@contextmanager
def _as_refusal() -> Iterator[None]:
    """Re-raise the ELF reader's neutral errors as lgf's refusal of the binary (same message)."""
    try:
        yield
    except NotAnElf as exc:
        raise NotGoBinary(str(exc)) from None
    except ElfError as exc:
        raise TargetRefused(str(exc)) from None


class GoBinary:
    """Facts about one Go executable; build with :func:`open_binary`."""

    def __init__(self, path: str | Path | bytes, label: str | None = None):
        self._memo: dict[str, object] = {}
        self._memo_lock = threading.Lock()
        with _as_refusal():
            self._open(path, label)

    def memo(self, key: str, compute):
        """``compute()``, worked out once per binary and kept with it: a fact other modules derive
        from the binary (``lgf.golang.httpreq``'s field offsets) lives as long as the binary does,
        not in a module's dict. ``compute`` may raise; nothing is kept then."""
        with self._memo_lock:
            if key in self._memo:
                return self._memo[key]
        value = compute()
        with self._memo_lock:
            return self._memo.setdefault(key, value)

    def _open(self, path: str | Path | bytes, label: str | None) -> None:
        self.elf = ElfImage(path, label)
        self.path = self.elf.label
        if self.elf.elf_class != 64 or self.elf.machine != EM_X86_64:
            self.elf.close()
            raise NotGoBinary(f"{self.path}: not an amd64 executable (ELF class {self.elf.elf_class}, "
                              f"machine {self.elf.machine}); lgf traces linux/amd64 Go binaries")
        if self.elf.e_type not in (ET_EXEC, ET_DYN):
            self.elf.close()
            raise NotGoBinary(f"{self.path}: not an executable (ELF type {self.elf.e_type})")
        self.info = read_buildinfo(self.elf)
        # "go1.25.5 X:nocoverageredesign" -> "go1.25.5"; "devel go1.26-abc123 ..." kept whole
        version = self.info.go_version
        self.go_version = version if version.startswith("devel") else version.split()[0]
        self.version_tuple = self.info.version_tuple
        self.module_path = self.info.module_path or self.info.path
        if self.version_tuple == (0, 0, 0):
            raise self.refuse(f"unrecognised Go version {self.go_version!r}")
        if self.version_tuple[:2] < MIN_GO:
            raise self.refuse(f"{self.go_version} is older than go{MIN_GO[0]}.{MIN_GO[1]}, "
                              "the oldest Go lgf supports")
        if self.version_tuple[:2] in UNCHECKED_GO:
            raise self.refuse(f"{self.go_version} is not supported: {UNCHECKED_GO[self.version_tuple[:2]]}")
        self.build_id, self.gnu_build_id = "", ""
        for name, ntype, desc in self.elf.notes():
            if name == GO_NOTE_NAME and ntype == GO_NOTE_BUILDID and not self.build_id:
                self.build_id = desc.decode("utf-8", "replace")
            elif name == GNU_NOTE_NAME and ntype == GNU_NOTE_BUILDID and not self.gnu_build_id:
                self.gnu_build_id = desc.hex()
        self.is_pie = self.elf.is_pie
        self.stripped = not self.elf.has_symtab
        self.has_dwarf = ".debug_info" in self.elf.sections or ".zdebug_info" in self.elf.sections
        self._lock = threading.Lock()
        self._resolved: dict[str, int | None] = {}
        self._layout()  # refuse at open, not at the first probe, when offsets are unknowable

    def refuse(self, why: str) -> TargetRefused:
        return TargetRefused(f"{self.path}: {why}")

    def __repr__(self) -> str:
        return f"<GoBinary {self.path} {self.go_version} build_id={self.build_id[:16]}...>"

    # -- functions ---------------------------------------------------------------------------

    @cached_property
    def _pcln(self):
        if _pclntab is None:
            return None
        try:
            return _pclntab.Pclntab.from_elf(self.elf)  # shares this mapping: no second parse
        except Exception:  # noqa: BLE001 - any failure of another module's parser means "no pclntab"
            return None

    def func_addr(self, name: str) -> int | None:
        """ELF virtual address of function ``name`` (``"runtime.gopark"``), or None if absent.

        Assembly functions are ``name.abi0`` in .symtab but plain ``name`` in the pclntab; either
        spelling finds them.
        """
        sym = self._func_symbol(name)
        if sym is not None:
            return sym.value
        if self.stripped:
            span = self.pcln_spans.get(name.removesuffix(".abi0"))
            return span[0] if span else None
        return None

    def func_size(self, name: str) -> int | None:
        sym = self._func_symbol(name)
        if sym is not None and sym.size:
            return sym.size
        if self.stripped:
            span = self.pcln_spans.get(name.removesuffix(".abi0"))
            return span[1] - span[0] if span else None
        return None

    def _func_symbol(self, name: str):
        symbols = self.elf.symbols()
        for candidate in (name, name + ".abi0"):
            sym = symbols.get(candidate)
            if sym is not None and sym.kind == "func":
                return sym
        return None

    @cached_property
    def pcln_spans(self) -> dict[str, tuple[int, int]]:
        """``{name: (entry, end)}`` from the pclntab (end = next function's entry, padding included)."""
        if self._pcln is None:
            return {}
        spans: dict[str, tuple[int, int]] = {}
        try:
            for name, entry, end in self._pcln.funcs():
                spans.setdefault(name, (entry, end))
        except ValueError:  # PclntabError: a corrupt table gives what was read before the fault
            pass
        return spans

    def _require(self, name: str) -> int:
        addr = self.func_addr(name)
        if addr is None:
            how = "symbol table" if not self.stripped else "pclntab"
            raise self.refuse(f"function {name} not found (looked in the {how})")
        return addr

    def file_offset(self, vaddr: int) -> int:
        """File offset of ``vaddr``: what a uprobe attaches to (``path:offset``)."""
        with _as_refusal():
            return self.elf.file_offset(vaddr)

    def probe_offset(self, name: str) -> int:
        """Bytes from ``name``'s entry to its ``push %rbp`` (Go 1.20 and older: the ``sub $N,%rsp``
        that makes its frame), after the stack-bound check (decoded)."""
        return self.probe_site(name)[0]

    def probe_site(self, name: str) -> tuple[int, Instruction]:
        """``(offset, decoded instruction)`` of :meth:`probe_offset`, for display and checks."""
        from . import prologue

        addr = self._require(name)
        with _as_refusal():
            code = self.elf.read(addr, min(prologue.MAX_PROLOGUE_BYTES, self._bytes_to_segment_end(addr)))
        try:
            return prologue.probe_offset(code, self._guard_offsets())
        except prologue.PrologueError as exc:
            raise self.refuse(f"{name}: prologue not recognised: {exc}") from None

    def ret_offsets(self, name: str) -> list[int]:
        """Offsets from ``name``'s entry of every RET instruction (probe these, never a uretprobe)."""
        from . import prologue

        addr = self._require(name)
        size = self.func_size(name)
        if not size:
            raise self.refuse(f"{name}: size unknown, cannot find its RET instructions")
        try:
            with _as_refusal():
                code = self.elf.read(addr, size)
            return prologue.ret_offsets(code)
        except prologue.PrologueError as exc:
            raise self.refuse(f"{name}: {exc}") from None

    def _bytes_to_segment_end(self, vaddr: int) -> int:
        seg = self.elf.segment_of(vaddr)
        return 0 if seg is None else seg.vaddr + seg.filesz - vaddr

    def _guard_offsets(self) -> tuple[int, ...]:
        offs = tuple(self._fields.get(("g", f)) for f in ("stackguard0", "stackguard1"))
        return tuple(o for o in offs if o is not None) or (0x10, 0x18)

    # -- data --------------------------------------------------------------------------------

    def symbol_addr(self, name: str) -> int | None:
        """ELF address of a runtime global (``"runtime.gcphase"``): from .symtab, or in a stripped
        binary through the runtime code that refers to it (:mod:`lgf.golang.globalrefs`, for the
        globals in ``DATA_SYMBOLS``); None when neither can say."""
        return self._symbol(name)[0]

    def symbol_source(self, name: str) -> str | None:
        """"symtab", "code-refs" or None: where :meth:`symbol_addr` got its answer."""
        return self._symbol(name)[1]

    def _symbol(self, name: str) -> tuple[int | None, str | None]:
        sym = self.elf.symbols().get(name)
        if sym is not None:
            return sym.value, "symtab"
        if not self.stripped or self._table is None:
            return None, None
        with self._lock:
            if name not in self._resolved:
                from . import globalrefs

                refs = self._table.get("data_refs", {}).get(name)
                self._resolved[name] = globalrefs.resolve(refs, self.func_addr, self.func_size, self.elf) \
                    if refs else None
        addr = self._resolved[name]
        return (addr, "code-refs") if addr is not None else (None, None)

    def load_bias(self, pid: int) -> int:
        """How far the kernel moved this binary in process ``pid`` (0 unless PIE).

        Add it to an ELF virtual address to get the runtime address. Read from /proc/PID/maps: the
        mapping of this file at the file offset of the first load segment.
        """
        if not self.is_pie:
            return 0
        first = min(self.elf.segments, key=lambda s: s.offset)
        page = 0x1000
        want_off = first.offset & ~(page - 1)
        try:
            exe_stat = os.stat(f"/proc/{pid}/exe")
            with open(f"/proc/{pid}/maps") as f:
                lines = f.readlines()
        except OSError as exc:
            raise TargetRefused(f"pid {pid}: cannot read its memory map: {exc.strerror}") from None
        for line in lines:
            parts = line.split(None, 5)
            if len(parts) < 5:
                continue
            start = int(parts[0].split("-")[0], 16)
            if int(parts[2], 16) == want_off and int(parts[4]) == exe_stat.st_ino:
                return start - (first.vaddr & ~(page - 1))
        raise TargetRefused(f"pid {pid}: {self.path} is not mapped in the process")

    # -- layout ------------------------------------------------------------------------------

    def _layout(self) -> None:
        """Decide where field offsets and string tables come from; refuse if from nowhere."""
        fields = golayout.dwarf_field_offsets(self.elf) if self.has_dwarf else {}
        key = f"{self.version_tuple[0]}.{self.version_tuple[1]}"
        from .golayout_table import TABLE

        self._table = TABLE.get(key)
        if fields:
            self._fields, self.offset_source = fields, "dwarf"
        elif self._table is not None:
            self._fields = {tuple(k.split(".", 1)): v for k, v in self._table["fields"].items()}
            self.offset_source = "table"
        else:
            known = ", ".join(f"go{k}" for k in TABLE)
            raise self.refuse(f"{self.go_version} has no DWARF and no known layout "
                              f"(table covers {known}); rebuild without -w/strip, or update lgf")

    def field_offset(self, struct: str, field: str) -> int:
        """Byte offset of ``field`` in runtime struct ``struct`` (``("g", "goid")`` -> 152)."""
        struct = struct.removeprefix("runtime.")
        off = self._fields.get((struct, field))
        if off is None:
            raise self.refuse(f"no offset for runtime.{struct}.{field} in {self.go_version} "
                              f"({self.offset_source})")
        return off

    @property
    def field_offsets(self) -> dict[str, int]:
        """Every known ``"struct.field": offset`` of the structs lgf uses."""
        wanted = {(s, f) for s, names in golayout.FIELDS.items() for f in names}
        return {f"{s}.{f}": o for (s, f), o in sorted(self._fields.items()) if (s, f) in wanted}

    def _string_table(self, symbol: str) -> tuple[list[str], str]:
        sym = self.elf.symbols().get(symbol)
        if sym is not None and sym.size:
            with _as_refusal():
                return golayout.read_string_array(self.elf, sym.value, sym.size), "binary"
        short = symbol.removeprefix("runtime.")
        if self._table is not None and self._table.get(short):
            found = golayout.find_string_array(self.elf, symbol, len(self._table[short]))
            if found is not None:
                return found, "binary-scan"
            return list(self._table[short]), "table"
        return [], "none"

    @cached_property
    def _wait_reasons(self) -> tuple[list[str], str]:
        return self._string_table("runtime.waitReasonStrings")

    @cached_property
    def _stw_reasons(self) -> tuple[list[str], str]:
        return self._string_table("runtime.stwReasonStrings")

    @property
    def wait_reasons(self) -> list[str]:
        """Index = the runtime's waitReason value, read from the binary's own array (see module doc)."""
        return self._wait_reasons[0]

    @property
    def stw_reasons(self) -> list[str]:
        """Index = stwReason value (``extra["stw_reason"]``); empty when neither binary nor table has them."""
        return self._stw_reasons[0]

    @property
    def stw_functions(self) -> tuple[str, ...]:
        return tuple(f for f in STW_FUNCTIONS if self.func_addr(f) is not None)

    # -- everything --------------------------------------------------------------------------

    def probe_plan(self, names=PROBE_FUNCTIONS) -> list[dict]:
        """Where a probe on each function would go, or why it cannot."""
        plan = []
        for name in names:
            row: dict = {"function": name, "addr": self.func_addr(name)}
            if row["addr"] is None:
                row["error"] = "not in this binary"
                plan.append(row)
                continue
            try:
                off, ins = self.probe_site(name)
                row.update(offset=off, file_offset=self.file_offset(row["addr"] + off),
                           instruction=str(ins))
                row["ret_offsets"] = self.ret_offsets(name) if self.func_size(name) else None
            except TargetRefused as exc:
                row["error"] = str(exc).removeprefix(f"{self.path}: ")
            plan.append(row)
        return plan

    def facts(self) -> dict:
        """Everything above, JSON-able (``lgf inspect --json``)."""
        return {
            "path": self.path, "go_version": self.go_version, "version_tuple": list(self.version_tuple),
            "module_path": self.module_path, "build_id": self.build_id, "gnu_build_id": self.gnu_build_id,
            "is_pie": self.is_pie, "stripped": self.stripped, "has_dwarf": self.has_dwarf,
            "build_settings": dict(self.info.settings),
            "offset_source": self.offset_source, "field_offsets": self.field_offsets,
            "wait_reasons": self.wait_reasons, "wait_reasons_source": self._wait_reasons[1],
            "stw_reasons": self.stw_reasons, "stw_reasons_source": self._stw_reasons[1],
            "stw_functions": list(self.stw_functions),
            "symbols": {name: self.symbol_addr(name) for name in DATA_SYMBOLS},
            "symbols_source": {name: self.symbol_source(name) for name in DATA_SYMBOLS},
            "probes": self.probe_plan(),
        }


# -- cache ------------------------------------------------------------------------------------

_cache_lock = threading.Lock()
MAX_CACHED = 256
"""Binaries kept parsed. Past this the least recently opened is dropped (its mapping closes when
the last user lets go): a host that outlives many deployments must not pin deleted binaries' disk
space and memory forever."""
_by_build_id: OrderedDict[tuple[str, int], GoBinary] = OrderedDict()
"""Keyed by (Go build id, file size): ``strip`` keeps the build id but drops symbols and DWARF."""
_by_file: OrderedDict[tuple[int, int, int, int], GoBinary] = OrderedDict()


def open_binary(path: str | Path) -> GoBinary:
    """The :class:`GoBinary` for ``path``, shared with every other caller for the same file.

    Cached twice: by (device, inode, size, mtime) so re-opening the same file is a dict lookup,
    and by (Go build id, size) so a copy of the same binary elsewhere shares the parsed facts. Raises
    TargetRefused with ``"<path>: <why>"``.
    """
    path = str(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise TargetRefused(f"{path}: cannot read: {exc.strerror}") from None
    key = (st.st_dev, st.st_ino, st.st_size, int(st.st_mtime_ns))
    with _cache_lock:
        hit = _by_file.get(key)
        if hit is not None:
            _by_file.move_to_end(key)
            return hit
    gb = GoBinary(path)
    with _cache_lock:
        shared_key = (gb.build_id, st.st_size)
        shared = _by_build_id.get(shared_key) if gb.build_id else None
        if shared is not None:
            gb.elf.close()
            gb = shared
            _by_build_id.move_to_end(shared_key)
        elif gb.build_id:
            _by_build_id[shared_key] = gb
        _by_file[key] = gb
        for cache in (_by_file, _by_build_id):
            while len(cache) > MAX_CACHED:
                cache.popitem(last=False)
    return gb


def clear_cache() -> None:
    """Forget every cached binary (tests; a long-lived host after deployments)."""
    with _cache_lock:
        _by_build_id.clear()
        _by_file.clear()


def runtime_function_entries(binary) -> list[int]:
    """Entry addresses of the functions a runtime-owned goroutine can start in: every function of
    package runtime but runtime.main (Go's own isSystemGoroutine rule)."""
    syms = binary.elf.symbols()
    if syms:
        names = {n: s.value for n, s in syms.items() if s.kind == "func"}
    else:  # stripped: the pclntab has every function
        names = {n: span[0] for n, span in binary.pcln_spans.items()}
    return [addr for n, addr in names.items()
            if n.startswith("runtime.") and n not in ("runtime.main", "runtime.handleAsyncEvent")]
