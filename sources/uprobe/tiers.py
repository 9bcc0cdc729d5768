"""The goroutine tier: when it is on in a process, arming it, and its side of the hand-off.

``goroutine_tier`` picks when the per-switch probes are attached to a process: ``"always"`` (from
the start), ``"never"`` (only the cheap tier), or ``"on_stall"``: for ``arm_for`` after a cheap
tier of any lgf source saw a stall there, then detached again (:meth:`GoroutineTier.disarm_expired`).

One arming path: every cheap tier (this source's stop-the-world probes and goroutine sampler, the
tracepoint source's blocking syscalls) calls ``ctx.services.arming.notify_stall(pid)``, and the
source registers :meth:`GoroutineTier.request` there. It arms on a thread of its own, one per pid
at a time: attaching takes 13 ms to 1.8 s under load, and the caller (a sampler pass, a ring buffer
callback) goes on meanwhile, or a park that begins then is seen by neither tier.

The tier's side of the hand-off with the sampler (:class:`lgf.sources.uprobe.handoff.GoroutineTierView`)
reads the BPF wait slots of uprobe.c (``struct wait``, indexed by ``lgf.bpf.constants.wait_slot_index``)
without the lock an attach holds. Before the tier attaches, the slots of the parks the sampler holds
are closed: a park noted in an earlier armed period would otherwise end, with a stale start, when
the tier sees the goroutine run again.
"""

from __future__ import annotations

import threading
import time

from lgf.bpf import constants as bpf_constants

from .handoff import SampledTier
from .probes import TIER_REQUIRED, goroutine_probes
from .targets import Attached, Targets


class GoroutineTier:
    """The arming policy and the tier's answers to the sampler (see the module docstring)."""

    def __init__(self, options, targets: Targets, log):
        self.options, self.targets, self.log = options, targets, log
        self.sampler: SampledTier | None = None
        """The cheap tier that hands parks over (with ``on_stall`` and a sample interval)."""
        self._arming: set[int] = set()
        """Pids whose arming thread runs."""
        self._arming_lock = threading.Lock()

    # -- arming ---------------------------------------------------------------------------------

    def request(self, pid: int) -> None:
        """A cheap tier saw a stall in ``pid`` (registered with ``ctx.services.arming``): arm it on
        a thread of its own, unless one is arming it already. Returns at once."""
        if self.options.goroutine_tier != "on_stall":
            return
        with self._arming_lock:
            if pid in self._arming:
                return
            self._arming.add(pid)
        threading.Thread(target=self._arm_thread, args=(pid,), name=f"lgf-arm-{pid}", daemon=True).start()

    def _arm_thread(self, pid: int) -> None:
        try:
            self.arm(pid)
        except Exception as exc:  # noqa: BLE001 - a failed arming is logged, sampling goes on
            self.log.warning("uprobe: arming pid %d failed: %s", pid, exc)
        finally:
            with self._arming_lock:
                self._arming.discard(pid)

    def arm(self, pid: int) -> None:
        """Attach the goroutine tier to ``pid`` for ``arm_for`` (``goroutine_tier = "on_stall"``),
        now, on the calling thread."""
        if self.options.goroutine_tier != "on_stall":
            return
        with self.targets.lock:
            att = self.targets.attached.get(pid)
            if att is None:
                return
            att.armed_until = time.monotonic() + self.options.arm_for / 1e9
            if not att.tier_on():
                self.attach(att)
                self.log.info("uprobe: pid %d: goroutine tier armed for %.0f s", pid,
                              self.options.arm_for / 1e9)

    def attach(self, att: Attached) -> None:
        """Attach the goroutine tier's probes to ``att`` (the caller holds the targets' lock)."""
        if self.sampler is not None:  # the sampler reports these parks: no stale note may too
            self._forget_waits(att, self.sampler.parked_gs(att.target.pid))
        # sched_switch first: a park the tier notes is then noted when it begins (a thread that
        # goes idle after its goroutine parks would otherwise note it late, at its next execute).
        self.targets.sync_sched_switch(att.program, attaching=True)
        self.targets.attach_probes(att, goroutine_probes(self.options, att.target.binary),
                                   required=TIER_REQUIRED)
        att.goroutine_tier_seen = True
        self.targets.sync_sched_switch(att.program)
        if att.tier_on():  # complete: the sampler's hand-off time
            att.tier_since = time.monotonic_ns()

    def disarm_expired(self) -> None:
        """Detach the goroutine tier of every process whose ``arm_for`` ran out (once a second)."""
        if self.options.goroutine_tier != "on_stall":
            return
        now = time.monotonic()
        with self.targets.lock:
            for pid, att in list(self.targets.attached.items()):
                if att.tier_on() and now > att.armed_until:
                    self.targets.detach_probes(att, [fn for _, fn in goroutine_probes(self.options)])
                    att.tier_since = None  # after: the sampler takes over then
                    self.targets.sync_sched_switch(att.program)
                    self.log.info("uprobe: pid %d: goroutine tier disarmed", pid)

    def armed_count(self) -> int:
        return sum(1 for a in self.targets.attached.values() if a.tier_on())

    # -- the hand-off, as the sampler asks (GoroutineTierView) ---------------------------------------

    def since(self, pid: int) -> int | None:
        att = self.targets.attached.get(pid)
        return att.tier_since if att is not None else None

    def park_start(self, pid: int, g: int) -> int | None:
        return self._wait_start(pid, g, bpf_constants.WAIT_PARK)

    def holds_runnable(self, pid: int, g: int, after_ns: int) -> bool:
        start = self._wait_start(pid, g, bpf_constants.WAIT_RUNNABLE)
        return start is not None and start >= after_ns

    def _wait_start(self, pid: int, g: int, kind: int) -> int | None:
        """Start (CLOCK_MONOTONIC ns) of the open wait of ``kind`` the tier has a note of for
        goroutine ``g`` in ``pid`` (uprobe.c's ``wait_slot``), or None. Called on the sampler's
        thread: no lock (an attach holds it throughout)."""
        att = self.targets.attached.get(pid)
        if att is None:
            return None
        try:
            waits = att.program.bpf[b"waits"]
            slot = waits[waits.Key(bpf_constants.wait_slot_index(pid, g, att.program.constants["MAX_GOROUTINES"]))]
        except Exception:  # noqa: BLE001 - a program closed under us: no note
            return None
        return int(slot.start_ns) if slot.g == g and slot.tgid == pid and slot.kind == kind else None

    @staticmethod
    def _forget_waits(att: Attached, gs: list[int]) -> None:
        """Close the BPF wait slots of goroutines ``gs`` (see the module docstring)."""
        waits, size, pid = att.program.bpf[b"waits"], att.program.constants["MAX_GOROUTINES"], att.target.pid
        for g in gs:
            idx = waits.Key(bpf_constants.wait_slot_index(pid, g, size))
            slot = waits[idx]
            if slot.g == g and slot.tgid == pid and slot.kind:
                slot.kind = 0
                waits[idx] = slot
