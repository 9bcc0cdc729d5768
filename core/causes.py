"""The cause vocabulary and the Go runtime's wait reasons: which cause each wait means.

Why one module: the classifier (``plugins/waitreason.py``) names causes from these tables,
``/metrics`` labels the BPF histograms with the same function, and the goroutine tier and the
sampler leave out the runtime's own goroutines by the same wait-reason lists. One table, read by
all of them, so a Go release that adds a wait reason is written down once.

Why a table and not string matching: the Go runtime's wait-reason texts are a closed list per
version (``runtime.waitReasonStrings`` in ``runtime2.go``), so every text of every supported
toolchain (1.19.8, 1.21.13, 1.25.5, 1.27.3) is written down here with the cause it means, and a test
walks the toolchains' lists and fails on any text missing from ``WAIT_REASONS``.

Some reasons are not a stall of user code (a GC worker idling, the execution tracer's own
goroutine). They map to ``unknown`` *with a reason*, kept in ``NOT_USER_WAITS``.

The stall kind (``extra["stall"]``) decides first: ``stw`` -> ``gc_stw``, ``gc_assist`` ->
``gc_assist``, ``runnable`` -> ``sched_latency``, ``syscall`` -> ``syscall`` (``net_io`` for the
netpoller's own epoll waits). For ``park`` the wait reason decides, and enrichment may override it
(``decide_with_enrichment``): a ``semacquire`` whose symbolized stack holds
``sync.runtime_SemacquireMutex`` is a ``lock`` (Go 1.19 has no Mutex wait reason); a goroutine
parked on a lock or channel whose wait was mostly
spent inside a stop-the-world pause (``gc_phase["stw_overlap_ns"]`` from the ``gc_phase``
enricher, more than half the stall) is blamed on ``gc_stw``, because no goroutine could have
released it; so is a runnable goroutine that could not run because the world was stopped.
"""

from __future__ import annotations

# Every text of runtime.waitReasonStrings in Go 1.19.8, 1.21.13, 1.25.5 and 1.27.3 (runtime2.go).
# Go 1.19 and 1.20 have no "sync.Mutex.Lock" (came with 1.21): a Mutex waits as "semacquire".
WAIT_REASONS: dict[str, str] = {
    # channels and select
    "chan receive": "channel",
    "chan send": "channel",
    "chan receive (nil chan)": "channel",
    "chan send (nil chan)": "channel",
    "chan receive (durable)": "channel",  # 1.25+: inside a testing/synctest bubble
    "chan send (durable)": "channel",
    "select": "select",
    "select (no cases)": "select",  # select {}: blocks forever
    "select (durable)": "select",
    # sync.Mutex / RWMutex
    "sync.Mutex.Lock": "lock",
    "sync.RWMutex.RLock": "lock",
    "sync.RWMutex.Lock": "lock",
    # other semaphores: WaitGroup, Cond, runtime_Semacquire users, coroutines (iter.Pull)
    "semacquire": "sync",  # sync.WaitGroup.Wait before 1.25, and other sema users
    "sync.Cond.Wait": "sync",
    "sync.WaitGroup.Wait": "sync",
    "sync.WaitGroup.Wait (durable)": "sync",
    "synctest.Run": "sync",
    "synctest.Wait": "sync",
    "coroutine": "sync",  # coroswitch: waits for the other side of an iter.Pull coroutine
    # network and timers
    "IO wait": "net_io",  # parked on the netpoller (sockets, pipes in non-blocking mode)
    "sleep": "sleep",
    # the GC: stopping the world and doing GC work on the goroutine's behalf
    "stopping the world": "gc_stw",  # the goroutine calling stopTheWorld waits for every P
    "GC mark termination": "gc_stw",  # forEachP during mark termination
    "garbage collection": "gc_stw",  # gcMarkTermination runs with the world stopped
    "flushing proc caches": "gc_stw",  # forEachP at the end of a cycle
    "dumping heap": "gc_stw",  # debug.WriteHeapDump stops the world
    "GC assist marking": "gc_assist",
    "GC assist wait": "gc_assist",
    "garbage collection scan": "gc_assist",  # suspended while the GC scans its own stack
    "wait for GC cycle": "gc_assist",  # runtime.GC(): the caller waits for a whole cycle
    "GC weak to strong wait": "gc_assist",  # weak.Pointer.Value waits for the mark phase
    # scheduler
    "preempted": "sched_latency",  # preempted, waiting to be scheduled again
}

NOT_USER_WAITS: dict[str, str] = {
    "": "no wait reason recorded",
    "panicwait": "main goroutine waits for another goroutine's panic to finish printing",
    "GC sweep wait": "runtime background sweeper idle",
    "GC scavenge wait": "runtime background scavenger idle",
    "finalizer wait": "runtime finalizer goroutine idle",
    "cleanup wait": "runtime cleanup goroutine idle",
    "force gc (idle)": "runtime forced-GC helper idle",
    "timer goroutine (idle)": "runtime timer goroutine idle (Go 1.19-1.20 still list it; unused since 1.14)",
    "GC worker (idle)": "runtime GC mark worker parked",
    "GC worker (active)": "runtime GC mark worker parked between work",
    "GOMAXPROCS updater (idle)": "runtime GOMAXPROCS updater idle",
    "trace reader (blocked)": "execution tracer's reader goroutine",
    "trace goroutine status": "execution tracer snapshotting goroutine states",
    "trace proc status": "execution tracer snapshotting P states",
    "page trace flush": "page tracer flushing",
    "debug call": "a debugger injected a function call",
}
"""Wait reasons that are known and deliberately ``unknown``: why is the value."""

STALL_KINDS: dict[str, str] = {
    "stw": "gc_stw",
    "gc_assist": "gc_assist",
    "runnable": "sched_latency",
    "syscall": "syscall",
}
"""``extra["stall"]`` kinds that decide by themselves; ``park`` goes by its wait reason."""

NETPOLL_SYSCALLS = frozenset({"epoll_wait", "epoll_pwait", "epoll_pwait2"})
"""Syscalls the Go netpoller blocks in: a stall there is waiting for the network."""

STW_OVERRIDABLE = frozenset({"lock", "channel", "select", "sync", "sched_latency"})
"""Causes that a mostly-overlapping stop-the-world explains better: nobody could release the
lock or channel, and nothing runnable could run. Not ``sleep`` or ``net_io``: those waits were
long by the program's own choice or the peer's, whatever the GC did meanwhile."""


def cause_of(stall: str, wait_reason: str = "", syscall: str = "") -> str | None:
    """The cause for a stall kind and wait reason, without enrichment; None if not known.

    Also used by /metrics to label the BPF histograms, which carry only these labels.
    """
    if stall == "syscall" and syscall in NETPOLL_SYSCALLS:
        return "net_io"
    if stall in STALL_KINDS:
        return STALL_KINDS[stall]
    if wait_reason in WAIT_REASONS:
        return WAIT_REASONS[wait_reason]
    if wait_reason in NOT_USER_WAITS:
        return "unknown"
    if not stall and syscall:
        return "syscall"
    return None


SEMACQUIRE_REASON = "semacquire"
MUTEX_SEMACQUIRE_FRAME = "sync.runtime_SemacquireMutex"
"""Before Go 1.21 a goroutine waiting for a ``sync.Mutex`` or ``RWMutex`` parks as plain
``semacquire`` (1.21 added ``sync.Mutex.Lock`` and the RWMutex reasons): this frame on its stack,
which both call and ``WaitGroup`` does not, says it was a lock."""


def decide_with_enrichment(cause: str, event) -> str:
    """Let enrichment override a wait-reason cause where it knows better (see module docstring)."""
    if (cause == "sync" and event.wait_reason == SEMACQUIRE_REASON
            and any(f.get("func") == MUTEX_SEMACQUIRE_FRAME for f in event.stack or ())):
        cause = "lock"  # a Go 1.19 Mutex wait, told by its symbolized stack
    overlap = (event.gc_phase or {}).get("stw_overlap_ns", 0)
    if cause in STW_OVERRIDABLE and event.duration_ns and overlap * 2 > event.duration_ns:
        return "gc_stw"
    return cause


INTERNAL_WAIT_REASONS = (
    "GC sweep wait", "GC scavenge wait", "GC worker (idle)", "GC worker (active)", "finalizer wait",
    "cleanup wait", "force gc (idle)", "timer goroutine (idle)", "GOMAXPROCS updater (idle)", "trace reader (blocked)",
    "trace goroutine status", "trace proc status", "page trace flush", "debug call",
)
"""Wait reasons of the runtime's own goroutines and internal states, by the runtime's text. Parks
with these reasons are the runtime idling or working, not the program stalling."""

IO_WAIT_REASON = "IO wait"
GC_ASSIST_REASON = "GC assist wait"
