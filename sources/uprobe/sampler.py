"""The goroutine sampler: the cheap tier that sees a goroutine stuck on a channel or a lock.

Why: the uprobe source's goroutine tier costs one uprobe hit per goroutine switch, so by default
(``goroutine_tier = "on_stall"``) it is attached to a process only after a cheap tier sees a stall
there. GC stop-the-world probes and the tracepoint source's syscalls do not see a goroutine parked
on a channel, a mutex or a WaitGroup, which are the stalls lgf exists for. This sampler does,
without any probe: every ``sample_interval`` it reads each unarmed target's goroutines from
outside (``runtime.allgs`` through ``process_vm_readv``, :mod:`lgf.golang.runtime_reader`) and
asks for the goroutine tier of a process in which a user goroutine has stayed parked for at least
the threshold (``ctx.services.arming.notify_stall``, the one arming path of every cheap tier).
The target pays nothing: its memory is read by the kernel on lgf's CPU.

How "parked continuously" is known from two snapshots: ``g.trackingSeq`` (a uint8) is bumped by
the runtime every time a goroutine leaves ``_Grunning``, so the same ``(goid, trackingSeq)`` in
``_Gwaiting`` in two samples is one park lasting from the first to the second (a wrap would need
exactly 256 switches in between). ``g.waitsince`` is no help: it is stamped only during GC marking.
The runtime's own goroutines (GC workers, sweeper, finalizer...) are left out by the uprobe
source's own rules: their wait reason, or a start function in package runtime.

Stalls, not waits: when a park first crosses the threshold its stack is walked from outside,
down to the goroutine's start (:mod:`lgf.golang.goroutine_stack`: one read of the used stack,
frame pointers followed in the copy), symbolized and judged by :class:`lgf.idle.IdleRules` (the
host's shared symbol cache and ``[idle]`` rules, ``ctx.services``). Only a stall arms the
goroutine tier and is reported (with ``scope``, ``extra["verdict"]``, ``extra["decided_by"]`` and
``extra["stack_cut"]`` when the walk did not reach the start); an
idle wait (accept loop, keep-alive connection, worker or ticker at its loop head, a main
goroutine sleeping at start-up...) is counted in ``lgf_idle_waits_total{source="sampler",site}``
and not followed any more (its g is looked at again only once it changes), unless ``[idle]
report_idle = true``. A park is judged once (:mod:`.parkjudge`: about one read plus a symbol-cache
hit per frame; the first judgement of a binary opens its pclntab, a few ms), kept out of the
per-sample cost that sets the interval.

Which request: the goroutine tier learns it from a probe the sampler does not have, so a
request-scoped stall's request is found in the parked goroutine's own frames, right after its
labels and while it is still parked (:mod:`lgf.golang.httpserve`: the ``*response`` that
``net/http.(*conn).serve`` keeps across the handler's call, validated or refused), and checked
still parked after. The event carries ``http_method``, ``http_path``,
``extra["http_request_addr"]`` and, when trace_context capture is on
(``services.trace_capture``), ``extra["traceparent"]`` read then ("" when it could not be, so
nothing reads the request later, when its memory may be another's). What was not found is counted
in ``lgf_sampler_request_missing_total{value,reason}``; what was, in
``lgf_sampler_requests_found_total``.

What it reports: the park it saw, once it ends (the goroutine tier, attached mid-park, cannot see
that park's start, so without this report the first stall of an episode would be lost). An
``Event`` with ``extra["stall"] = "park"``, ``extra["precision"] = "sampled"`` and
``extra["sample_interval_ns"]``: ``start_ns`` is the end of the first sample that saw the park and
``end_ns`` the start of the last one, so the duration is a lower bound, short of the truth by at
most two intervals; ``extra["start_after_ns"]`` / ``extra["end_before_ns"]`` are the outer bounds
(the previous and next samples). Only parks whose lower bound reaches the threshold are armed on
and reported, so a park shorter than threshold + one interval may go unseen; anything over the
threshold is never invented.

Never twice, never lost: arming runs on a thread of its own and the sampler goes on sampling
while the tier attaches (13 ms to 1.8 s measured under load), without any lock the attach holds.
What the sampler may ask of the tier is :class:`lgf.sources.uprobe.handoff.GoroutineTierView`:
``since(pid)`` is when the tier became complete. In the first pass after it (the hand-off), a
park the tier holds an open note of, begun since the sample before the
sampler first saw it (``park_start``), is the tier's and dropped; every other park is the
sampler's (kept, or adopted if new). From then on the sampler follows only those gs and adds
none. A park that ends about the hand-off may still reach both tiers: each report of a park
goes through :meth:`GoroutineSampler.claim`, and the second report of one park (same goroutine,
overlapping in time) is dropped, whichever tier sends it.

Cost (figures: bench/bench_many_goroutines.py): the target pays nothing it can notice: its
memory is read by the kernel on lgf's CPU. lgf pays per page of g structs read (about 3 us here,
:mod:`lgf.golang.gtable`) plus about 1 ms a pass at 100,000 goroutines; :mod:`.gscan` reads the
pages where goroutines changed lately every pass and the rest in turn, as many as ``pacing.CPU_BUDGET``
pays for, so a goroutine active lately is seen at threshold + one interval in a process of any
size. One waking from a long idle park in a big process is told by the wake signal
(:mod:`.wakes`: probes where goroutines are made runnable, paid from the overhead budget): the gs
woken since the last pass are *watched*, read every pass until they park (or for 4 thresholds),
and their pages are hot; without it (``wake_signal = false``, or its budget spent) such a
goroutine is seen at threshold + one cycle of the cold pages (``lgf_sampler_cycle_seconds{pid}``).
Between two passes of a process sampled less often than ``sample_interval`` (its pages cost),
*light* passes read only the watched gs and the parks not yet over the threshold, so a park is
seen crossing it at threshold + one ``sample_interval`` whatever the process's size. When the
goroutine tier's slice ends, the parks it saw begin and still holds open are followed by the
sampler from their start (``take_over``), not from its next pass. A park judged idle is not followed: its g is looked at
again only when it changes, so each idle goroutine is judged once (stacks of the same shape are
symbolized and judged once, ``VERDICTS_KEPT``). A process with more than
``sample_max_goroutines`` is not sampled and is named: in the log and in
``lgf_sampler_unwatched{pid}``. A process that exits mid-stall has its stalls reported.
While a process's goroutine tier is armed, the sampler reads only the few g structs whose parks
it still follows (nothing at all when it follows none).

Which process is read when, in full or light (only what woke and the parks not yet over the
threshold), and which is *quiet* (read in full every ``quiet_interval`` only, and between those
only when something woke in it): :mod:`.pacing`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from lgf import Event
from lgf.causes import GC_ASSIST_REASON, INTERNAL_WAIT_REASONS
from lgf.golang.gobinary import runtime_function_entries
from lgf.golang.gstatus import G_RUNNABLE, G_SCAN, G_WAITING
from lgf.golang.runtime_reader import RuntimeReader, Unreadable, read_g_fields

from . import runq
from .handoff import GoroutineTierView
from .pacing import Pacer
from .parkjudge import ParkJudge, binary_path, reason_name
from .sampled import SampledPark, SampledProcess

log = logging.getLogger("lgf.sampler")


class GoroutineSampler:
    """Samples the goroutines of unarmed targets on its own thread; see the module docstring.

    ``tier``: what the sampler may ask of the goroutine tier (:class:`GoroutineTierView`: none of
    its calls waits for an attach); ``services``: the host's :class:`lgf.services.Services` (symbol
    cache, ``[idle]`` rules, arming: a stall asks for the tier with ``arming.notify_stall``);
    ``emit`` takes the sampled stall events. The tier sees this sampler as a
    :class:`lgf.sources.uprobe.handoff.SampledTier` (:meth:`add`, :meth:`remove`,
    :meth:`parked_gs`, :meth:`claim`).
    """

    def __init__(self, interval_ns: int, threshold_ns: int, *, tier: GoroutineTierView, services,
                 emit: Callable[[Event], None], max_goroutines: int = 1_000_000, ignore_reasons=(),
                 report_idle: bool = False, stats=None, logger=None, wakes=None, quiet_interval_ns: int = 0):
        self.interval_ns = interval_ns
        self.quiet_interval_ns = quiet_interval_ns
        """A quiet process's full passes are this far apart (0, or not over ``interval_ns``: off)."""
        self.max_goroutines = max_goroutines
        self.threshold_ns = threshold_ns
        self.tier, self.services, self.emit = tier, services, emit
        self._claims: dict[tuple[int, int], list[tuple[int, int]]] = {}
        """(pid, goid) -> [start_ns, end_ns] of its latest reported parks (:meth:`claim`)."""
        self._claims_lock = threading.Lock()
        self.ignore_reasons = frozenset(ignore_reasons)
        self.stats = stats
        self.log = logger or log
        self.report_idle = report_idle
        self.wakes = wakes
        """Which goroutines woke since the last pass, in big processes (``wakes.WakeSignal``;
        None: ``wake_signal`` off)."""
        self.pacer = Pacer(interval_ns, quiet_interval_ns, threshold_ns, tier=tier, wakes=wakes)
        """When each process is read: in full, light, or not this interval (``pacing.py``)."""
        self.judge = ParkJudge(services, stats, self.log, report_idle)
        """Stall or idle wait, and the request a stall serves (``parkjudge.py``)."""
        self._procs: dict[int, SampledProcess] = {}
        self._runtime_starts: dict[str, frozenset[int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lgf-uprobe-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            for proc in self._procs.values():
                proc.reader.close()
            self._procs.clear()

    def add(self, target) -> None:
        """Sample ``target`` from now on (a refused read is counted and the target left out)."""
        try:
            reader = RuntimeReader(target.pid, target.binary.build_id)
            key = target.binary.build_id or target.binary.path
            starts = self._runtime_starts.get(key)
            if starts is None:
                starts = self._runtime_starts[key] = frozenset(runtime_function_entries(target.binary))
            proc = SampledProcess(target, reader, frozenset(a + reader.bias for a in starts),
                            INTERNAL_WAIT_REASONS + tuple(self.ignore_reasons), self.max_goroutines)
        except Exception as exc:  # Unreadable, or TargetRefused for a missing offset
            self._count("lgf_sampler_refused_total")
            self.log.warning("sampler: not sampling pid %d: %s", target.pid, exc)
            return
        try:  # open its symbols now (~10 ms), not in the pass that first judges a park: that
            _ = self.services.symbolizers.get(binary_path(target)).table  # pass would come late, cutting the park short
        except Exception:  # noqa: BLE001 - unreadable: its parks are judged as cut stacks, counted then
            pass
        with self._lock:
            self._procs[target.pid] = proc

    def remove(self, pid: int) -> None:
        """Stop sampling ``pid``, which exited: what it had over the threshold is reported (:meth:`_flush`)."""
        with self._lock:
            proc = self._procs.pop(pid, None)
        if proc is not None:
            self._flush(pid, proc)
            proc.reader.close()
            for name in ("lgf_sampler_goroutines", "lgf_sampler_cycle_seconds", "lgf_sampler_unwatched",
                         "lgf_sampler_interval_seconds"):
                self._gauge(name, None, pid)

    def parked_gs(self, pid: int) -> list[int]:
        """Addresses of the goroutines whose park the sampler holds in ``pid``."""
        proc = self._procs.get(pid)  # no lock: called while the uprobe source attaches the tier
        return list(proc.parks) if proc else []

    def _run(self) -> None:
        next_at = time.monotonic_ns()
        while not self._stop.is_set():
            self.sample_once()
            next_at += self.interval_ns
            now = time.monotonic_ns()
            if next_at < now:  # fell behind (a slow read, or a pass that armed the tier: 10-50 ms of
                # attaching): sample again now, once, so the end of the park that asked for arming is
                # not left unseen for another interval; the missed passes are skipped, not caught up
                next_at = now
            self._stop.wait((next_at - now) / 1e9)

    def sample_once(self) -> None:
        """One pass over every target (what the thread does each interval)."""
        with self._lock:
            procs = list(self._procs.items())
        pacer = self.pacer
        pacer.begin_pass()
        for pid, proc in procs:
            t0 = time.monotonic_ns()
            try:
                if t0 < proc.next_ns and proc.quiet and (not pacer.listened(pid) or self.tier.since(pid) is not None):
                    # its wakes are no longer noted (the budget), or its tier is on (the hand-off
                    # pass): read in full now
                    proc.quiet, proc.next_ns = False, 0
                if t0 < proc.next_ns:
                    if not pacer.light_due(pid, proc, t0):
                        continue
                    proc.light_cost_ns += self._sample(pid, proc, light=True) or 0
                    if proc.next_ns:  # (0: a quiet process had news a light pass cannot follow)
                        continue
                    t0, forced = time.monotonic_ns(), True
                else:
                    forced = False
                cost = self._sample(pid, proc)
                if cost is None:  # the tier is on and nothing was read: no news of the price
                    proc.next_ns = t0 + self.interval_ns
                    continue
                cost, proc.light_cost_ns = cost + proc.light_cost_ns, 0
                if proc.first_pass:  # every g new: a one-off (~0.5 s at 100,000), not the pace;
                    proc.first_pass = False
                    proc.next_ns = t0 + self.interval_ns
                    continue
                # The budget holds on average: one dear sample (a page fault, Python's GC: 1.3 ms
                # against a 43 us median, measured) must not stretch the next interval 25-fold and
                # miss the park it was about to see; a target that is dear sample after sample is.
                # ... nor one pass that follows a burst of new parks (a pool of 100,000 workers all
                # parking at once: 0.5 s once): a pass counts for at most 4 times the usual.
                proc.cost_ns = (proc.cost_ns * 7 + min(cost, 4 * max(proc.cost_ns, self.interval_ns // 100))) // 8
                budget = pacer.budget(pid)
                proc.scan.steer(proc.cost_ns, budget * self.interval_ns)
                proc.interval_ns = max(self.interval_ns, int(proc.cost_ns / budget))
                if self.wakes is not None and proc.scan.rotating:  # (for good: allgs never shrinks)
                    self.wakes.want(pid)
                pacer.pace(pid, proc, t0, forced)
                proc.next_ns = t0 + proc.interval_ns - self.interval_ns // 4  # due at the pass nearest
                gauges = (proc.interval_ns, proc.scan.goroutines, proc.scan.cycle_ns)
                if gauges != proc.gauged:  # (only when they change: three a pass, 1,000 passes a second at 200 services)
                    proc.gauged = gauges
                    self._gauge("lgf_sampler_interval_seconds", proc.interval_ns / 1e9, pid)
                    self._gauge("lgf_sampler_goroutines", proc.scan.goroutines, pid)
                    self._gauge("lgf_sampler_cycle_seconds", proc.scan.cycle_ns / 1e9, pid)
                if proc.unwatched:
                    proc.unwatched = ""
                    self._gauge("lgf_sampler_unwatched", None, pid)
                    self.log.info("sampler: pid %d is sampled again", pid)
            except Unreadable as exc:
                self._count("lgf_sampler_unreadable_total", reason=str(exc))
                if str(exc) == "process_gone":
                    self.remove(pid)
                elif str(exc) == "too_many" and not proc.unwatched:
                    # Never silently: the operator sees which process lgf does not read, and why.
                    proc.unwatched = "too_many"
                    self._gauge("lgf_sampler_unwatched", 1, pid)
                    self.log.warning("sampler: pid %d (%s) has more than %d goroutines "
                                     "(sample_max_goroutines): not sampled; only the goroutine "
                                     "tier and the other cheap tiers see its stalls", pid,
                                     proc.target.comm, self.max_goroutines)

    # -- one process --------------------------------------------------------------------------

    def take_over(self, pid: int, parks: dict[int, tuple[int, int]]) -> None:
        """The goroutine tier's open parks in ``pid`` as its slice ends (``g -> (start_ns,
        reason)``; see :class:`lgf.sources.uprobe.handoff.SampledTier`). A note is taken only if
        its goroutine is parked now and the note is still open after that read (the tier's
        probes are still on: a park that ended and another that began since would show), so the
        park followed is the one the tier saw begin, dated from its start."""
        proc = self._procs.get(pid)
        if proc is None or not parks:
            return
        began = time.monotonic_ns()
        try:
            rows = read_g_fields(proc.reader, list(parks), proc.fields)
        except Unreadable:
            return
        order = proc.order
        i_status, i_goid, i_reason = (order.index(n) + 1 for n in ("atomicstatus", "goid", "waitreason"))
        i_seq = order.index("trackingSeq") + 1
        taken = []
        for row in rows:
            g = row[0]
            start, _reason = parks[g]
            if row[i_status] & ~G_SCAN != G_WAITING or row[i_reason] in proc.skipped:
                continue
            if self.tier.park_start(pid, g) != start:
                continue  # ended meanwhile (or another began): the tier reports or saw it
            taken.append((g, SampledPark(row[i_goid], row[i_seq], row[i_reason], start, start, began)))
        with self._lock:
            proc.taken_over.extend(taken)

    def _sample(self, pid: int, proc: SampledProcess, light: bool = False) -> int | None:
        """One sample of ``pid``; returns what reading and decoding it cost (ns), which leaves
        out judging the parks that crossed the threshold, arming the tier and emitting events
        (done after); None when the tier is on and nothing was read.

        ``light``: between two passes of a process sampled less often than ``sample_interval``
        (a big one: its pages cost), read only the gs of the parks not yet over the threshold and
        those whose wakes were noted since (:mod:`.wakes`), one small read: a park that begins
        is seen at the next ``sample_interval`` and its threshold crossing at the one after it,
        whatever the process's size (a park of threshold + 50 ms was missed when passes were
        40 ms apart)."""
        # CPU time of this thread, not wall time: the cost sets the interval against the budget,
        # and wall time would count waits for the GIL or a lock as work done. (A light pass is
        # timed once it reads: most read only the wake ring, a few microseconds, every interval.)
        t0 = 0 if light else time.thread_time_ns()
        since = self.tier.since(pid)
        closing = since is not None
        if proc.taken_over and not closing:
            with self._lock:
                taken, proc.taken_over = proc.taken_over, []
            for g, park in taken:
                proc.parks.setdefault(g, park)  # (one the sampler follows already is its own)
        for ev in runq.follow(pid, proc, self.threshold_ns, self._arm) if closing else ():  # runq.py
            if self.claim(pid, ev.goid, ev.start_ns, ev.end_ns):  # (once: an exit flushes them too)
                self.emit(ev)
        handoff = False
        if closing:
            proc.last_full_ns = 0
            # Hand-off: the tier is complete since ``since`` and sees every park that begins from
            # then on; one pass decides whose each current park is (module docstring). An ordinary
            # pass, not one over every page: with the tier armed in 2 s slices, reading all 11,000
            # pages of 100,000 goroutines at each was a third of lgf's CPU (measured); a park begun
            # in a cold page before the tier's probes were on is the sampler's when it reads it.
            handoff = proc.handoff_since != since
            if handoff:
                proc.handoff_since = since
                rows, after, began, ended = self._read(proc)
            elif not proc.parks:
                return None
            else:
                began = time.monotonic_ns()
                rows, after = read_g_fields(proc.reader, list(proc.parks), proc.fields), {}
                ended = time.monotonic_ns()
        elif light:
            if self.pacer.take_wakes(pid, proc) and proc.quiet:
                proc.next_ns = 0  # something woke that the probes could not name: a full pass now
                return 0
            # In a quiet process a park not yet over the threshold is read again only when it
            # could have crossed it, or its g was woken (its end: ready or the netpoller, noted).
            due = time.monotonic_ns() - self.threshold_ns if proc.quiet else None
            gs = [g for g, park in proc.parks.items()
                  if g in proc.watch or (not park.over_threshold and (due is None or park.first_ns <= due))]
            gs += [g for g in proc.watch if g not in proc.parks]
            if not gs:
                return 0
            t0 = time.thread_time_ns()
            began = time.monotonic_ns()
            rows = read_g_fields(proc.reader, gs, proc.fields)
            ended = time.monotonic_ns()
            after = {g: a for g, (_until, a) in proc.watch.items()}
        else:
            rows, after, began, ended = self._read(proc)
        self._count("lgf_sampler_light_samples_total" if light else "lgf_sampler_samples_total")
        if not light:
            proc.passes += 1
        order = proc.order
        i_status, i_goid, i_reason = (order.index(n) + 1 for n in ("atomicstatus", "goid", "waitreason"))
        i_seq, i_start = order.index("trackingSeq") + 1, order.index("startpc") + 1
        done: list[Event] = []
        crossed: list[tuple[SampledPark, tuple]] = []
        woken: list[tuple[int, SampledPark]] = []
        # Only the gs that changed since their last read, the parks followed and the runnable
        # gs come here (``gscan.py``): a g parked unchanged and not followed is a park that
        # was judged idle, or one of the runtime's, or of an ignored reason.
        for row in rows:
            g = row[0]
            status, goid, reason, seq = row[i_status] & ~G_SCAN, row[i_goid], row[i_reason], row[i_seq]
            park = proc.parks.get(g)
            if park is not None and (status != G_WAITING or park.goid != goid or park.seq != seq):
                done.append(self._end(pid, proc, g, ended))
                if closing and status == G_RUNNABLE and park.goid == goid and park.seq == seq:
                    woken.append((g, park))  # parked, now waiting for a P: see below
                park = None
            if status != G_WAITING or reason in proc.skipped or row[i_start] in proc.runtime_starts:
                if light and proc.quiet and status == G_RUNNABLE and row[i_start] not in proc.runtime_starts:
                    proc.next_ns = 0  # a wait for a P: full passes follow it (runq.py)
                continue
            if park is None:
                proc.watch.pop(g, None)  # parked: followed as a park from here (judged once)
                if not closing:
                    proc.parks[g] = SampledPark(goid, seq, reason, after.get(g, 0), ended, ended)
                elif handoff and not self._tier_noted(pid, g, after.get(g, 0), ended):
                    proc.parks[g] = SampledPark(goid, seq, reason, after.get(g, 0), ended, ended)
                    self._count("lgf_sampler_handoff_adopted_total")
                continue
            if handoff and self._tier_noted(pid, g, park.start_after_ns, park.first_ns):
                del proc.parks[g]  # the tier saw it begin: its report, precise
                proc.scan.forget(g)
                continue
            park.last_ns = began
            if not park.over_threshold and park.last_ns - park.first_ns >= self.threshold_ns:
                park.over_threshold = True
                crossed.append((park, row))
        # A park the sampler held ended in a wait for a P while the tier was on or being attached.
        # The tier cannot have seen that wait begin if it was woken by ready() (the tier dates
        # those from a park it noted, and this park began before it) or before the tier's probes
        # were on: follow it as the run-queue reader follows its own (reported once it ends, if it
        # reached the threshold), unless the tier holds it (it saw it begin: netpoll, attached).
        for g, park in woken:
            if not self.tier.holds_runnable(pid, g, park.last_ns):
                runq.adopt(proc, g, park.goid, park.seq, park.last_ns, ended)
        if not closing and not light:
            proc.last_full_ns = began
            proc.still = not rows
            done += runq.observe(pid, proc, rows, began, ended, self.threshold_ns, self._arm,  # waits for a P
                                 after=after)
        cost = time.thread_time_ns() - t0
        # Judging is paid once per park that crosses the threshold (and the first one opens the
        # binary's symbols): kept out of the per-sample cost that sets the interval.
        arm = self.judge.judge(pid, proc, crossed, closing) if crossed else False
        for park, row in crossed:  # an idle wait is not followed: its g is read again only if it changes
            if self._silent(park):
                proc.parks.pop(row[0], None)
                if light:  # read outside the scan: the next full pass is not to see it as new
                    proc.scan.settle(row[0], {name: row[i] for i, name in enumerate(order, 1)})
            elif light and proc.quiet:
                proc.next_ns = 0  # a stall: full passes follow it to its end
        if arm:
            self._arm(pid)
        for ev in done:
            if ev is not None and self.claim(pid, ev.goid, ev.start_ns, ev.end_ns):
                self.emit(ev)
        return cost

    def _read(self, proc: SampledProcess) -> tuple[list[tuple], dict[int, int], int, int]:
        """This pass's rows of ``proc`` (:meth:`lgf.sources.uprobe.gscan.GoroutineScan.read`)."""
        self.pacer.take_wakes(proc.target.pid, proc)
        followed = list(proc.parks) + (list(proc.runq.queued) if proc.runq else []) + list(proc.watch)
        rows, after, began, ended = proc.scan.read(followed, max(self.interval_ns, proc.interval_ns))
        for g, (_until, woke_after) in proc.watch.items():  # the later of the two lower bounds
            if g in after and woke_after > after[g]:
                after[g] = woke_after
        return rows, after, began, ended

    def _flush(self, pid: int, proc: SampledProcess) -> None:
        """The process is gone: report the stalls it had over the threshold, parks and waits for a
        P, which no later pass will see end (a process that exits mid-stall, or just after one,
        loses nothing). The end is bounded by now: the process was still there at the previous
        pass. Called from the thread that saw the exit too, while a pass may still be reading
        ``proc``: the claim sends each report once."""
        now = time.monotonic_ns()
        done = [self._end(pid, proc, g, now) for g in list(proc.parks)]
        for ev in done + runq.flush(pid, proc, now):
            if ev is not None and self.claim(pid, ev.goid, ev.start_ns, ev.end_ns):
                self.emit(ev)

    def _arm(self, pid: int) -> None:
        """Ask for the goroutine tier of ``pid``: the one arming path of every cheap tier, which
        arms on a thread of its own (lgf.sources.uprobe.tiers), so sampling goes on meanwhile."""
        self.services.arming.notify_stall(pid)

    def _tier_noted(self, pid: int, g: int, after_ns: int, before_ns: int) -> bool:
        """Whether the goroutine tier has an open note of a park of ``g`` begun in
        (``after_ns``, ``before_ns``]: the park the sampler sees there, which the tier reports."""
        start = self.tier.park_start(pid, g)
        return start is not None and after_ns < start <= before_ns

    def claim(self, pid: int, goid: int, start_ns: int, end_ns: int) -> bool:
        """Whether a park of ``goid`` seen over [``start_ns``, ``end_ns``] is still to be reported
        (and from now on, reported): False when a report of ``goid`` overlapping it was claimed,
        by either tier. Each tier's interval lies between the park's start and the goroutine's
        next run (the sampler's inside the samples that saw it parked, the tier's from its switch
        out to its ready or execute), so two reports of one park overlap and reports of two parks
        do not. Its own small lock, never held while anything else is done."""
        key = (pid, goid)
        with self._claims_lock:
            seen = self._claims.get(key)
            if seen is None:
                if len(self._claims) >= 4096:  # bounded: the oldest goroutine goes first
                    del self._claims[next(iter(self._claims))]
                seen = self._claims[key] = []
            fresh = not any(s <= end_ns and start_ns <= e for s, e in seen)
            if fresh:
                seen.append((start_ns, end_ns))
                del seen[:-4]
        if not fresh:
            self._count("lgf_duplicate_reports_dropped_total")
        return fresh

    def _silent(self, park: SampledPark) -> bool:
        """An idle park that will never be reported (``report_idle = false``)."""
        return park.verdict is not None and park.verdict.idle and not self.report_idle

    def _end(self, pid: int, proc: SampledProcess, g: int, end_before_ns: int) -> Event | None:
        """Stop following the park at ``g``: its event if it was over the threshold (and a
        stall, or an idle wait with ``report_idle``)."""
        park = proc.parks.pop(g, None)  # (None: a pass and an exit's flush both ended it)
        if park is None or not park.over_threshold or self._silent(park):
            return None
        target, binary = proc.target, proc.target.binary
        reason = reason_name(proc.reasons, park.reason)
        extra: dict = {"stall": "gc_assist" if reason == GC_ASSIST_REASON else "park",
                       "precision": "sampled", "sample_interval_ns": max(self.interval_ns, proc.interval_ns),
                       "end_before_ns": end_before_ns}
        if park.start_after_ns:
            extra["start_after_ns"] = park.start_after_ns
        if proc.reader.bias:
            extra["load_bias"] = proc.reader.bias
        verdict = park.verdict
        if verdict is not None:
            extra.update(verdict.as_extra())
        req = park.request
        if req is not None:
            extra["http_request_addr"] = req.addr
            if park.traceparent is not None:
                extra["traceparent"] = park.traceparent
        ev = Event(source="uprobe", pid=pid, comm=target.comm, exe=target.exe, goid=park.goid,
                   go_version=binary.go_version, build_id=binary.build_id, start_ns=park.first_ns,
                   end_ns=park.last_ns, duration_ns=park.last_ns - park.first_ns, wait_reason=reason,
                   labels=park.labels, pcs=park.pcs, scope=verdict.scope if verdict else "", extra=extra,
                   http_method=req.method if req else "", http_path=req.path if req else "")
        return ev.finish()

    def _count(self, name: str, **labels) -> None:
        if self.stats is not None:
            self.stats.inc(name, **labels)

    def _gauge(self, name: str, value: float | None, pid: int) -> None:
        """A per-target gauge (``value=None``: drop it)."""
        if self.stats is None:
            return
        if value is None:
            self.stats.unset(name, pid=pid)
        else:
            self.stats.set(name, value, pid=pid)
