"""The uprobe source: goroutine blocking, scheduling latency and GC stop-the-world, from Go's runtime.

BPF side: ``uprobe.c`` in this package, compiled by ``program.py`` (``LGF_PRINT_BPF=1`` prints it
with its constants). One job per module:

- ``options.py``: ``[[sources]] use = "uprobe"`` (:class:`UprobeOptions`);
- ``program.py``: the compiled program and its ``-D`` constants from a Go binary, shared by the
  targets whose binaries give the same constants;
- ``probes.py``: which runtime functions each tier probes; ``runnable.py``: the probes that date
  scheduling latency in each Go version, and what made a goroutine runnable;
- ``targets.py``: the traced processes, their layout and attached probes;
- ``tiers.py``: the goroutine tier's arming policy, its one arming path and its side of the hand-off;
- ``handoff.py``: the two small interfaces the goroutine tier and the sampler talk through;
- ``sampler.py``, ``runq.py``: the cheap tier that reads unarmed targets' goroutines and run queues
  from outside (``sampled.py``: what it keeps per process and per park);
- ``events.py``: ring-buffer records to events; ``verdict.py``: the Python half of the idle verdict;
- ``metrics.py``: counters and histograms;
- ``source.py``: :class:`UprobeSource`, which puts them together.

What it reports, per target Go process (``[targets]`` in plugins.toml, attached and detached live
as processes start, exec and exit):

- ``stall = "park"``: a goroutine parked until made runnable (``runtime.ready``), or until it
  runs again (``runtime.execute``) when woken without ``ready`` (the netpoller, the GC) or when
  ``ready`` is not probed. The wait reason is the binary's own text (``runtime.waitReasonStrings``);
  "GC assist wait" parks are reported as ``stall = "gc_assist"``.
- ``stall = "runnable"``: scheduling latency, from ``ready`` (or from a preemption) to ``execute``.
- ``stall = "stw"``: a stop-the-world window, ``stopTheWorldWithSema`` to
  ``startTheWorldWithSema`` (goid 0, ``extra["stw_reason"]``).
- counters (``runtime_counters(pid)``) and log2 histograms of every duration (``histograms()``),
  under the threshold too, read from BPF maps. Every event carries the stalled goroutine's own
  user stack (``pcs``), walked in BPF from the context the runtime saved in ``g.sched``.

The runtime's own goroutines (GC workers, sweeper, scavenger, finalizer, GOMAXPROCS updater...)
wait by design: they are told apart in BPF by their wait reason and, as Go's isSystemGoroutine
does, by their start function being in package runtime. They never count as stalls.

How a park is dated with one probe per switch
---------------------------------------------
There is no probe on ``gopark``. ``runtime.execute(gp)`` runs each time a thread starts running a
goroutine; the thread's previous goroutine is kept in BPF task storage. At the thread's next
``execute``, or when the thread blocks in the kernel (the ``sched_switch`` tracepoint), that
goroutine's ``atomicstatus`` says what became of it: ``_Gwaiting`` with ``g.m`` cleared = it
parked (reason from ``g.waitreason``), ``_Grunnable`` = it was preempted. Checked against Go's
own execution tracer (tests/test_source_crosscheck.py): the park start agrees within a
microsecond, the duration within 0.03 ms.

Idle or stall: decided in the kernel (lgf.idle)
-----------------------------------------------
Every wait of the goroutine tier lands in the histograms; a wait of at least the threshold is
judged in BPF before anything crosses to Python (uprobe.c ``judge_stack``). Its goroutine's own
stack is walked from ``g.sched`` up the frame-pointer chain (``max_frames``, default 64: the
outermost frames decide, so the walk must reach ``runtime.goexit``) and each return address is
looked up in an LPM trie of the binary's idle sites and request markers
(:mod:`lgf.bpf.sites`, from :meth:`lgf.idle.IdleRules.pc_ranges`). Then lgf.idle's rule, in its
order: a request marker (``net/http.serverHandler.ServeHTTP``...) makes a stall with
``extra["scope"] = "request"``; a walk that stopped before the goroutine's start is a stall with
``extra["stack_cut"] = True``; an idle site, or ``select {}``, makes an idle wait, which is counted
(``runtime_counters()["idle_waits"]``, histogram label ``stall = "idle"``) and never sent (unless
``[idle] report_idle``); a receive, select, sleep or Cond.Wait is sent flagged as a loop-head
candidate, and :mod:`lgf.sources.uprobe.verdict` symbolizes it (inlined frames included) and asks
:meth:`IdleRules.judge` whether its waiter is the goroutine's start function; anything else is a
stall. Every event carries ``extra["verdict"]``; a request-scoped (or reported idle) one also
``extra["decided_by"]``, the marker or site by name (one symbolized stack per such event).

While the tier is on, a probe on ``net/http.serverHandler.ServeHTTP`` (when the binary has it:
``req`` is in RDI, checked against the disassembly of Go 1.21-1.27) writes each request's
``*http.Request`` into its goroutine's wait slot; a request-scoped stall carries it as
``extra["http_request_addr"]`` for :mod:`lgf.golang.httpreq` to read method and path.

Cost of the verdict: nothing per switch; per wait over the threshold, one user read and one trie
lookup per frame (a few microseconds for a 64-frame walk). The ServeHTTP probe is one more uprobe
hit per request while the tier is armed (see the figures below).

Tiers and their cost (the README's "probe cost" paragraph)
-----------------------------------------------------------
A uprobe hit traps into the kernel even on the emulated ``push %rbp`` where lgf places every
probe (a probe on a function's first instruction is single-stepped and costs tens of
microseconds: never done; Go 1.19 has no push, and its probes sit on the emulated ``jbe`` before
the frame's ``sub``: bench/bench_uprobe_floor.py 1.19.8 1.21.13 compares them). On this 2-CPU VM an empty BPF program on ``runtime.execute`` costs
about 1.3 us per hit, lgf's own program 0.4 us more; so what matters is how often the probed
function runs.

- **Cheap tier, always on**: ``stopTheWorldWithSema``, ``startTheWorldWithSema`` and ``gcStart``
  run a few times per GC cycle; in bench/bench_probe_cost.py their cost is within the noise of
  a shared host, on a channel ping-pong and on a net/http server. It sees GC stop-the-world.
- **Goroutine tier**: ``execute`` runs on every goroutine switch (one hit per switch, the fewest
  that gives start, end, goid and wait reason), ``ready`` on every wake-up (``sched_latency``,
  on by default: it splits park time from scheduling latency), and the ``sched_switch``
  tracepoint on the host's context switches (attached only while some process has the tier on).
  Measured here: a channel ping-pong, the worst case, 13-14x slower per round trip with
  ``sched_latency = false``, 22-25x with it (bare: 0.24 us per round trip; the floor of any
  per-switch uprobe on this VM is about 11x); a net/http hello server +17 % to +19 % CPU per
  request. ``netpoll_calls = true`` adds a probe on ``runtime.netpoll`` for the netpoller call
  counter. Against the floor in the same interleaved rounds (bench/bench_tier_floor.py, six runs
  at load average 7-11): median 1.19x an empty program on execute (1.02-1.30x), 1.19x on
  execute + ready (1.11-1.36x); by ``bpf_stats``, ``on_execute`` runs about 150 ns per hit (about
  170 ns with the shared hash histogram), ``on_ready`` 96 ns (118), ``on_sched_switch`` about
  100 ns. Per switch: one task-storage get, one
  user read of the previous goroutine's (m, atomicstatus, waitreason), two array wait slots, one
  array histogram add; nothing else unless a wait reaches the threshold.
- **Verdict and ServeHTTP probe** (with the goroutine tier): nothing per switch; per wait over
  the threshold a stack walk of up to ``max_frames`` user reads and trie lookups; one uprobe hit
  per HTTP request on ``serverHandler.ServeHTTP`` (the floor's cost of a hit, 0.7-1.3 us here).
  On bench/bench_idle_server.py's idle-looking server (idle keep-alive connections, accept loop,
  100 ms ticker) with the shipped plugins.toml, three runs of 3 rounds: CPU per request -11.5 %,
  +28.1 %, -15.6 % against off (wrk's noise here), the tier armed in 1 of 9 runs (what armed it
  was not caught: three more runs with logging saw no arming); a ping-pong that sleeps 2 s at start-up: 1.02x, 0.97x,
  0.96x, never armed.

``goroutine_tier`` picks when the goroutine tier is attached to a process:

- ``"always"`` (default): from the start. Full coverage, full cost. It is the default so that a
  bare ``use = "uprobe"`` reports every goroutine stall, as its name promises; the shipped
  plugins.toml chooses ``"on_stall"`` for production hosts and says so.
- ``"never"``: only the cheap tier (and the tracepoint source's syscalls).
- ``"on_stall"``: attached to a process for a short slice (``arm_slice``, 2 s) while its overhead
  budget has credit (``overhead_budget``, 2 % of its CPU: :mod:`lgf.sources.uprobe.budget`) after a
  cheap tier of any lgf source (this one's stop-the-world, the goroutine sampler of :mod:`lgf.sources.uprobe.sampler`,
  the tracepoint source's blocking syscalls) sees a stall there, then detached again. Every cheap
  tier asks through ``ctx.services.arming.notify_stall(pid)``, and the tier arms on a thread of its
  own, one per pid at a time (:mod:`lgf.sources.uprobe.tiers`). A process in trouble gets goroutine detail while the trouble lasts; a healthy
  one pays nothing. The first stall of an episode is seen only by the cheap tier: the sampler,
  which reads unarmed targets' goroutines from outside every ``sample_interval`` (no probe; a
  quiet target in full every ``quiet_interval``, and what woke in it every ``sample_interval``),
  reports a park it saw with ``extra["precision"] = "sampled"`` (a lower bound, within two
  intervals of the truth), and the request it served, found in its own frames
  (:mod:`lgf.golang.httpserve`).

Attaching is per process (a uprobe with a pid filter costs nothing in other processes running
the same binary). Targets that are refused (not Go, unknown layout) or that exit mid-trace are
counted and logged; they never stop the source. ``stop()`` detaches every probe (the tests read
the target's own memory for leftover breakpoints, and ``bpftool perf`` for attachments).
"""

from __future__ import annotations

from lgf import Component, hookimpl

from .options import UprobeOptions

__all__ = ["UprobeOptions", "UprobeSource", "lgf_components"]


def __getattr__(name: str):
    # The source's modules import numpy and BCC's Python side (~0.2 s): only a host that runs
    # this source pays for them, not `lgf check`, `lgf replay` or a host without it.
    if name == "UprobeSource":
        from .source import UprobeSource

        return UprobeSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_source(options: UprobeOptions, ctx):
    """The ``uprobe`` component's factory: a :class:`UprobeSource` (imported now, see above)."""
    from .source import UprobeSource

    return UprobeSource(options, ctx)


@hookimpl
def lgf_components():
    return [Component("source", "uprobe", make_source, UprobeOptions,
                      doc="goroutine parks, scheduling latency and GC stop-the-world via uprobes")]
