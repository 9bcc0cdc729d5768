"""One process's goroutines across the sampler's passes: which pages to read, and what changed.

Why: the sampler (``sampler.py``) must notice a goroutine that parks anew, in a process of 5 or
100,000 goroutines, within about one ``sample_interval``, for a few per cent of one CPU. Reading
is paid per page of g structs (about 3 us each on these VMs, whatever the page holds:
:mod:`lgf.golang.gtable`), so a pass cannot read 100,000 goroutines (11,000 pages) every 20 ms.
It does not need to: a g whose *key fields* (``KEY_FIELDS``) read the same as at its last read is
in the same state, and goroutines parked idle for long (a pool's workers, a server's idle
connections, the dead g structs kept for reuse) do not change for minutes.

So each pass reads:

- the pages of the gs whose park or wait for a P the sampler follows;
- the *hot* pages, where a g changed in the last ``HOT_NS`` (most recently changed first, as many
  as the pass's page quota allows): where goroutines come and go, stalls begin;
- the next *cold* pages in turn (at least ``MIN_COLD_PAGES``), so that every page is read at least
  once a cycle (:attr:`GoroutineScan.cycle_ns`, exported as ``lgf_sampler_cycle_seconds{pid}``).

and hands the sampler only the rows of the gs that changed, are followed, or are runnable. The
page quota is steered so that a pass costs the sampler's budget (:meth:`GoroutineScan.steer`).

The honest consequence (measured, bench/bench_many_goroutines.py): a goroutine active lately
that stalls is seen at threshold + one interval whatever the process's size; one that wakes from a
long idle park in a very big process is read in turn, a cycle of the cold pages taking seconds at
100,000 goroutines. Before it changed nothing read from outside tells it from the 100,000 others:
the sampler's wake signal (:mod:`.wakes`) does, from inside (its pages are made hot, :meth:`heat`).
"""

from __future__ import annotations

import time

import numpy as np

from lgf.golang.gstatus import G_RUNNABLE, G_SCAN
from lgf.golang.gtable import GoroutineTable

HOT_NS = 60_000_000_000
"""A page of g structs is hot for this long after a g in it changed."""

MIN_COLD_PAGES = 16
"""Hot pages, and cold pages, read per pass whatever the quota says (every page is read eventually)."""

KEY_FIELDS = ("atomicstatus", "goid", "trackingSeq", "waitreason")
"""A g whose key fields read the same as at its last read is in the same state: the same park,
wait for a P or run (``trackingSeq`` moves every time a goroutine leaves ``_Grunning``)."""
_NEVER = np.iinfo(np.int64).max


class GoroutineScan:
    """The g structs of one process (``fields``: ``(name, offset, letter)`` in offset order, the
    order of the rows' columns) and what the passes so far saw of each."""

    def __init__(self, reader, fields: list[tuple[str, int, str]], max_goroutines: int):
        self.table = GoroutineTable(reader, fields, max_goroutines)
        self.order = [name for name, _o, _l in fields]
        self.last: dict[str, np.ndarray] = {}
        """Per g (index in ``table.gs``): its key fields at its latest read; ``read_ns``, when that
        read began (for a g new since, when it did not exist yet); ``valid``: false until its
        first read, or when it is to be treated as changed at its next (:meth:`forget`)."""
        self.pages = np.zeros(0, dtype=np.uint64)
        """The table's pages that ``page_hot_until`` is about (they change when allgs grows)."""
        self.page_hot_until = np.zeros(0, dtype=np.int64)
        self.cursor = 0
        """The next cold page to read (they are read in turn)."""
        self.page_quota = MIN_COLD_PAGES * 2
        """Pages a pass may read, hot and cold (:meth:`steer`)."""
        self.cycle_ns = 0
        """How long reading every page once takes now: no g goes unread for longer."""
        self.pages_read = 0
        """Pages the latest pass read."""
        self.rotating = False
        """Whether the latest pass read some pages only, the cold ones in turn (a big process)."""
        self.refreshed_ns = 0
        """When ``runtime.allgs`` was last read."""

    @property
    def goroutines(self) -> int:
        return len(self.table.gs)

    def read(self, followed: list[int], interval_ns: int) -> tuple[list[tuple], dict[int, int], int, int]:
        """One pass: every page (a process's first pass, or a small process), or the pages of the
        ``followed`` gs, the hot ones and the next cold ones. Returns ``(rows, after, began,
        ended)``: ``rows`` as ``read_g_fields`` makes them (``(g, *fields in order)``) for the gs
        that changed since their last read, are followed, or are runnable; ``after[g]``: when the
        read before began, the earliest a change seen now can have happened (0: unknown)."""
        table = self.table
        refreshed = time.monotonic_ns()
        fresh = self._fit(table.refresh(), self.refreshed_ns)
        self.refreshed_ns = refreshed
        follow = table.index_of(followed)
        npages = len(table.pages)
        pages = None
        if not (fresh or npages <= self.page_quota):
            hot = np.flatnonzero(self.page_hot_until > refreshed)
            room = max(self.page_quota - 2 * len(follow), MIN_COLD_PAGES)
            if len(hot) > room:  # the most recently changed first
                hot = hot[np.argsort(self.page_hot_until[hot])[len(hot) - room:]]
            cold = max(MIN_COLD_PAGES, self.page_quota - 2 * len(follow) - len(hot))
            if cold < npages:
                pages = np.unique(np.concatenate([table.first_page[follow], table.last_page[follow], hot,
                                                  (np.arange(cold) + self.cursor) % npages]))
                self.cursor = (self.cursor + cold) % npages
                self.cycle_ns = -(-npages // cold) * interval_ns
        self.rotating = pages is not None
        if pages is None:
            self.cycle_ns = interval_ns
        began = time.monotonic_ns()
        idx, cols = table.read(pages)
        ended = time.monotonic_ns()
        self.pages_read = npages if pages is None else len(pages)
        return (*self._changes(idx, cols, follow, began, ended), began, ended)

    def _changes(self, idx, cols, follow, began: int, ended: int) -> tuple[list[tuple], dict[int, int]]:
        last, table = self.last, self.table
        status = cols["atomicstatus"] & ~np.uint32(G_SCAN)
        moved = last["atomicstatus"][idx] != status
        for name in KEY_FIELDS[1:]:
            moved |= last[name][idx] != cols[name]
        valid = last["valid"][idx]
        pick = moved | ~valid | (status == G_RUNNABLE)
        if len(follow):
            followed = np.zeros(len(table.gs), dtype=bool)
            followed[follow] = True
            pick |= followed[idx]
        prev_read = last["read_ns"][idx]
        last["read_ns"][idx] = began
        if not pick.any():  # the usual pass in a quiet process: nothing moved, nothing followed
            return [], {}
        new = moved | ~valid
        for name in KEY_FIELDS:
            last[name][idx[new]] = (status if name == "atomicstatus" else cols[name])[new]
        last["valid"][idx[new]] = True
        touched = idx[moved & valid]  # a g read for the first time did not move: its page is not hot
        self.page_hot_until[table.first_page[touched]] = ended + HOT_NS
        self.page_hot_until[table.last_page[touched]] = ended + HOT_NS
        gs = table.gs[idx[pick]].tolist()
        rows = list(zip(gs, *(cols[name][pick].tolist() for name in self.order), strict=True))
        return rows, dict(zip(gs, prev_read[pick].tolist(), strict=True))

    def _fit(self, kept: int, refreshed_ns: int) -> bool:
        """Fit the per-g and per-page arrays to the table after ``refresh`` (``kept``: how many
        gs keep their index); returns whether they were made anew (then every page is read).
        A g new since the refresh before (``refreshed_ns``) did not exist then: what it does now
        began after."""
        n, last = len(self.table.gs), self.last
        fresh = not last or kept < len(last["read_ns"])
        if fresh:
            self.last = {name: np.zeros(n, dtype=dtype) for name, dtype in (
                ("atomicstatus", np.uint32), ("goid", np.uint64), ("trackingSeq", np.uint8),
                ("waitreason", np.uint8), ("read_ns", np.int64), ("valid", np.bool_))}
        elif n > len(last["read_ns"]):
            grow = n - len(last["read_ns"])
            self.last = {name: np.concatenate([col, np.full(grow, refreshed_ns if name == "read_ns" else 0,
                                                            dtype=col.dtype)])
                         for name, col in last.items()}
        pages = self.table.pages
        if fresh or self.pages is not pages:
            # New goroutines (allgs grew) may bring new pages: those are hot (read next pass:
            # their gs are new); the others keep what they were.
            hot = np.full(len(pages), _NEVER if not fresh else 0, dtype=np.int64)
            if not fresh and len(self.pages):
                at = np.searchsorted(pages, self.pages)
                keep = (at < len(pages)) & (pages[np.minimum(at, len(pages) - 1)] == self.pages)
                hot[at[keep]] = self.page_hot_until[keep]
                hot[hot == _NEVER] = refreshed_ns + HOT_NS
            self.pages, self.page_hot_until = pages, hot
            self.cursor %= max(len(pages), 1)
        return fresh

    def forget(self, g: int) -> None:
        """Treat ``g`` as changed at its next read, and read its page soon (the sampler left its
        park to the goroutine tier: if the tier is gone by then and the park goes on, the sampler
        follows it again)."""
        idx = self.table.index_of([g])
        if len(idx) and self.last:
            self.last["valid"][idx] = False
            self.page_hot_until[self.table.first_page[idx]] = time.monotonic_ns() + HOT_NS

    def settle(self, g: int, fields: dict[str, int]) -> None:
        """``g`` was read outside a pass (the sampler's light one) with these fields: a pass that
        reads the same finds it unchanged (an idle park judged then is not judged again)."""
        idx = self.table.index_of([g])
        if len(idx) and self.last:
            for name in KEY_FIELDS:
                self.last[name][idx] = fields[name] & ~G_SCAN if name == "atomicstatus" else fields[name]
            self.last["valid"][idx] = True

    def heat(self, gs) -> None:
        """The pages of the g structs at addresses ``gs`` are hot from now (the wake signal saw
        them woken, :mod:`.wakes`: what a goroutine does just after it wakes is the question)."""
        idx = self.table.index_of(gs)
        if len(idx) and len(self.page_hot_until):
            until = time.monotonic_ns() + HOT_NS
            self.page_hot_until[self.table.first_page[idx]] = until
            self.page_hot_until[self.table.last_page[idx]] = until

    def steer(self, cost_ns: int, budget_ns: float) -> None:
        """More pages per pass while passes cost (``cost_ns``, on average) under the budget, fewer
        once they cost more: whatever a page costs on this host and the pass's fixed part (about
        1 ms at 100,000 goroutines here, then 3-7 us a page)."""
        if cost_ns < 0.8 * budget_ns:  # (never past every page: a quota far above it would take
            self.page_quota = min(int(self.page_quota * 1.25) + 1, max(len(self.pages), MIN_COLD_PAGES))  # long to come down)
        elif cost_ns > budget_ns:
            self.page_quota = max(MIN_COLD_PAGES, int(self.page_quota * 0.8))
