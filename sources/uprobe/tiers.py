"""The goroutine tier: when it is on in a process, arming it, and its side of the hand-off.

``goroutine_tier`` picks when the per-switch probes are attached to a process: ``"always"`` (from
the start), ``"never"`` (only the cheap tier), or ``"on_stall"``: for a short slice (``arm_slice``,
2 s) after a cheap tier of any lgf source saw a stall there, and only while the process's overhead
budget has credit (:mod:`lgf.sources.uprobe.budget`); detached again when the slice ends or the
credit runs out (:meth:`GoroutineTier.disarm_expired`). Why slices and a budget: a tier armed for a
minute on every stall made a service that stalls once a second pay the whole tier (+25 to +30 %
CPU per request) for ever; slices let the budget, which lgf measures, decide how much exactness a
target can afford. A stall the budget refuses is still reported, by the sampler, with sampled
bounds. The deprecated ``arm_for``, when set, is the old policy: one period that long, no budget.

One arming path: every cheap tier (this source's stop-the-world probes and goroutine sampler, the
tracepoint source's blocking syscalls) calls ``ctx.services.arming.notify_stall(pid)``, and the
source registers :meth:`GoroutineTier.request` there. It arms on a thread of its own, one per pid
at a time: attaching takes 13 ms to 1.8 s under load, and the caller (a sampler pass, a ring buffer
callback) goes on meanwhile, or a park that begins then is seen by neither tier.

The tier's side of the hand-off with the sampler (:class:`lgf.sources.uprobe.handoff.GoroutineTierView`)
reads the BPF wait slots of uprobe.c (``struct wait``, indexed by ``lgf.bpf.constants.wait_slot_index``)
without the lock an attach holds. Before the tier attaches, every open slot of the process is
closed: a park noted in an earlier armed period would otherwise end, with a stale start, when the
tier sees the goroutine (or another on its reused g) run again. When it detaches, the sampler is
handed the process first (``tier_since`` None), then the probes go.
"""

from __future__ import annotations

import threading
import time

from lgf.bpf import constants as bpf_constants

from .budget import Budget
from .handoff import SampledTier
from .probes import TIER_REQUIRED, WAKE_PROBES, goroutine_probes
from .targets import Attached, Targets


class GoroutineTier:
    """The arming policy and the tier's answers to the sampler (see the module docstring)."""

    def __init__(self, options, targets: Targets, log, budget: Budget | None = None):
        self.options, self.targets, self.log = options, targets, log
        self.budget = budget
        """The targets' overhead budgets (None: arm whenever asked)."""
        self.sampler: SampledTier | None = None
        """The cheap tier that hands parks over (with ``on_stall`` and a sample interval)."""
        self.wakes = None
        """The sampler's wake signal (``wakes.WakeSignal``), whose probes a disarm leaves on."""
        self._arming: set[int] = set()
        """Pids whose arming thread runs."""
        self._arming_lock = threading.Lock()

    # -- arming ---------------------------------------------------------------------------------

    def request(self, pid: int) -> None:
        """A cheap tier saw a stall in ``pid`` (registered with ``ctx.services.arming``): arm it on
        a thread of its own, unless one is arming it already. Returns at once."""
        if self.options.goroutine_tier != "on_stall":
            return
        if self.budgeted and not self.budget.allows(pid):
            return  # counted there; the sampler reports this stall, with sampled bounds
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

    @property
    def budgeted(self) -> bool:
        """Whether arming is held to the overhead budget (not with the deprecated ``arm_for``)."""
        return self.budget is not None and self.budget.enabled and not self.options.arm_for

    @property
    def slice_s(self) -> float:
        """How long one arming lasts: ``arm_for`` if set (deprecated), else ``arm_slice``."""
        return (self.options.arm_for or self.options.arm_slice) / 1e9

    def arm(self, pid: int) -> None:
        """Attach the goroutine tier to ``pid`` for one slice (``goroutine_tier = "on_stall"``),
        now, on the calling thread; a stall while armed extends it."""
        if self.options.goroutine_tier != "on_stall":
            return
        with self.targets.lock:
            att = self.targets.attached.get(pid)
            if att is None:
                return
            att.armed_until = time.monotonic() + self.slice_s
            if not att.tier_on():
                self.attach(att)
                # from now: an attach takes up to 1.8 s under load, which must not eat the slice
                att.armed_until = time.monotonic() + self.slice_s
                self.log.info("uprobe: pid %d: goroutine tier armed for %.1f s", pid, self.slice_s)

    def attach(self, att: Attached) -> None:
        """Attach the goroutine tier's probes to ``att`` (the caller holds the targets' lock)."""
        # Every note of this process is stale now: nothing updated its slots while the tier was
        # off, and a goroutine noted then has run since (its park would end with a stale start:
        # a keep-alive read noted before a disarm ended on a reused g as a 2 s "stall" after the
        # next arming), including the parks the sampler holds and reports itself.
        self._forget_all_waits(att)
        # sched_switch first: a park the tier notes is then noted when it begins (a thread that
        # goes idle after its goroutine parks would otherwise note it late, at its next execute).
        self.targets.sync_sched_switch(att.program, attaching=True)
        self.targets.attach_probes(att, goroutine_probes(self.options, att.target.binary),
                                   required=TIER_REQUIRED)
        att.goroutine_tier_seen = True
        self.targets.sync_sched_switch(att.program)
        if att.tier_on():  # complete: the sampler's hand-off time
            att.tier_since = time.monotonic_ns()

    @staticmethod
    def _forget_all_waits(att: Attached) -> None:
        """Close every open BPF wait slot of ``att``'s process (one batch read of the slots:
        about 65 ms for 65,536, paid per arming, beside an attach of 13 ms to 1.8 s)."""
        waits, pid = att.program.bpf[b"waits"], att.target.pid
        try:
            stale = [(k, v) for k, v in waits.items_lookup_batch() if v.tgid == pid and v.kind]
        except Exception:  # noqa: BLE001 - a kernel without batch lookups: the slow walk
            stale = [(k, v) for k, v in waits.items() if v.tgid == pid and v.kind]
        for key, slot in stale:
            slot.kind = 0
            waits[key] = slot

    @staticmethod
    def _open_parks(att: Attached) -> dict[int, tuple[int, int]]:
        """``g -> (start_ns, wait reason)`` of every park of ``att``'s process the tier holds an
        open note of (one batch read of the slots, as :meth:`_forget_all_waits`)."""
        waits, pid = att.program.bpf[b"waits"], att.target.pid
        try:
            slots = waits.items_lookup_batch()
        except Exception:  # noqa: BLE001 - a kernel without batch lookups: the slow walk
            slots = waits.items()
        return {int(v.g): (int(v.start_ns), int(v.reason) & 0xFF) for _k, v in slots
                if v.tgid == pid and v.kind == bpf_constants.WAIT_PARK}

    def disarm_expired(self) -> None:
        """Detach the goroutine tier of every process whose slice ended or whose budget ran out
        (the housekeeper, a few times a second, just after the budget was read)."""
        if self.options.goroutine_tier != "on_stall":
            return
        now = time.monotonic()
        with self.targets.lock:
            for pid, att in list(self.targets.attached.items()):
                if att.tier_on() and (now > att.armed_until or (self.budgeted and self.budget.exhausted(pid))):
                    # The sampler takes over before the detach, not after: detaching takes about
                    # 0.1 s a probe on a loaded host (1 s for the tier), and a park that begins or
                    # ends meanwhile may be missed by a half-detached tier. A park both report
                    # is sent once (the claim, lgf.sources.uprobe.handoff).
                    if att.tier_since is not None:
                        att.tier_periods.append((att.tier_since, time.monotonic_ns()))
                        if self.sampler is not None:  # its parks in progress go on being followed
                            self.sampler.take_over(pid, self._open_parks(att))
                    att.tier_since = None
                    # The wake signal's three stay on (lgf.sources.uprobe.wakes): detached now and
                    # attached again after, a wake in between (~0.1 s a probe) was missed. Every
                    # note is closed first: with on_execute gone, a goroutine noted parked may run
                    # and park again unseen, and on_ready would end the old note, stretched.
                    keep = {fn for _f, fn in WAKE_PROBES} if self.wakes is not None and self.wakes.on(pid) else set()
                    if keep:
                        self._forget_all_waits(att)
                    self.targets.detach_probes(att, [fn for _, fn in goroutine_probes(self.options) if fn not in keep])
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
