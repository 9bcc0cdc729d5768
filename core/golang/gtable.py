"""Every goroutine of a process, read in bulk from the memory pages that hold them.

Why: the goroutine sampler reads some fields of every ``g`` struct of a target many times a
second. Read one ``g`` at a time, a process with 100,000 goroutines costs about 60 ms of kernel
time per pass on these VMs (``process_vm_readv`` pins a page for every remote iovec: about 0.6 us
each) and as much again in Python to unpack 100,000 records: passes 250 ms apart, longer than the
stalls lgf looks for. Measured here (bench/bench_many_goroutines.py, Go 1.25, 100,001 goroutines
448 bytes apart in 11,100 pages):

    one iovec per g (48 bytes)     55 ms      one iovec per page (4 KiB)   12 ms
    decoding with struct, 100k    ~150 ms      decoding with numpy           ~3 ms

So this module reads whole pages (each pinned once, whatever it holds) into one reused buffer, and
decodes the fields of all gs at once with numpy. It can also read only some pages (the sampler's
*hot* pages, where something changed lately), for passes that cost what changed, not what exists.

``runtime.allgs`` only grows (a g struct is never freed, only reused by a later goroutine), so the
addresses are re-read only when its length or array changes, and a g keeps its index for the
life of the process.

Nothing is guessed: a read that comes back short (a page unmapped meanwhile, the process gone)
raises :class:`lgf.golang.runtime_reader.Unreadable` like every other read.
"""

from __future__ import annotations

import ctypes
import struct

import numpy as np

from .gstatus import G_SCAN
from .runtime_reader import IOV_MAX, Unreadable, read_iovecs

PAGE = 4096

_DTYPES = {"B": np.uint8, "I": np.uint32, "Q": np.uint64}


class GoroutineTable:
    """The g structs of one process (``reader``: :class:`lgf.golang.runtime_reader.RuntimeReader`)
    and the ``fields`` read of each: ``(name, offset, letter)`` with letter ``B``, ``I`` or ``Q``
    (naturally aligned, as the runtime lays them out)."""

    def __init__(self, reader, fields: list[tuple[str, int, str]], max_goroutines: int):
        self.reader = reader
        self.fields = [(name, off, letter) for name, off, letter in fields]
        for name, off, letter in self.fields:
            if letter not in _DTYPES or off % struct.calcsize(letter):
                raise Unreadable(f"unexpected_layout:{name}")
        self.lo = min(off for _n, off, _l in self.fields)
        self.hi = max(off + struct.calcsize(letter) for _n, off, letter in self.fields)
        self.max_goroutines = max_goroutines
        self.gs = np.zeros(0, dtype=np.uint64)
        """Address of each g, in ``runtime.allgs`` order (its index never changes)."""
        self._sorted = np.zeros(0, dtype=np.uint64)
        self._sorted_idx = np.zeros(0, dtype=np.int64)
        """:attr:`gs` sorted, and the index of each (:meth:`index_of` without a 100 MB dict)."""
        self._allgs = (0, 0)
        self.pages = np.zeros(0, dtype=np.uint64)
        """Addresses of the pages holding the gs' fields, sorted."""
        self.first_page = np.zeros(0, dtype=np.int64)
        """Index in :attr:`pages` of the page each g's fields begin in (they may run into the next)."""
        self.last_page = np.zeros(0, dtype=np.int64)
        self._in_page = np.zeros(0, dtype=np.int64)
        """Where each g's first field lies in its page."""
        self._by_page = np.zeros(0, dtype=np.int64)
        """g indexes sorted by their first page."""
        self._page_start = np.zeros(1, dtype=np.int64)
        self._all_pages = self._all_gs = np.zeros(0, dtype=np.int64)
        self._at_all: list = []
        self._local = np.zeros((0, 2), dtype=np.uint64)
        self._fit_buffer(1)
        self._header = ctypes.create_string_buffer(16)
        self._header_local = np.array([[ctypes.addressof(self._header), 16]], dtype=np.uint64)
        self._header_remote = np.array([[reader.addr("runtime.allgs"), 16]], dtype=np.uint64)

    def _fit_buffer(self, slots: int) -> None:
        """A buffer of at least ``slots`` pages (at most ``IOV_MAX``: a read is made in chunks of
        that many). Sized to the process, not to the largest chunk: 4 MiB per table, zeroed, was
        most of lgf's memory on a host of many small Go services (1.1 GB at 200 of them, measured
        with bench/bench_many_processes.py)."""
        slots = min(max(slots, 1), IOV_MAX)
        if len(self._local) >= slots:
            return
        self._buf = ctypes.create_string_buffer(slots * PAGE)
        self._local = np.empty((slots, 2), dtype=np.uint64)
        """The buffer's page slots, as (address, length) iovec pairs."""
        self._local[:, 0] = ctypes.addressof(self._buf) + np.arange(slots, dtype=np.uint64) * PAGE
        self._local[:, 1] = PAGE
        self._views = {letter: np.frombuffer(self._buf, dtype=dtype) for letter, dtype in _DTYPES.items()}
        """The buffer as u8, u32 and u64 (fields are naturally aligned, and so is each page slot)."""

    # -- the addresses ----------------------------------------------------------------------------

    def refresh(self) -> int:
        """Re-read ``runtime.allgs`` (two small reads when it did not change); returns how many of
        the gs known before keep their index (all of them, unless allgs was not append-only).
        Raises ``Unreadable("too_many")`` past ``max_goroutines``."""
        r = self.reader
        read_iovecs(r, self._header_local, self._header_remote, 1, 16)  # (the slice header, no copies)
        ptr, length = struct.unpack_from("<QQ", self._header)
        if length > self.max_goroutines:
            raise Unreadable("too_many")
        if (ptr, length) == self._allgs:
            return len(self.gs)
        gs = np.frombuffer(r.read(ptr, 8 * length), dtype=np.uint64) if length else np.zeros(0, np.uint64)
        known = len(self.gs)
        if known and (len(gs) < known or not np.array_equal(gs[:known], self.gs)):
            known = 0  # not append-only after all (never seen so far): every index anew
        self._allgs = (ptr, length)
        changed = len(gs) != known or not known
        self.gs = gs.copy()
        if changed:
            self._sorted_idx = np.argsort(self.gs, kind="stable")
            self._sorted = self.gs[self._sorted_idx]
            self._plan()
        return known

    def index_of(self, addrs) -> np.ndarray:
        """Indexes of the g structs at ``addrs`` (addresses not in ``allgs`` are left out)."""
        want = np.asarray(list(addrs), dtype=np.uint64)
        if len(want) == 0 or len(self._sorted) == 0:
            return np.zeros(0, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._sorted, want), len(self._sorted) - 1)
        return self._sorted_idx[at[self._sorted[at] == want]]

    def _plan(self) -> None:
        """Which pages hold the fields, and where each g's fields land in the buffer."""
        lo_addr = self.gs + np.uint64(self.lo)
        hi_addr = self.gs + np.uint64(self.hi - 1)
        first = lo_addr & ~np.uint64(PAGE - 1)
        last = hi_addr & ~np.uint64(PAGE - 1)
        self.pages = np.unique(np.concatenate([first, last]))
        self._fit_buffer(len(self.pages))
        self.first_page = np.searchsorted(self.pages, first).astype(np.int64)
        self.last_page = np.searchsorted(self.pages, last).astype(np.int64)
        self._in_page = (lo_addr & np.uint64(PAGE - 1)).astype(np.int64)
        self._all_pages = np.arange(len(self.pages))
        self._all_gs = np.arange(len(self.gs))
        base_all = self.first_page * PAGE + self._in_page if len(self.pages) <= IOV_MAX else None
        self._at_all = [(name, letter, (base_all + (off - self.lo)) // np.dtype(_DTYPES[letter]).itemsize)
                        for name, off, letter in self.fields] if base_all is not None else []
        """Where each field of each g is in the buffer (in its dtype's units) when every page is read
        in one chunk."""
        self._by_page = np.argsort(self.first_page, kind="stable")
        self._page_start = np.searchsorted(self.first_page[self._by_page], np.arange(len(self.pages) + 1))
        """The gs whose fields begin in page ``p``: ``_by_page[_page_start[p]:_page_start[p + 1]]``."""
        # A g whose fields run into the next page needs that page right after its own in the
        # buffer: true when both pages are consecutive in memory (a g struct is one object).
        if np.any(self.pages[self.last_page] - self.pages[self.first_page] > PAGE):
            raise Unreadable("unexpected_layout")

    # -- the reads --------------------------------------------------------------------------------

    def read(self, pages: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Read every page (``pages=None``) or the pages at the sorted indexes ``pages``; returns
        the indexes of the gs read whole and each field's values for them.

        In chunks of ``IOV_MAX`` pages, one ``process_vm_readv`` each, into one buffer (4 MiB at most)
        decoded before the next chunk: copied into a 45 MB buffer instead, the pages of 100,000
        gs cost three times as much (37 ms against 12 ms here: the copy misses the caches)."""
        if pages is None and len(self.pages) <= IOV_MAX:  # a small process: one read, every g
            self._read_pages(self._all_pages)
            return self._all_gs, {name: self._views[letter][at] for name, letter, at in self._at_all}
        idx = self._all_pages if pages is None else pages
        got_parts, col_parts = [], {name: [] for name, _o, _l in self.fields}
        step = IOV_MAX - 1  # each chunk reads one page more: the end of a g that runs into it
        for c in range(0, len(idx), step):
            chunk = idx[c:c + IOV_MAX]
            self._read_pages(chunk)
            mine = chunk[:step]
            # the gs that begin in each page of the chunk, and that page's slot in the buffer
            begin, count = self._page_start[mine], self._page_start[mine + 1] - self._page_start[mine]
            gs = self._by_page[np.repeat(begin - np.cumsum(count) + count, count) + np.arange(int(count.sum()))]
            slot = np.repeat(np.arange(len(mine)), count)
            # a g that runs into the next page needs it read too: in the next slot
            spans = self.last_page[gs] != self.first_page[gs]
            if spans.any():
                after = np.minimum(slot + 1, len(chunk) - 1)
                whole = ~spans | ((slot + 1 < len(chunk)) & (chunk[after] == self.last_page[gs]))
                gs, slot = gs[whole], slot[whole]
            base = slot * PAGE + self._in_page[gs]
            got_parts.append(gs)
            for name, off, letter in self.fields:
                view = self._views[letter]  # (a fancy index copies: the buffer is reused next chunk)
                col_parts[name].append(view[(base + (off - self.lo)) // view.itemsize])
        if not got_parts:
            return np.zeros(0, dtype=np.int64), {name: np.zeros(0, _DTYPES[letter]) for name, _o, letter in self.fields}
        if len(got_parts) == 1:
            return got_parts[0], {name: parts[0] for name, parts in col_parts.items()}
        return np.concatenate(got_parts), {name: np.concatenate(parts) for name, parts in col_parts.items()}

    def _read_pages(self, chunk: np.ndarray) -> None:
        """The pages ``chunk`` (at most ``IOV_MAX`` indexes) into the buffer's first slots."""
        n = len(chunk)
        local, remote = self._local[:n], np.empty((n, 2), dtype=np.uint64)
        remote[:, 0], remote[:, 1] = self.pages[chunk], PAGE
        read_iovecs(self.reader, local, remote, n, n * PAGE)


def goroutine_state_counts(reader, max_goroutines: int) -> dict[tuple[int, int], int]:
    """How many goroutine slots of ``runtime.allgs`` are in each ``(status, waitreason)`` now (the
    sched and poller enrichers' counts): one bulk read of the pages, the table kept with the
    reader for the next call (its plan costs more than the read at 100,000 goroutines)."""
    table = reader.cache.get("gtable.states")
    if table is None or table.max_goroutines != max_goroutines:
        fields = sorted([("atomicstatus", reader.offset("g", "atomicstatus"), "I"),
                         ("waitreason", reader.offset("g", "waitreason"), "B")], key=lambda f: f[1])
        table = reader.cache["gtable.states"] = GoroutineTable(reader, fields, max_goroutines)
    table.refresh()
    _idx, cols = table.read()
    keys = (cols["atomicstatus"] & ~np.uint32(G_SCAN)).astype(np.int64) << 8 | cols["waitreason"]
    values, counts = np.unique(keys, return_counts=True)
    return {(int(v) >> 8, int(v) & 0xFF): int(n) for v, n in zip(values, counts, strict=True)}
