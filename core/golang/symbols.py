"""Turn PCs of a Go binary into source frames: one :class:`Symbolizer` per binary, shared.

The :class:`~lgf.golang.pclntab.Pclntab` does the reading; this layer adds what a long-running
process needs: the binary is opened on first use (memory-mapped, so resident memory is only the
pages touched), every answered PC is kept in a bounded LRU (a warm stack is a dict hit per
frame), and :class:`Symbolizers` keeps one instance per file so processes running the same
executable share it. Used by the ``symbolizer`` enricher, its Ray actors and ``lgf symbolize``.

Given an :class:`~lgf.golang.pclntab_cache.IndexCache` (``<spool_dir>/symcache``), a binary's
decoded pc-value tables come from the file an earlier process wrote for the same build, and are
written there when decoded here (:attr:`Symbolizer.index_source` says which happened).

Memory is bounded whatever the number of distinct PCs: the per-PC LRU holds ``cache_size``
answers, the table's function records are an LRU of their own, its decoded names at most the
binary's, and the index one per open binary (mapped from the cache file when there is one).

Also here: :func:`stack_summary`, which picks the program's own functions out of a stack, told
from its dependencies' and the standard library's by the binary's module information (:class:`Modules`).
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

from .pclntab import Frame, Pclntab, PclntabError
from .pclntab_cache import IndexCache

__all__ = ["Frame", "IndexCache", "Modules", "PclntabError", "Symbolizer", "Symbolizers", "frame_dict",
           "modules_of_file", "stack_summary"]

PC_CACHE_SIZE = 16384
"""PCs remembered per binary; an entry is ~200 bytes, so about 3 MiB per binary when full."""


class Symbolizer:
    """PC -> frames for one Go binary. Thread-safe; the file is mapped on first lookup."""

    def __init__(self, path: str | os.PathLike, cache_size: int = PC_CACHE_SIZE,
                 index_cache: IndexCache | None = None) -> None:
        self.path = os.fspath(path)
        self._cache_size = cache_size
        self._index_cache = index_cache
        self._tab: Pclntab | None = None
        self._cache: OrderedDict[tuple[int, bool | None], tuple] = OrderedDict()
        """(pc, is_return_addr) -> frames; (pc, None) -> addr2line's two lines."""
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @classmethod
    def of_image(cls, label: str, data: bytes, cache_size: int = PC_CACHE_SIZE) -> Symbolizer:
        """A symbolizer of a binary's bytes (shipped from elsewhere: its path is not readable
        here); ``label`` names it in errors. Raises PclntabError when the table is unreadable."""
        sym = cls(label, cache_size)
        sym._tab = Pclntab.from_elf(bytes(data))
        return sym

    @property
    def table(self) -> Pclntab:
        """The binary's pclntab, opened now if it was not yet (raises PclntabError); with an index
        cache, its pc-value index is read from the cache (or decoded and stored) at the same time."""
        if self._tab is None:
            tab = Pclntab.from_elf(self.path)
            if self._index_cache is not None:
                try:
                    self._index_cache.attach(tab)
                except PclntabError:
                    tab.close()
                    raise
            self._tab = tab
        return self._tab

    @property
    def index_source(self) -> str:
        """Where the open table's pc-value index came from: "cache" (an earlier process decoded
        it), "built" (decoded here), "" (not yet needed, or the pure-Python path)."""
        return self._tab.index_source if self._tab is not None else ""

    def frames(self, pc: int, is_return_addr: bool = True) -> list[Frame]:
        """Frames at ``pc``, innermost first (inlined calls first); [] if ``pc`` is in no function.

        ``is_return_addr``: ``pc`` came from a stack walk, so ``pc-1`` (the call) is looked up,
        as the Go runtime does. Raises PclntabError when the binary or its table is unreadable.
        """
        key = (pc, is_return_addr)
        with self._lock:
            got = self._hit(key)
            if got is None:
                got = self._keep(key, tuple(self.table.frames(pc, is_return_addr)))
        return list(got)

    def addr2line(self, pc: int) -> tuple[str, str]:
        """The two lines ``go tool addr2line`` prints for ``pc``: function, then ``file:line``."""
        key = (pc, None)
        with self._lock:
            got = self._hit(key)
            if got is None:
                found = self.table.addr2line(pc)
                got = self._keep(key, ("?", "?:0") if found is None else (found[0], f"{found[1]}:{found[2]}"))
        return got

    # The per-PC LRU cache both lookups share; callers hold self._lock (the table is read under it
    # too). No closure per call: a hit is the hot path of every event's stack.

    def _hit(self, key):
        got = self._cache.get(key)
        if got is not None:
            self._cache.move_to_end(key)
            self.hits += 1
        return got

    def _keep(self, key, value):
        self.misses += 1
        self._cache[key] = value
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return value

    def close(self) -> None:
        with self._lock:
            if self._tab is not None:
                self._tab.close()
                self._tab = None
            self._cache.clear()


class Symbolizers:
    """At most ``max_open`` binaries open at once, keyed by the file's identity.

    The key is (device, inode, size, mtime) of the file the path names now, so a binary replaced
    in place by a deploy gets a fresh table, and ``/proc/PID/exe`` of two processes running the
    same executable share one. The least recently used binary is unmapped past the limit.
    """

    def __init__(self, max_open: int = 64, cache_size: int = PC_CACHE_SIZE,
                 index_cache: IndexCache | None = None) -> None:
        self._max_open = max_open
        self._cache_size = cache_size
        self.index_cache = index_cache
        """Shared by every binary's :class:`Symbolizer` (None: indexes are decoded, not stored)."""
        self._open: OrderedDict[tuple, Symbolizer] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str | os.PathLike) -> Symbolizer:
        """The symbolizer of the file at ``path`` (raises OSError if it cannot be stat'ed)."""
        st = os.stat(path)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            sym = self._open.get(key)
            if sym is not None:
                self._open.move_to_end(key)
                return sym
            sym = Symbolizer(path, self._cache_size, self.index_cache)
            self._open[key] = sym
            if len(self._open) > self._max_open:
                _, old = self._open.popitem(last=False)
                old.close()
            return sym

    def grow(self, max_open: int) -> None:
        """Keep at least ``max_open`` binaries open from now on (never fewer than before: a cache
        shared by a host's tiers and enrichers is sized by its most demanding user)."""
        with self._lock:
            self._max_open = max(self._max_open, max_open)

    @property
    def max_open(self) -> int:
        return self._max_open

    def __len__(self) -> int:
        return len(self._open)

    def close(self) -> None:
        with self._lock:
            for sym in self._open.values():
                sym.close()
            self._open.clear()


def frame_dict(frame: Frame) -> dict:
    """A frame in the event contract's form: ``{"func", "file", "line", "pc", "inlined"}``."""
    return {"func": frame.func, "file": frame.file, "line": frame.line, "pc": frame.pc,
            "inlined": frame.inlined}


_GENERIC_ARGS = re.compile(r"\[[^\[\]]*(?:\[[^\[\]]*\][^\[\]]*)*\]")
_NOT_USER_PREFIXES = ("runtime.", "runtime/", "internal/", "vendor/", "type:", "go:", "type..")


def print_name(func: str) -> str:
    """``pkg.F[go.shape.int,...]`` -> ``pkg.F[...]``: what Go's own tracebacks print."""
    return _GENERIC_ARGS.sub("[...]", func) if "[" in func else func


def is_user_func(func: str) -> bool:
    """False for the Go runtime, std internals and linker-made functions; True otherwise.

    ``runtime.*``, ``runtime/...``, ``internal/...``, std's ``vendor/...``, ``type:``/``go:``
    symbols, and the runtime's linkname shims in other packages (``sync.runtime_SemacquireMutex``,
    ``internal/poll.runtime_pollWait``) are where a goroutine waits, not what the user wrote.
    """
    if func.startswith(_NOT_USER_PREFIXES):
        return False
    slash = func.rfind("/")
    dot = func.find(".", slash + 1)
    return not func[dot + 1:].startswith("runtime_") if dot > 0 else True


def package_of(func: str) -> str:
    """``"net/http.(*conn).serve"`` -> ``"net/http"``; ``"main.main.func1"`` -> ``"main"``.

    Go symbol names are the package path, a dot, then the name; dots inside the path's last
    element are escaped (``gopkg.in/yaml%2ev3``), so the first dot after the last slash ends it.
    """
    func = print_name(func)
    slash = func.rfind("/")
    dot = func.find(".", slash + 1)
    return func[:dot] if dot > 0 else func


def short_name(func: str) -> str:
    """``"lgf.test/shop/orders.(*Service).Place"`` -> ``"orders.(*Service).Place"``: ``pkg.(*T).Method``."""
    func = print_name(func)
    cut = func.rfind("/", 0, len(package_of(func)))
    return func[cut + 1:]


@dataclass(frozen=True)
class Modules:
    """Which code is the program's own: its main module and the modules it depends on, from the
    binary's build info (``go version -m``). Everything else is the standard library or Go's."""

    main: str
    deps: tuple[str, ...] = ()

    def tier(self, func: str) -> int:
        """0: the program's own code (package main or the main module); 1: a dependency's;
        2: the standard library's; 3: the runtime's and the linker's (never summarised)."""
        if not is_user_func(func):
            return 3
        pkg = package_of(func)
        if pkg == "main" or _within(pkg, self.main):
            return 0
        return 1 if any(_within(pkg, d) for d in self.deps) else 2


def _within(pkg: str, module: str) -> bool:
    return bool(module) and (pkg == module or pkg.startswith(module + "/"))


def modules_of_file(path: str | os.PathLike) -> Modules | None:
    """The :class:`Modules` of the Go binary at ``path`` (its build info), or None if it has none.
    Cost: the file is mapped and its build info read (well under a millisecond)."""
    from .buildinfo import read_buildinfo
    from .goelf import ElfError, ElfImage

    try:
        elf = ElfImage(path)
    except (OSError, ElfError):
        return None
    try:
        info = read_buildinfo(elf)
    except Exception:  # NotGoBinary, or damaged build info: no module information
        return None
    finally:
        elf.close()
    main = info.module_path if info.module_path not in ("", "command-line-arguments") else ""
    return Modules(main, tuple(dep for dep, _ in info.deps))


def stack_summary(frames: list[dict] | list[Frame], n: int = 3, modules: Modules | None = None) -> list[str]:
    """The top ``n`` distinct functions of the program's own code in a stack (innermost first).

    With ``modules`` (the binary's build info): the program's own frames (package main and the
    main module) as ``pkg.(*T).Method``; too few of them, its dependencies' frames next; none of
    either, the standard library's. Without it, every non-runtime frame counts as the user's.
    When no frame is user code (a runtime-only goroutine, a GC stop), the innermost ``n`` frames
    are given instead, so the summary is never empty for a non-empty stack.
    """
    names = [f["func"] if isinstance(f, dict) else f.func for f in frames]
    if modules is None:
        user = list(dict.fromkeys(print_name(x) for x in names if is_user_func(x)))
        return (user or [print_name(x) for x in names])[:n]
    tiers: tuple[dict[str, None], ...] = ({}, {}, {})
    for name in names:
        tier = modules.tier(name)
        if tier < 3:
            tiers[tier].setdefault(short_name(name), None)
    own, deps, std = (list(t) for t in tiers)
    out = (own + deps)[:n] or std[:n]
    return out or [print_name(x) for x in names][:n]
