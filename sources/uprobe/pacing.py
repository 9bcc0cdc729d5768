"""When the goroutine sampler reads each process: in full, light, or not at all this interval.

Why its own module: :mod:`.sampler` reads processes and turns what it reads into stalls; how often
each process is read is a separate question with its own state (``SampledProcess.quiet``,
``watch``, ``quiet_passes``...) and its own measurements (bench/bench_many_processes.py).

Each ``sample_interval`` the sampler makes one *pass* over its processes. Per process:

- a *full* pass (:meth:`GoroutineScan.read <lgf.sources.uprobe.gscan.GoroutineScan.read>`) when
  it is due: every ``sample_interval``, or less often when its pages cost more than ``CPU_BUDGET``;
- in between, a *light* pass (:meth:`Pacer.light_due`): only the gs of parks not yet over the
  threshold and those the wake signal (:mod:`.wakes`) saw woken;
- nothing at all, in a *quiet* process where nothing woke and no park is due to be read again.

Quiet processes (:meth:`Pacer.pace`): a full pass costs about 0.1-0.2 ms of lgf's CPU even in a
process where nothing moves, 50 times a second, so 200 idle services took a core. A process that
``QUIET_PASSES`` full passes in a row find still gets the wake signal and, once it is on, is read
in full every ``quiet_interval`` only. Between those, what woke in any listened process is known
from one lookup of every ring's head a pass (:meth:`lgf.sources.uprobe.wakes.WakeSignal.poll`), so
a quiet process where nothing woke costs nothing between its full passes; one where something
woke is read light (its ring, then the gs it names). A wake the probes cannot name (the
netpoller's first goroutine), a goroutine runnable or a park crossing the threshold brings the
full pass forward; a process that needs ``QUIET_FORCED`` such passes in a row, or has a park over
the threshold or a wait for a P, is not quiet any more and gives the signal back after
``QUIET_LOST_NS``. What only full passes see is seen up to ``quiet_interval`` late: a goroutine
that runs with no wake noted (back from a blocking syscall on exitsyscall's fast path, or running
since before) and parks at once; its park is reported if it lasts the threshold from then.
"""

from __future__ import annotations

import time

from .sampled import SampledProcess

CPU_BUDGET = 0.08
"""At most this share of one CPU per target: the pages a pass reads are steered to it
(:meth:`.gscan.GoroutineScan.steer`); a process whose every pass costs more (its followed parks and
hot pages alone) is sampled less often."""
WAKE_CPU_BUDGET = 0.03
"""The same, in a process whose wakes are noted (:mod:`.wakes`): a goroutine that wakes is read at
the next pass whatever its page, so the pages read in turn are only the safety net."""
WATCH_THRESHOLDS = 4
"""A goroutine seen woken is read every pass for this many thresholds, or until it parks (one that
runs longer before it parks is read with its hot page)."""
MAX_WATCHED = 1024
"""Goroutines woken lately read every pass at most (:meth:`Pacer.take_wakes`)."""
QUIET_PASSES = 5
"""Passes in a row that found nothing at all in a process (no g changed, nothing followed or
runnable: 100 ms of stillness at 20 ms) before its wakes are asked for, and, once they are noted,
it is read in full every ``quiet_interval`` only (:meth:`Pacer.pace`)."""
QUIET_FORCED = 5
"""A quiet process that needed this many full passes in a row before their time (something woke
that only a full pass follows: the netpoller's goroutines of a server taking requests) is not quiet."""
QUIET_LOST_NS = 10_000_000_000
"""A process whose wakes were asked for because it was quiet, and that has not been quiet since for
this long, gives them back (:meth:`lgf.sources.uprobe.wakes.WakeSignal.unwant`): a busy process
would pay a probe hit per wake, from the budget its goroutine tier is armed with, for nothing."""


class Pacer:
    """The sampler's pacing (module docstring): ``tier`` is its
    :class:`lgf.sources.uprobe.handoff.GoroutineTierView`, ``wakes`` the wake signal (None:
    ``wake_signal`` off, and no process is ever quiet)."""

    def __init__(self, interval_ns: int, quiet_interval_ns: int, threshold_ns: int, *, tier, wakes):
        self.interval_ns, self.quiet_interval_ns, self.threshold_ns = interval_ns, quiet_interval_ns, threshold_ns
        self.tier, self.wakes = tier, wakes
        self.woke: dict[int, int] = {}
        """This pass's pids with wakes not taken yet -> a time before them (:meth:`begin_pass`)."""

    def begin_pass(self) -> None:
        """Once a pass, before any process is read: which listened processes had something woken."""
        self.woke = self.wakes.poll() if self.wakes is not None else {}

    def listened(self, pid: int) -> bool:
        """Whether ``pid``'s wakes are noted now."""
        return self.wakes is not None and self.wakes.on(pid)

    def budget(self, pid: int) -> float:
        """The share of a CPU ``pid``'s passes may cost."""
        return WAKE_CPU_BUDGET if self.listened(pid) else CPU_BUDGET

    def light_due(self, pid: int, proc: SampledProcess, now: int) -> bool:
        """Whether a light pass is worth making between two full passes of ``proc``: it follows
        parks not yet over the threshold, or its wakes are noted. In a quiet process, only when
        something woke, a woken g is still watched, or a park could have crossed the threshold."""
        if proc.quiet:  # (first: the usual answer, for most processes of a quiet host, is no)
            due = now - self.threshold_ns
            if not (pid in self.woke or proc.watch
                    or any(not park.over_threshold and park.first_ns <= due for park in proc.parks.values())):
                return False
        if proc.first_pass or self.tier.since(pid) is not None:
            return False
        if proc.light_cost_ns > CPU_BUDGET * (now - proc.last_full_ns):
            return False  # (light passes are paid from the same budget: a busy process waits)
        return self.listened(pid) or any(not park.over_threshold for park in proc.parks.values())

    def quiet(self, proc: SampledProcess) -> bool:
        """Whether the latest full pass of ``proc`` left nothing that light passes cannot follow:
        no park over the threshold (its end is read by full passes), no goroutine runnable or
        waiting for a P (full passes only, ``runq.py``), nothing taken over from the tier, and
        every g struct read each pass (a process read in turn has a pace of its own)."""
        runq_ = proc.runq
        return (not proc.scan.rotating and not proc.taken_over
                and (runq_ is None or (not runq_.queued and not runq_.length))
                and not any(park.over_threshold for park in proc.parks.values()))

    def pace(self, pid: int, proc: SampledProcess, now: int, forced: bool) -> None:
        """After a full pass (``forced``: made before its time, for news a light pass could not
        follow): a process found still ``QUIET_PASSES`` passes in a row asks for its wakes, and once
        they are noted is *quiet*, read in full every ``quiet_interval`` only, while :meth:`quiet`
        holds (module docstring). A park first seen late is reported only if it lasts the
        threshold from then (its lower bound, as always: never invented)."""
        if self.wakes is None or self.quiet_interval_ns <= self.interval_ns or self.tier.since(pid) is not None:
            proc.quiet, proc.quiet_passes = False, 0
            return
        proc.forced = proc.forced + 1 if forced else 0
        if not self.quiet(proc) or proc.forced > QUIET_FORCED:
            proc.quiet, proc.quiet_passes = False, 0
            if proc.wants_wakes and now - proc.quiet_seen_ns > QUIET_LOST_NS:
                proc.wants_wakes = False  # busy since: its wakes would cost it, for nothing
                self.wakes.unwant(pid)
            return
        if not proc.quiet:
            proc.quiet_passes = proc.quiet_passes + 1 if proc.still else 0
            if proc.quiet_passes < QUIET_PASSES:
                return
            if not proc.wants_wakes:
                proc.wants_wakes = True
                self.wakes.want(pid)  # (on at a housekeeping round, a quarter second)
            proc.quiet = self.wakes.on(pid)
        proc.quiet_seen_ns = now
        if proc.quiet:
            proc.interval_ns = max(proc.interval_ns, self.quiet_interval_ns)

    def take_wakes(self, pid: int, proc: SampledProcess) -> bool:
        """The goroutines woken since the wake signal was last read are watched (read every pass,
        their pages hot) for ``WATCH_THRESHOLDS`` thresholds or until they park; a park seen then
        began after the latest poll that found nothing new in ``pid``. Returns whether one woke
        that the probes could not name (noted as g 0: the netpoller's first, uprobe.c
        ``on_injectglist``)."""
        if self.wakes is None:
            return False
        now = time.monotonic_ns()
        if proc.watch:
            proc.watch = {g: w for g, w in proc.watch.items() if w[0] > now}
        before = self.woke.pop(pid, None)
        if before is None:
            return False  # (nothing new at this pass's poll: its ring is not read)
        woken = self.wakes.take(pid)
        if woken is None or not len(woken):
            return False
        unnamed = not woken.all()
        if unnamed:
            woken = woken[woken != 0]
        proc.scan.heat(woken)
        until = now + WATCH_THRESHOLDS * self.threshold_ns
        for g in woken.tolist()[-MAX_WATCHED:]:
            proc.watch[g] = (until, before)
        if len(proc.watch) > MAX_WATCHED:  # the latest woken first: a busy process's others wait their page's turn
            proc.watch = dict(list(proc.watch.items())[-MAX_WATCHED:])
        return unnamed
