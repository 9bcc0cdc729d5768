"""The sampler's wake signal: which goroutines became runnable since the sampler's last pass.

Why: in a process of 100,000 goroutines the sampler (``sampler.py``) cannot read every g struct
every pass (11,000 pages: about 35 ms here); it reads the pages where something changed lately
and the others in turn (``gscan.py``), a turn taking seconds. A goroutine idle since start-up that
wakes and stalls at once (a worker handed its first job, a connection's first request) was seen
only when its page's turn came: 6 to 9 of 10 such stalls of 100 ms were reported at 100,000
goroutines. Nothing read from outside tells which of 100,000 idle goroutines just woke; the
runtime's own scheduler does, at the functions that make a goroutine runnable.

So, in a process big enough that the sampler reads its pages in turn, or one quiet enough that it
reads it in full only every ``quiet_interval`` (``pacing.py``: a process where nothing moves is
read between those passes only when something woke in it), three of the goroutine
tier's probes (uprobe.c's ``on_ready``, ``on_injectglist`` and ``on_newproc``: ``runtime.ready``,
the netpoller's ``injectglist`` and a new goroutine's ``runqput``) are attached on their own, and
write each woken g's address into a ring of ``WAKE_SLOTS`` per CPU (the ``wakes`` map, an entry
per listened process), and move the ring's head, kept with every other ring's in one value (the
``wake_heads`` map, a slot per listened process). Every pass the sampler reads all the heads at
once (:meth:`WakeSignal.poll`: one lookup per program, whatever the number of processes), takes
the gs noted since its last take in the processes whose heads moved (:meth:`WakeSignal.take`), and
reads them first: a goroutine that wakes from a cold page is read within one interval, whatever
the process's size, and a process where nothing woke costs no system call. (Looked up ring by
ring, 200 quiet services cost 10,000 lookups a second to find nothing: 7 % of a core here.) The cold pages are still read in turn, at a smaller share of the budget
(``pacing.WAKE_CPU_BUDGET``): they are the safety net for what the probes do not see (a goroutine
back from a blocking syscall on exitsyscall's fast path, one running for a long time before it
parks).

Cost: a uprobe hit per wake, in the target (about 1-2.5 us here), counted with the goroutine
tier's hits, so the overhead budget (``budget.py``) pays for them: a process whose wakes spend its
credit loses the wake signal (and its tier arming) until the credit is back, and the sampler falls
back on the turn of the cold pages. A big mostly idle process, where the problem is, wakes a few
times a second and pays almost nothing. The probes being the tier's own, an arming only adds the
others and a disarm leaves these three on, so no wake goes unnoted about a slice; their notes in
the tier's wait slots, made while the rest of the tier is off, are cleared at the next arming as
every note is. Needs ``sched_latency`` (on by default), whose probes these are.
"""

from __future__ import annotations

import ctypes
import threading
import time

import numpy as np

from .probes import WAKE_PROBES

WAKE_SLOTS = 256
"""Wakes kept per CPU between two passes (12,800 a second per CPU at a 20 ms pass); more are
lost (counted: ``lgf_sampler_wakes_lost_total``) and left to the turn of the cold pages."""
WAKE_PROCS = 256
"""Processes listened to at once (the map's entries: 2 KiB a CPU each, preallocated)."""
RETRY_S = 10.0
"""After the budget took the signal away, ask again no sooner than this, twice as long after each
time it happens again (up to ``RETRY_MAX_S``): attaching costs lgf about 0.1 s a probe on a loaded
host, and a busy process (Caddy under wrk: thousands of wakes a second) spends its credit in
seconds each time."""
RETRY_MAX_S = 600.0
PROBE_HEADROOM = 200
"""Uprobes the wake signal leaves to the goroutine tier's arming (about 10 a process): BCC opens at
most 1,000 for the whole of lgf, the cheap tier takes 3 a process, and on a host of 200 quiet
services the wake probes took the rest, so no stall could arm the tier (measured)."""


class _Heads:
    """One program's ``wake_heads``: the per-CPU head of every listened process's ring, read in one
    lookup a pass (:meth:`WakeSignal.poll`), so a process where nothing woke costs no system call.
    Each listened process has a slot (its index in the heads), kept until it stops listening."""

    def __init__(self, table):
        from bcc import lib  # (BPF is there: the table is)

        self.lookup, self.fd, self.key = lib.bpf_lookup_elem, table.get_fd(), table.Key(0)
        self.leaf = table.Leaf()
        self.now = np.frombuffer(self.leaf, dtype=np.uint64).reshape(-1, WAKE_PROCS)
        """A view of ``leaf``, per CPU and slot: the heads as the latest :meth:`read` found them."""
        self.taken = np.zeros_like(self.now)
        """The heads each slot's ring was last taken up to (:meth:`WakeSignal.take`)."""
        self.quiet_since = np.zeros(WAKE_PROCS, dtype=np.int64)
        """Per slot, a time before every wake not taken yet (the latest poll that found its heads
        where they were taken up to; CLOCK_MONOTONIC ns)."""
        self.polled_ns = 0
        """When the latest :meth:`read` began."""
        self.free = list(range(WAKE_PROCS - 1, -1, -1))
        self.pids: dict[int, int] = {}
        """slot -> pid, for the slots in use."""

    def read(self) -> bool:
        return self.lookup(self.fd, ctypes.byref(self.key), ctypes.byref(self.leaf)) >= 0

    def current(self) -> np.ndarray:
        """The heads now (a copy, read apart from the sampler's buffer: the housekeeper's thread)."""
        leaf = type(self.leaf)()
        if self.lookup(self.fd, ctypes.byref(self.key), ctypes.byref(leaf)) < 0:
            raise OSError("wake_heads: lookup failed")
        return np.frombuffer(leaf, dtype=np.uint64).reshape(-1, WAKE_PROCS).copy()


class _Ring:
    """One listened process's per-CPU ring, read by :meth:`WakeSignal.take` into a buffer of its
    own (BCC's table lookup made a new one and numpy arrays each time), and only when its heads
    moved."""

    def __init__(self, table, pid: int, heads: _Heads, slot: int):
        from bcc import lib  # (BPF is there: the table is)

        self.lookup, self.fd, self.key, self.leaf = lib.bpf_lookup_elem, table.get_fd(), table.Key(pid), table.Leaf()
        self.rings = np.frombuffer(self.leaf, dtype=np.uint64).reshape(-1, 1 + WAKE_SLOTS)
        """A view of ``leaf``: per CPU, the slot then the wakes."""
        self.heads, self.slot = heads, slot


def constants() -> dict[str, int]:
    """uprobe.c's -D constants for the ``wakes`` map."""
    return {"WAKE_SLOTS": WAKE_SLOTS, "WAKE_PROCS": WAKE_PROCS}


class WakeSignal:
    """Which processes have the wake probes (the sampler asks, :meth:`want`; the housekeeper
    attaches and detaches, :meth:`sync`) and what they noted (:meth:`take`, on the sampler's
    thread)."""

    def __init__(self, targets, budget, stats, log):
        self.targets, self.budget, self.stats, self.log = targets, budget, stats, log
        self._wanted: set[int] = set()
        self._on: dict[int, _Ring] = {}
        """pid -> its ring (pids whose ring exists and whose probes are attached)."""
        self._heads: dict[object, _Heads] = {}
        """program (:class:`lgf.sources.uprobe.program.Program`) -> its rings' heads (:meth:`poll`)."""
        self._slots: dict[int, tuple[_Heads, int]] = {}
        """pid -> its slot in its program's heads, while its ring exists."""
        self._refused_at: dict[int, tuple[float, float]] = {}
        """pid -> (when the budget last took its signal away, how long to wait before asking again)."""
        self._unprobeable: set[int] = set()
        """Pids whose binary lacks a place for one of the probes: never asked again."""
        self._lock = threading.Lock()

    # -- the sampler's side -----------------------------------------------------------------------

    def want(self, pid: int) -> None:
        """The sampler reads ``pid``'s pages in turn, or reads it in full only now and then (a
        quiet process): note its wakes (until it exits, or :meth:`unwant`)."""
        with self._lock:
            self._wanted.add(pid)

    def unwant(self, pid: int) -> None:
        """``pid`` is no longer quiet: stop noting its wakes (its probes would cost it a hit per
        wake, from the budget its goroutine tier is armed with, for nothing the sampler needs)."""
        with self._lock:
            self._wanted.discard(pid)

    def on(self, pid: int) -> bool:
        """Whether ``pid``'s wakes are noted now (its ring exists and its probes are attached)."""
        return pid in self._on

    def poll(self) -> dict[int, int]:
        """The pids in which something woke since their wakes were last taken, each with a time
        before those wakes (CLOCK_MONOTONIC ns: the latest poll that found nothing new there, or
        when it began listening): one lookup of the heads per program (a few, one per Go runtime
        layout), whatever the number of processes. Called once a pass, before :meth:`take` (on the
        sampler's thread)."""
        woke: dict[int, int] = {}
        for heads in list(self._heads.values()):
            if not heads.pids:
                continue
            polled = time.monotonic_ns()
            if not heads.read():
                continue
            moved = (heads.now > heads.taken).any(axis=0)
            for slot in np.flatnonzero(moved).tolist():
                pid = heads.pids.get(slot)
                if pid is not None:
                    woke[pid] = int(heads.quiet_since[slot])
            heads.quiet_since[~moved] = polled
            heads.polled_ns = polled
        return woke

    def take(self, pid: int) -> np.ndarray | None:
        """The gs of ``pid`` woken up to the latest :meth:`poll` (addresses, unsorted, maybe
        repeated), or None when its wake signal is off. Wakes lost to a full ring are counted.
        Its ring is read (one map lookup into a buffer kept for it) only when its heads moved."""
        ring = self._on.get(pid)
        if ring is None:
            return None
        heads, slot = ring.heads, ring.slot
        now, before = heads.now[:, slot].tolist(), heads.taken[:, slot].tolist()
        new = [max(n - b, 0) for n, b in zip(now, before, strict=True)]
        if not any(new):
            return np.zeros(0, dtype=np.uint64)
        if ring.lookup(ring.fd, ctypes.byref(ring.key), ctypes.byref(ring.leaf)) < 0:
            return None  # (detached meanwhile: nothing noted)
        lost = sum(max(n - WAKE_SLOTS, 0) for n in new)
        if lost:
            self.stats.inc("lgf_sampler_wakes_lost_total", lost)
        out: list[int] = []
        for cpu, (head, n) in enumerate(zip(now, new, strict=True)):
            if n:  # (a few per pass: plain ints, numpy's per-call cost was most of a take)
                slots = ring.rings[cpu].tolist()
                out += [slots[1 + i % WAKE_SLOTS] for i in range(head - min(n, WAKE_SLOTS), head)]
        heads.taken[:, slot] = [max(n, b) for n, b in zip(now, before, strict=True)]
        heads.quiet_since[slot] = heads.polled_ns  # (what woke after that poll is for the next take)
        return np.array(out, dtype=np.uint64)

    # -- the housekeeper's side -------------------------------------------------------------------

    def sync(self) -> None:
        """Listen to the processes the sampler wants while their budget has credit, and keep
        the wake probes on those whose goroutine tier is off (the housekeeper, after the
        budget's update)."""
        now = time.monotonic()
        with self.targets.lock:
            with self._lock:
                wanted = set(self._wanted)
            for pid, att in list(self.targets.attached.items()):
                listen = pid in wanted and not self.budget.exhausted(pid)
                if pid in self._on and not listen:
                    if self.budget.exhausted(pid):
                        wait = min(2 * self._refused_at[pid][1], RETRY_MAX_S) if pid in self._refused_at else RETRY_S
                        self._refused_at[pid] = (now, wait)
                        self.log.info("uprobe: pid %d: wake signal off (overhead budget spent); "
                                      "asked again in %.0f s", pid, wait)
                    self.stop(pid)
                elif (listen and pid not in self._on and pid not in self._unprobeable and self._may_ask(pid, now)
                      and self._probes_left() >= PROBE_HEADROOM + len(WAKE_PROBES)):
                    self._start(att)
                elif pid in self._on and not att.tier_on() and not self._probed(att):
                    self._probe(att)  # back after a goroutine tier's slice, which detached them
            for pid in [p for p in self._slots if p not in self.targets.attached]:
                self.stop(pid)

    @staticmethod
    def _probes_left() -> int:
        """Uprobes BCC still lets this process open (1,000 by default, ``BCC_PROBE_LIMIT``, for all
        of lgf's programs together)."""
        try:
            import bcc

            return bcc.BPF.get_probe_limit() - bcc._get_num_open_probes()
        except Exception:  # noqa: BLE001 - another BCC: no limit known
            return PROBE_HEADROOM + len(WAKE_PROBES)

    def _may_ask(self, pid: int, now: float) -> bool:
        refused = self._refused_at.get(pid)
        return refused is None or now - refused[0] >= refused[1]

    def _start(self, att) -> None:
        pid, prog = att.target.pid, att.program
        heads = self._heads.get(prog)
        if heads is None:
            heads = self._heads[prog] = _Heads(prog.bpf[b"wake_heads"])
        if not heads.free:
            self.log.info("uprobe: pid %d: no wake signal (%d processes listened to already)", pid, WAKE_PROCS)
            return
        slot, table = heads.free.pop(), prog.bpf[b"wakes"]
        try:
            # From the slot's heads now on: a slot may have been another process's (its notes
            # before are not this one's), and none of this process's notes can come before its ring.
            heads.quiet_since[slot] = time.monotonic_ns()
            heads.taken[:, slot] = heads.current()[:, slot]
            leaf = table.Leaf()
            for cpu_ring in leaf:
                cpu_ring.slot = slot
            table[table.Key(pid)] = leaf
        except Exception as exc:  # noqa: BLE001 - the map is full (WAKE_PROCS): sampled in turn
            heads.free.append(slot)
            self.log.info("uprobe: pid %d: no wake signal (%s)", pid, exc)
            return
        heads.pids[slot] = pid
        self._slots[pid] = (heads, slot)
        if not att.tier_on() and not self._probe(att):
            return
        # On only once its probes are: a quiet process is read in full only now and then, trusting
        # that whatever wakes in it is noted (every note since the ring was made).
        self._on[pid] = _Ring(table, pid, heads, slot)
        self.stats.set("lgf_sampler_wake_signal", 1, pid=pid)
        self.log.info("uprobe: pid %d: wake signal on (the sampler reads what wakes)", pid)

    @staticmethod
    def _probed(att) -> bool:
        return all(fn in att.probes for _f, fn in WAKE_PROBES)

    def _probe(self, att) -> bool:
        """Attach the wake probes to ``att``: all or none (with the signal on, the sampler reads
        cold pages less often, and a kind of wake it cannot see would be missed longer)."""
        self.targets.attach_probes(att, WAKE_PROBES)
        if self._probed(att):
            return True
        self.stop(att.target.pid)
        self._unprobeable.add(att.target.pid)  # (each failure counted and logged by attach_probes)
        return False

    def stop(self, pid: int) -> None:
        """Detach ``pid``'s wake probes and drop its ring (the caller holds the targets' lock)."""
        was_on = self._on.pop(pid, None) is not None  # first: no pass trusts a signal going away
        att = self.targets.attached.get(pid)
        if att is not None:
            if not att.tier_on():  # (while it is on they are the tier's)
                self.targets.detach_probes(att, [fn for _f, fn in WAKE_PROBES])
            try:
                table = att.program.bpf[b"wakes"]
                del table[table.Key(pid)]
            except Exception:  # noqa: BLE001 - never made, or the program is gone
                pass
        held = self._slots.pop(pid, None)
        if held is not None:  # (after its ring is gone: nothing notes in the slot any more)
            heads, slot = held
            heads.pids.pop(slot, None)
            heads.free.append(slot)
        if was_on:
            self.stats.set("lgf_sampler_wake_signal", 0, pid=pid)

    def forget(self, pid: int) -> None:
        """``pid`` exited (the caller holds the targets' lock, before the target is dropped)."""
        with self._lock:
            self._wanted.discard(pid)
        self.stop(pid)
        self._refused_at.pop(pid, None)
        self._unprobeable.discard(pid)
        self.stats.unset("lgf_sampler_wake_signal", pid=pid)
