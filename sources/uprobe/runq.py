"""Run-queue starvation seen from outside: the cheap tier's view of scheduling latency.

Why: scheduling latency (a goroutine runnable, waiting for a P) is measured exactly only by the
goroutine tier (``lgf.sources.uprobe.runnable``), which with ``goroutine_tier = "on_stall"`` is attached
only after a cheap tier saw trouble. The goroutine sampler (``lgf.sources.uprobe.sampler``) already reads
every goroutine of an unarmed target each ``sample_interval``; this module reads the same
snapshot for the run queues: every user goroutine in ``_Grunnable`` is in some run queue (a P's,
its ``runnext``, or the global one), so their number is the process's run-queue length, and the
same ``(goid, trackingSeq)`` runnable in two samples a threshold apart has waited that long for a
P (``trackingSeq`` is bumped whenever a goroutine leaves ``_Grunning``: a goroutine that ran and
came back to the queue in between has another). When the oldest runnable goroutine's wait
reaches the threshold, the goroutine tier is asked for (the sampler's arming, through
``ctx.services.arming``), and that first wait, which the tier attached
mid-wait cannot see, is reported once it ends as ``stall = "runnable"`` with
``extra["precision"] = "sampled"``: its duration is a lower bound, short of the truth by at most
two sample intervals (``start_after_ns`` / ``end_before_ns`` are the outer bounds).

A goroutine whose park the sampler held and that became runnable while the tier was being
attached is handed over (:func:`adopt`): the tier did not see that wait begin (its probes went
on after, or it was a ``ready()`` of a park the tier never noted), so this record follows it
like its own, unless the tier holds it (the sampler asks before adopting).

The runtime's own goroutines (start function in package runtime) are left out, as everywhere.

Cost: nothing read beyond the sampler's snapshot; a dict update per runnable goroutine per sample
(a starved process has few; a healthy one's runnable goroutines change every sample).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from lgf import Event
from lgf.golang.gstatus import G_RUNNABLE, G_SCAN
from lgf.golang.runtime_reader import read_g_fields

log = logging.getLogger("lgf.sampler")


@dataclass
class _Queued:
    goid: int
    seq: int
    start_after_ns: int
    """End of the previous sample: the goroutine became runnable after it (or earlier, if 0)."""
    first_ns: int
    """End of the first sample that saw it runnable."""
    last_ns: int
    """Start of the latest sample that still saw it runnable."""
    armed: bool = False


class RunQueues:
    """One process's runnable goroutines across samples (kept on the sampler's process record)."""

    def __init__(self) -> None:
        self.queued: dict[int, _Queued] = {}
        """g address -> the wait for a P the samples saw there."""
        self.prev_end_ns = 0
        self.length = 0
        """Runnable user goroutines in the latest sample: the process's run-queue length."""

    def oldest_ns(self) -> int:
        """How long the longest-waiting runnable goroutine has waited for a P (a lower bound)."""
        return max((q.last_ns - q.first_ns for q in self.queued.values()), default=0)


def observe(pid: int, proc, rows, began: int, ended: int, threshold_ns: int, arm,
            new_waits: bool = True, after: dict[int, int] | None = None) -> list[Event]:
    """Fold one full sample of ``proc`` (the sampler's ``SampledProcess``: its ``order``, ``target``,
    ``runtime_starts``) into its run-queue record; call ``arm(pid)`` when a goroutine has waited a
    threshold for a P; return the sampled events of such waits that ended. ``new_waits=False``
    (the goroutine tier is on and sees every wait that starts now): follow only the known ones.
    ``after[g]``: when the read of ``g`` before this one began (the sampler reads some gs less
    often than others), the earliest a wait seen now can have begun."""
    state: RunQueues | None = getattr(proc, "runq", None)
    if state is None:
        state = proc.runq = RunQueues()
    order = proc.order
    i_status, i_goid, i_seq, i_start = (order.index(n) + 1 for n in ("atomicstatus", "goid", "trackingSeq", "startpc"))
    still: dict[int, _Queued] = {}
    starved = None
    for row in rows:
        if row[i_status] & ~G_SCAN != G_RUNNABLE or row[i_start] in proc.runtime_starts:
            continue
        g, goid, seq = row[0], row[i_goid], row[i_seq]
        q = state.queued.get(g)
        if q is None or q.goid != goid or q.seq != seq:
            if not new_waits:  # (a g reused by a new goroutine: the old wait ended, see below)
                continue
            q = _Queued(goid, seq, state.prev_end_ns if after is None else after.get(g, 0), ended, ended)
        else:
            q.last_ns = began
            if not q.armed and q.last_ns - q.first_ns >= threshold_ns:
                q.armed = True
                starved = q
        still[g] = q
    # Ended: a followed wait whose g is not runnable now, or runnable as another wait (a g struct
    # is reused by the next goroutine the program starts).
    done = [_event_of(pid, proc, q, ended) for g, q in state.queued.items() if still.get(g) is not q and q.armed]
    state.queued, state.prev_end_ns, state.length = still, ended, len(still)
    if starved is not None:
        log.info("sampler: pid %d: goroutine %d runnable without a P for over %.0f ms (%d runnable): arming",
                 pid, starved.goid, (starved.last_ns - starved.first_ns) / 1e6, state.length)
        arm(pid)  # the sampler's _arm: services.arming, which arms on a thread of its own, once per pid
    return done


def adopt(proc, g: int, goid: int, seq: int, start_after_ns: int, seen_ns: int) -> None:
    """Follow the wait for a P of ``g`` from now on, as one this record found itself: the sampler
    saw it begin at the end of a park it held (after ``start_after_ns``, by ``seen_ns``) while the
    goroutine tier was attached, which did not see it begin. :func:`follow` reports it once it
    ends, if it waited a threshold."""
    state: RunQueues | None = getattr(proc, "runq", None)
    if state is None:
        state = proc.runq = RunQueues()
    state.queued[g] = _Queued(goid, seq, start_after_ns, seen_ns, seen_ns)


def _event_of(pid: int, proc, q: _Queued, end_before_ns: int) -> Event:
    target, binary = proc.target, proc.target.binary
    extra: dict = {"stall": "runnable", "precision": "sampled", "end_before_ns": end_before_ns,
                   "sample_interval_ns": getattr(proc, "interval_ns", 0)}
    if q.start_after_ns:
        extra["start_after_ns"] = q.start_after_ns
    if proc.reader.bias:
        extra["load_bias"] = proc.reader.bias
    return Event(source="uprobe", pid=pid, comm=target.comm, exe=target.exe, goid=q.goid,
                 go_version=binary.go_version, build_id=binary.build_id, start_ns=q.first_ns,
                 end_ns=q.last_ns, duration_ns=q.last_ns - q.first_ns, extra=extra).finish()


def flush(pid: int, proc, end_before_ns: int) -> list[Event]:
    """The process is gone: the events of the waits for a P this record followed past the
    threshold, which no later sample will see end (a program that exits just after one: seen in
    the tests, a fixture that exits 20 ms after its goroutine got the P). The end is bounded by
    ``end_before_ns`` (now)."""
    state: RunQueues | None = getattr(proc, "runq", None)
    if state is None:
        return []
    done = [_event_of(pid, proc, q, end_before_ns) for q in state.queued.values() if q.armed]
    state.queued = {}
    return done


def follow(pid: int, proc, threshold_ns: int, arm) -> list[Event]:
    """While the goroutine tier is on (the sampler reads no full sample): read just the goroutines
    this record still follows, so a wait the tier cannot see (it began before the tier) is
    reported when it ends rather than when sampling resumes. Nothing is read when none is followed."""
    state: RunQueues | None = getattr(proc, "runq", None)
    if state is None or not state.queued:
        return []
    began = time.monotonic_ns()
    rows = read_g_fields(proc.reader, list(state.queued), proc.fields)
    ended = time.monotonic_ns()
    return observe(pid, proc, rows, began, ended, threshold_ns, arm, new_waits=False)
