"""The uprobe source: goroutine blocking, scheduling latency and GC stop-the-world, from Go's runtime.

BPF side: ``uprobe.c`` beside this file (``LGF_PRINT_BPF=1`` prints it with its constants).

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
candidate, and :mod:`lgf.sources.uprobe_verdict` symbolizes it (inlined frames included) and asks
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
microseconds: never done). On this 2-CPU VM an empty BPF program on ``runtime.execute`` costs
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
- ``"on_stall"``: attached to a process for ``arm_for`` (default 60 s) after a cheap
  tier of any lgf source (this one's stop-the-world, the goroutine sampler of
  :mod:`lgf.golang.sampler`, the tracepoint source's blocking syscalls) sees a stall there, then
  detached again. A process in trouble gets goroutine detail while the trouble lasts; a healthy
  one pays nothing. The first stall of an episode is seen only by the cheap tier: the sampler,
  which reads unarmed targets' goroutines from outside every ``sample_interval`` (no probe),
  reports a park it saw with ``extra["precision"] = "sampled"`` (a lower bound, within two
  intervals of the truth).

Attaching is per process (a uprobe with a pid filter costs nothing in other processes running
the same binary). Targets that are refused (not Go, unknown layout) or that exit mid-trace are
counted and logged; they never stop the source. ``stop()`` detaches every probe (the tests read
the target's own memory for leftover breakpoints, and ``bpftool perf`` for attachments).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lgf import Component, Event, hookimpl, idle
from lgf.bpf import constants as bpf_constants
from lgf.bpf import loader, sites
from lgf.causes import GC_ASSIST_REASON, INTERNAL_WAIT_REASONS, IO_WAIT_REASON
from lgf.errors import TargetRefused
from lgf.golang import runnable
from lgf.golang.gobinary import runtime_function_entries
from lgf.histories import RetiredHistograms
from lgf.idle import LOOP_HEAD_REASONS, NO_CASES_REASON, options_of
from lgf.options import Duration

from .uprobe_verdict import EV_IDLE, EV_LOOP_HEAD, EV_SCOPE_REQUEST, LoopHeadJudge, verdict_into

C_FILE = Path(__file__).with_name("uprobe.c")

STALL_NAMES = bpf_constants.STALL_NAMES
WAIT_PARK, WAIT_RUNNABLE = 1, 2
"""uprobe.c's ``struct wait`` kinds: an open park, an open wait for a P."""
COUNTER_NAMES = bpf_constants.COUNTER_NAMES
GOROUTINE_TIER_COUNTERS = ("netpoll_ready", "netpoll_waiting", "idle_waits", "stack_cut")
MAX_HIST_PROCS = 64
"""Per-process histogram blocks of uprobe.c's ``fast_hists`` (48 KiB each; block 0 is unused): the
first 63 processes of a program get the per-switch path without a hash; the rest use ``hist``."""
FH_KINDS, FH_REASONS, FH_SLOTS = (1, 2, 5), 64, 32
"""uprobe.c's fast_hists layout: stall kinds (park, runnable, idle), wait reasons, log2 buckets."""


GOROUTINE_PROBES = (("runtime.execute", "on_execute"),)
SCHED_PROBES = (("runtime.ready", "on_ready"),)
NETPOLL_PROBES = (("runtime.netpoll", "on_netpoll"),)
HTTP_PROBES = (("net/http.serverHandler.ServeHTTP", "on_serve_http"),)
"""With the goroutine tier, when the binary has it: each request's *http.Request, per goroutine."""
TIER_MARK = "on_execute"
"""The probe whose presence means "goroutine tier on" for a process."""
CHEAP_PROBES = (("runtime.stopTheWorldWithSema", "on_stw_stop"),
                ("runtime.startTheWorldWithSema", "on_stw_start"), ("runtime.gcStart", "on_gc_start"))

log = logging.getLogger("lgf.uprobe")


@dataclass
class UprobeOptions:
    """``[[sources]] use = "uprobe"``."""

    goroutine_tier: Literal["always", "never", "on_stall"] = "always"
    """When per-goroutine probes are attached to a process (see the module docs for the cost)."""
    arm_for: Duration = Duration(60_000_000_000)
    """With ``on_stall``: how long the goroutine tier stays attached after a stall."""
    sched_latency: bool = True
    """Probe ``runtime.ready`` to split park time from scheduling latency (one more hit per park)."""
    netpoll_calls: bool = False
    """Probe ``runtime.netpoll`` to count netpoller calls (a hit per call: off by default)."""
    max_frames: int = 64
    """User stack frames read for each wait over the threshold (from the goroutine's saved
    context): the outermost frames decide idle or stall (``lgf.idle``), so the walk must reach the
    goroutine's start; a deeper stack is reported as a stall with ``extra["stack_cut"]``."""
    ringbuf_pages: int = 64
    """Ring buffer size in pages (a power of two); a full ring counts lgf_ringbuf_lost_total."""
    max_goroutines: int = 65536
    """Wait slots (parked or runnable goroutines tracked at once, over all targets; a power of two).
    A slot taken by another live wait is reused and counted in ``wait_slot_reused``."""
    max_sites: int = 65536
    """Prefixes of the kernel's code-site table (``lgf.bpf.sites``; about 100 per net/http binary)."""
    max_runtime_funcs: int = 262144
    """Entry addresses of runtime functions kept in BPF, over all distinct target binaries (about
    2,500 per binary), to tell the runtime's own goroutines from the program's."""
    rescan_interval: Duration = Duration(250_000_000)
    """How often /proc is scanned for target processes starting and exiting."""
    sample_interval: Duration = Duration(20_000_000)
    """With ``on_stall``: how often the goroutine sampler (``lgf.golang.sampler``) reads an unarmed
    target's goroutines; a park is seen once it lasts threshold + one interval."""
    sample_max_goroutines: int = 100_000
    """A target with more goroutines than this is not sampled (counted, not read)."""
    sample_ignore_reasons: list[str] = dataclasses.field(default_factory=list)
    """Wait reasons the sampler neither follows, arms on nor reports. Empty by default: an idle
    server's accept loop and keep-alive connections are told from stalls by their stacks
    (:mod:`lgf.idle`), so a handler waiting on the network is still seen. ``sample_interval =
    "0s"`` turns the sampler off."""

    def __post_init__(self):
        if self.ringbuf_pages <= 0 or self.ringbuf_pages & (self.ringbuf_pages - 1):
            raise ValueError("ringbuf_pages: must be a power of two")
        if self.max_goroutines <= 0 or self.max_goroutines & (self.max_goroutines - 1):
            raise ValueError("max_goroutines: must be a power of two")
        if not 1 <= self.max_frames <= 127:
            raise ValueError("max_frames: must be between 1 and 127")


class _Program:
    """One compiled BPF object, shared by every target whose Go runtime layout gives the same
    constants (a host running three Go versions compiles at most three)."""

    def __init__(self, constants: dict[str, int], on_event: Callable[[_Program, object], None]):
        self.constants = constants
        self.bpf = loader.load(C_FILE, constants)
        self._verify_goroutine_tier()
        self.bpf[b"events"].open_ring_buffer(lambda _cpu, data, _size: on_event(self, data))
        self.poller = loader.RingPoller(self.bpf, "uprobe")
        self.poller.start()
        self.lost_seen: dict[int, int] = {}
        self.sched_switch = False
        self.binaries: dict[str, int] = {}
        """build id (or path) -> index in the runtime_funcs and sites maps."""
        self.hslots: dict[int, int] = {}
        """pid -> its fast_hists block (1 .. MAX_HIST_PROCS - 1)."""

    def take_hslot(self, pid: int) -> int:
        """A zeroed fast_hists block for ``pid`` (its own again after an exec), 0 when all are taken."""
        if pid in self.hslots:
            return self.hslots[pid]
        free = sorted(set(range(1, MAX_HIST_PROCS)) - set(self.hslots.values()))
        if not free:
            return 0
        table = self.bpf[b"fast_hists"]
        table[table.Key(free[0])] = table.Leaf()
        self.hslots[pid] = free[0]
        return free[0]

    def fast_hist(self, pid: int):
        """``pid``'s fast_hists block (a ctypes struct), or None."""
        slot = self.hslots.get(pid)
        if not slot:
            return None
        try:
            return self.bpf[b"fast_hists"][self.bpf[b"fast_hists"].Key(slot)]
        except Exception:  # noqa: BLE001 - a map torn down under us reads as empty
            return None

    def _verify_goroutine_tier(self) -> None:
        """Load (verify) the goroutine tier's programs now, with the cheap tier, so that arming
        only attaches them: the kernel's verifier walks on_execute's stack-walk loop for about
        20 ms (more on a loaded host), and a park that begins while the tier is still arming is
        seen by neither tier."""
        from bcc import BPF

        for fn in dict.fromkeys(fn for _, fn in GOROUTINE_PROBES + SCHED_PROBES + NETPOLL_PROBES + HTTP_PROBES
                                + runnable.probes()):
            self.bpf.load_func(fn.encode(), BPF.KPROBE)
        self.bpf.load_func(b"on_sched_switch", BPF.RAW_TRACEPOINT)

    def register_binary(self, binary, rules) -> int:
        """Load ``binary``'s runtime function entries and code sites (``rules``: lgf.idle's
        IdleRules) into BPF once; returns its index."""
        key = binary.build_id or binary.path
        idx = self.binaries.get(key)
        if idx is not None:
            return idx
        idx = len(self.binaries) + 1
        table = self.bpf[b"runtime_funcs"]
        for addr in runtime_function_entries(binary):
            k = table.Key(idx, 0, addr)
            table[k] = table.Leaf(1)
        sites.load(self.bpf[b"sites"], idx, sites.site_ranges(rules, binary))
        self.binaries[key] = idx
        return idx

    def close(self) -> None:
        self.poller.stop()
        self.bpf.cleanup()


@dataclass
class _Attached:
    target: object  # lgf.golang.discovery.Target
    program: _Program
    wait_reasons: list[str]
    stw_reasons: list[str]
    load_bias: int
    probes: dict[str, tuple[str, int]]
    """fn_name -> (BCC probe name, ELF address) of every uprobe attached for this process."""
    armed_until: float = 0.0
    goroutine_tier_seen: bool = False


class UprobeSource:
    """See the module docstring. Made by the host as ``UprobeSource(options, ctx)``."""

    def __init__(self, options: UprobeOptions | None, ctx):
        self.options = options or UprobeOptions()
        self.ctx = ctx
        self.log = getattr(ctx, "log", None) or log
        self.threshold_ns = int(ctx.config.host.threshold)
        self._programs: dict[tuple, _Program] = {}
        self._attached: dict[int, _Attached] = {}
        self._lock = threading.RLock()
        self._emit: Callable[[Event], None] | None = None
        self._watcher = None
        self._stop = threading.Event()
        self._housekeeper: threading.Thread | None = None
        self._sampler = None  # lgf.golang.sampler.GoroutineSampler, with on_stall
        self._tier_ready: dict[int, int] = {}
        """pid -> CLOCK_MONOTONIC ns when its goroutine tier was completely attached. Read by the
        sampler's thread without ``_lock`` (one dict lookup), which the attach holds throughout."""
        self._retired = RetiredHistograms()
        """Histograms of exited targets, folded by labels (``lgf.histories``)."""
        idle = options_of(ctx.config)
        self.idle_rules, self.report_idle = idle.rules(), idle.report_idle
        self._verdicts = LoopHeadJudge(self.idle_rules)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, emit: Callable[[Event], None]) -> None:
        from lgf.golang.discovery import ProcessWatcher

        self._emit = emit
        if self.options.goroutine_tier == "on_stall" and self.options.sample_interval > 0:
            from lgf.golang.sampler import GoroutineSampler

            self._sampler = GoroutineSampler(
                self.options.sample_interval, self.options.sample_max_goroutines, self.threshold_ns,
                emit, self.arm, self._tier_ready.get, ignore_reasons=self.options.sample_ignore_reasons,
                stats=self.ctx.stats, logger=self.log, rules=idle.rules_of(self.ctx.config),
                report_idle=idle.options_of(self.ctx.config).report_idle,
                tier_park_start=self._tier_park_start, tier_runnable=self._tier_runnable)
            self._sampler.start()
        self._watcher = ProcessWatcher(self.ctx.config.targets, self._on_start, self._on_exit,
                                       interval=self.options.rescan_interval / 1e9, logger=self.log)
        self._watcher.poll()  # the processes already running are attached before start returns
        self._watcher.start()
        self.ctx.services.arming.register(self.arm)
        self._housekeeper = threading.Thread(target=self._housekeep, name="lgf-uprobe-house",
                                             daemon=True)
        self._housekeeper.start()

    def stop(self) -> None:
        self.ctx.services.arming.unregister(self.arm)
        self._stop.set()
        if self._watcher is not None:
            self._watcher.stop()
        if self._housekeeper is not None:
            self._housekeeper.join(timeout=5)
        if self._sampler is not None:
            self._sampler.stop()
        with self._lock:
            for pid in list(self._attached):
                self._detach_all(pid)
            for prog in self._programs.values():
                self._collect_lost(prog)
                prog.close()
            self._programs.clear()
        self._verdicts.close()

    def is_attached(self, pid: int) -> bool:
        """Whether ``pid`` is traced now (its cheap tier at least)."""
        with self._lock:
            return pid in self._attached

    def probe_addresses(self, pid: int) -> dict[str, int]:
        """``{probe function: address}`` of every uprobe attached to ``pid`` now (tests, inspect)."""
        with self._lock:
            att = self._attached.get(pid)
            return {fn: addr + att.load_bias for fn, (_, addr) in att.probes.items()} if att else {}

    def stats(self) -> dict:
        with self._lock:
            return {"targets": len(self._attached), "programs": len(self._programs),
                    "armed": sum(1 for a in self._attached.values() if self._goroutine_tier_on(a))}

    # -- targets ------------------------------------------------------------------------------

    def _on_start(self, target) -> None:
        try:
            self._attach_target(target)
        except TargetRefused as exc:
            self.ctx.stats.inc("lgf_targets_refused_total", source="uprobe")
            self.log.warning("uprobe: not tracing pid %d: %s", target.pid, exc)

    def _on_exit(self, target) -> None:
        with self._lock:
            att = self._attached.get(target.pid)
            if att is None:
                return
            # Its counts join its service's series before they leave the maps (lgf.histories).
            self._retired.retire(self._histogram_rows(only_pid=target.pid))
            loader.delete_pid_entries(att.program.bpf[b"hist"], target.pid)
            hslot = att.program.hslots.get(target.pid)
            if hslot:  # zeroed too: an exec'd process keeps its block and starts its counts afresh
                blocks = att.program.bpf[b"fast_hists"]
                blocks[blocks.Key(hslot)] = blocks.Leaf()
            self._detach_all(target.pid)
            if self._sampler is not None:
                self._sampler.remove(target.pid)
            # Its wait slots need no cleanup: each is tagged with pid and g and simply reused.
            self._verdicts.forget(target.pid)
            if not Path(f"/proc/{target.pid}").exists():  # gone, not exec'd: its block is free
                att.program.hslots.pop(target.pid, None)
            try:
                del att.program.bpf[b"procs"][att.program.bpf[b"procs"].Key(target.pid)]
            except KeyError:
                pass
        self.log.info("uprobe: pid %d exited; detached", target.pid)

    def _constants(self, binary) -> dict[str, int]:
        reasons = binary.wait_reasons
        if not reasons:
            raise binary.refuse("no wait-reason table: cannot name what goroutines wait for")
        internal = [i for i, r in enumerate(reasons) if r in INTERNAL_WAIT_REASONS]
        lo, hi = loader.masks_of(internal)
        io_wait = reasons.index(IO_WAIT_REASON) if IO_WAIT_REASON in reasons else 255
        return {
            "THRESHOLD_NS": self.threshold_ns,
            "G_GOID": binary.field_offset("g", "goid"),
            "G_STATUS": binary.field_offset("g", "atomicstatus"),
            "G_WAITREASON": binary.field_offset("g", "waitreason"),
            "REASON_PREEMPTED": reasons.index("preempted") if "preempted" in reasons else 255,
            "G_SCHED": binary.field_offset("g", "sched"),
            "G_STARTPC": binary.field_offset("g", "startpc"),
            "G_LABELS": _optional_offset(binary, "g", "labels"),
            "G_M": binary.field_offset("g", "m"),
            **_span("G_SPAN", binary, ("m", "atomicstatus", "waitreason")),
            "MAX_RUNTIME_FUNCS": self.options.max_runtime_funcs,
            "GOBUF_PC": binary.field_offset("gobuf", "pc"),
            "GOBUF_BP": binary.field_offset("gobuf", "bp"),
            "REASON_IO_WAIT": io_wait,
            "INTERNAL_LO": lo,
            "INTERNAL_HI": hi,
            "MAX_FRAMES": self.options.max_frames,
            "RINGBUF_PAGES": self.options.ringbuf_pages,
            "MAX_GOROUTINES": self.options.max_goroutines,
            "MAX_SITES": self.options.max_sites,
            **runnable.constants(binary),
            "MAX_HIST_PROCS": MAX_HIST_PROCS,
            "REPORT_IDLE": int(self.report_idle),
            "REASON_NO_CASES": reasons.index(NO_CASES_REASON) if NO_CASES_REASON in reasons else 255,
            **dict(zip(("LOOP_HEAD_LO", "LOOP_HEAD_HI"), loader.masks_of(
                i for i, r in enumerate(reasons) if r in LOOP_HEAD_REASONS), strict=True)),
        }

    def _program_for(self, binary) -> _Program:
        constants = self._constants(binary)
        key = tuple(sorted(constants.items()))
        prog = self._programs.get(key)
        if prog is None:
            prog = _Program(constants, self._on_ring_event)
            self._programs[key] = prog
        return prog

    def _attach_target(self, target) -> None:
        binary = target.binary
        with self._lock:
            if self._stop.is_set() or target.pid in self._attached:
                return
            prog = self._program_for(binary)
            att = _Attached(target=target, program=prog, wait_reasons=list(binary.wait_reasons),
                            stw_reasons=list(binary.stw_reasons), load_bias=target.load_bias(),
                            probes={})
            self._attached[target.pid] = att
            procs = prog.bpf[b"procs"]
            procs[procs.Key(target.pid)] = procs.Leaf(prog.register_binary(binary, self.idle_rules),
                                                      prog.take_hslot(target.pid), att.load_bias)
            self._attach_probes(att, CHEAP_PROBES, required=("runtime.stopTheWorldWithSema",
                                                             "runtime.startTheWorldWithSema"))
            if self.options.goroutine_tier == "always":
                self._attach_goroutine_tier(att)
        if self._sampler is not None:
            self._sampler.add(target)
        self.ctx.stats.set("lgf_targets_attached", len(self._attached), source="uprobe")
        self.log.info("uprobe: tracing pid %d (%s, %s)", target.pid, target.exe, binary.go_version)

    def _attach_probes(self, att: _Attached, probes, required=()) -> None:
        binary, pid = att.target.binary, att.target.pid
        path = att.target.path or att.target.exe
        for func, fn_name in probes:
            if fn_name in att.probes:
                continue
            try:
                addr = runnable.probe_address(binary, func)  # after the stack check (or a call site)
                if addr is None:
                    raise binary.refuse(f"function {func} not found")
                ev_name = loader.attach_uprobe(att.program.bpf, path, addr, fn_name, pid)
                att.probes[fn_name] = (ev_name, addr)
            except Exception as exc:  # BCC raises bare Exception; the process may have just exited
                self.ctx.stats.inc("lgf_attach_failures_total", source="uprobe", probe=func)
                if func in required:
                    self.log.warning("uprobe: pid %d: cannot probe %s: %s", pid, func, exc)
                else:
                    self.log.info("uprobe: pid %d: cannot probe %s: %s", pid, func, exc)

    def _goroutine_probes(self, binary=None):
        """The goroutine tier's probes (for ``binary``: only those it has, HTTP_PROBES being
        optional; without it: every probe the tier may have attached, to detach them)."""
        http = tuple(p for p in HTTP_PROBES if binary is None or binary.func_addr(p[0]) is not None)
        return (GOROUTINE_PROBES + (SCHED_PROBES if self.options.sched_latency else ())
                + (NETPOLL_PROBES if self.options.netpoll_calls else ()) + http
                + (runnable.probes(binary) if self.options.sched_latency else ()))

    def _attach_goroutine_tier(self, att: _Attached) -> None:
        if self._sampler is not None:  # the sampler reports these parks: no stale note may too
            self._forget_waits(att, self._sampler.parked_gs(att.target.pid))
        # sched_switch first: a park the tier notes is then noted when it begins (a thread that
        # goes idle after its goroutine parks would otherwise note it late, at its next execute).
        self._sync_sched_switch(att.program, attaching=True)
        self._attach_probes(att, self._goroutine_probes(att.target.binary), required=("runtime.execute",))
        att.goroutine_tier_seen = True
        self._sync_sched_switch(att.program)
        if self._goroutine_tier_on(att):  # complete: the sampler's hand-off time
            self._tier_ready[att.target.pid] = time.monotonic_ns()

    def _sync_sched_switch(self, prog: _Program, attaching: bool = False) -> None:
        """The sched_switch tracepoint runs for every context switch on the host: keep it attached
        only while some process of this program has its goroutine tier on (or being attached)."""
        wanted = attaching or any(a.program is prog and self._goroutine_tier_on(a) for a in self._attached.values())
        if wanted and not prog.sched_switch:
            prog.bpf.attach_raw_tracepoint(tp=b"sched_switch", fn_name=b"on_sched_switch")
            prog.sched_switch = True
        elif not wanted and prog.sched_switch:
            prog.bpf.detach_raw_tracepoint(tp=b"sched_switch")
            prog.sched_switch = False

    def _detach_probes(self, att: _Attached, fn_names) -> None:
        for fn_name in fn_names:
            spot = att.probes.pop(fn_name, None)
            if spot is None:
                continue
            ev_name, _addr = spot
            try:
                loader.detach_uprobe(att.program.bpf, ev_name)
            except Exception as exc:  # already gone with its process: nothing left to remove
                self.log.debug("uprobe: detach %s from pid %d: %s", fn_name, att.target.pid, exc)

    def _detach_all(self, pid: int) -> None:
        att = self._attached.pop(pid, None)
        if att is not None:
            self._detach_probes(att, list(att.probes))
            self._tier_ready.pop(pid, None)
            self._sync_sched_switch(att.program)
            self.ctx.stats.set("lgf_targets_attached", len(self._attached), source="uprobe")

    def _goroutine_tier_on(self, att: _Attached) -> bool:
        return TIER_MARK in att.probes

    def _tier_wait_start(self, pid: int, g: int, kind: int) -> int | None:
        """Start (CLOCK_MONOTONIC ns) of the open wait of ``kind`` (``WAIT_PARK``, ``WAIT_RUNNABLE``)
        the tier has a note of for goroutine ``g`` in ``pid`` (uprobe.c's ``wait_slot``), or None.
        Called on the sampler's thread: no ``_lock`` (an attach holds it throughout)."""
        att = self._attached.get(pid)
        if att is None:
            return None
        try:
            waits = att.program.bpf[b"waits"]
            slot = waits[waits.Key(bpf_constants.wait_slot_index(pid, g, att.program.constants["MAX_GOROUTINES"]))]
        except Exception:  # noqa: BLE001 - a program closed under us: no note
            return None
        return int(slot.start_ns) if slot.g == g and slot.tgid == pid and slot.kind == kind else None

    def _tier_park_start(self, pid: int, g: int) -> int | None:
        """The start of the park the tier noted for ``g`` (the sampler's hand-off asks)."""
        return self._tier_wait_start(pid, g, WAIT_PARK)

    def _tier_runnable(self, pid: int, g: int, after_ns: int) -> bool:
        """Whether the tier holds ``g``'s wait for a P, begun after ``after_ns``: it saw g become
        runnable and reports that wait itself, so the sampler must not."""
        start = self._tier_wait_start(pid, g, WAIT_RUNNABLE)
        return start is not None and start >= after_ns

    @staticmethod
    def _forget_waits(att: _Attached, gs: list[int]) -> None:
        """Close the BPF wait slots of goroutines ``gs`` (a park noted in an earlier armed period
        would otherwise end, with a stale start, when the tier sees the goroutine run again).
        The slot index is uprobe.c's ``wait_slot`` hash."""
        waits, size, pid = att.program.bpf[b"waits"], att.program.constants["MAX_GOROUTINES"], att.target.pid
        for g in gs:
            idx = waits.Key(bpf_constants.wait_slot_index(pid, g, size))
            slot = waits[idx]
            if slot.g == g and slot.tgid == pid and slot.kind:
                slot.kind = 0
                waits[idx] = slot

    def arm(self, pid: int) -> None:
        """Attach the goroutine tier to ``pid`` for ``arm_for`` (``goroutine_tier = "on_stall"``)."""
        if self.options.goroutine_tier != "on_stall":
            return
        with self._lock:
            att = self._attached.get(pid)
            if att is None:
                return
            att.armed_until = time.monotonic() + self.options.arm_for / 1e9
            if not self._goroutine_tier_on(att):
                self._attach_goroutine_tier(att)
                self.log.info("uprobe: pid %d: goroutine tier armed for %.0f s", pid,
                              self.options.arm_for / 1e9)

    def _housekeep(self) -> None:
        """Once a second: disarm expired goroutine tiers and count ring-buffer losses."""
        while not self._stop.wait(1.0):
            now = time.monotonic()
            with self._lock:
                for pid, att in list(self._attached.items()):
                    if (self.options.goroutine_tier == "on_stall" and self._goroutine_tier_on(att)
                            and now > att.armed_until):
                        self._detach_probes(att, [fn for _, fn in self._goroutine_probes()])
                        self._tier_ready.pop(pid, None)  # after: the sampler takes over then
                        self._sync_sched_switch(att.program)
                        self.log.info("uprobe: pid %d: goroutine tier disarmed", pid)
                for prog in self._programs.values():
                    self._collect_lost(prog)

    def _collect_lost(self, prog: _Program) -> None:
        for pid, n in self._read_counters(prog, "ringbuf_lost").items():
            delta = n - prog.lost_seen.get(pid, 0)
            if delta > 0:
                prog.lost_seen[pid] = n
                self.ctx.stats.inc("lgf_ringbuf_lost_total", delta, source="uprobe")
                self.log.warning("uprobe: ring buffer full: %d stall events of pid %d lost "
                                 "(raise ringbuf_pages)", delta, pid)

    # -- events -------------------------------------------------------------------------------

    def _on_ring_event(self, prog: _Program, data) -> None:
        raw = prog.bpf[b"events"].event(data)
        pid = int(raw.pid)
        att = self._attached.get(pid)
        ev = self._event_of(raw, att)
        flags = int(raw.flags)
        if flags & (EV_SCOPE_REQUEST | EV_IDLE) and att is not None:
            site = self._verdicts.decided_by(att.target, ev)
            if site:
                ev.extra["decided_by"] = site
        if flags & EV_LOOP_HEAD and att is not None:
            idle = self._verdicts.is_idle(att.target, ev)
            self._verdicts.count(pid, idle, int(raw.reason), ev.duration_ns)
            if idle:
                ev.extra["verdict"] = "idle"
                ev.extra["decided_by"] = "loop head"
                if not self.report_idle:
                    return
        if (ev.extra["stall"] in ("park", "gc_assist") and self._sampler is not None
                and not self._sampler.claim(pid, ev.goid, ev.start_ns, ev.end_ns)):
            return  # the sampler reported this park (it began before the tier could note it)
        if ev.extra["stall"] == "stw":
            self.ctx.services.arming.notify_stall(pid)
        elif self.ctx.services.trace_capture.enabled:  # labels and traceparent while the objects surely live
            self.ctx.services.trace_capture.capture(ev, None, self.ctx.stats)
        if self._emit is not None:
            self._emit(ev)

    def _event_of(self, raw, att: _Attached | None) -> Event:
        kind = STALL_NAMES.get(int(raw.kind), "park")
        reason = int(raw.reason)
        extra: dict = {"stall": kind}
        ev = Event(source="uprobe", pid=int(raw.pid), tid=int(raw.tid),
                   comm=raw.comm.decode("utf-8", "replace"), goid=int(raw.goid),
                   start_ns=int(raw.start_ns), end_ns=int(raw.end_ns),
                   duration_ns=int(raw.end_ns) - int(raw.start_ns), pcs=loader.pcs_of(raw), extra=extra)
        if att is not None:
            target = att.target
            ev.exe, ev.go_version, ev.build_id = target.exe, target.binary.go_version, target.binary.build_id
            if att.load_bias:
                extra["load_bias"] = att.load_bias
            if raw.labels:
                extra["pprof_labels_addr"] = int(raw.labels)
            if raw.labels or raw.http_req:  # heap addresses: trace_context reads them if no GC since
                extra["gc_cycles"] = _gc_cycles(att.program, int(raw.pid))
            if kind == "stw":
                extra["stw_reason"] = _name(att.stw_reasons, reason)
            else:
                if kind == "runnable":  # what made it runnable rides in the reason's high byte
                    reason, extra["runnable_from"] = runnable.split_reason(reason, att.wait_reasons)
                ev.wait_reason = "" if reason == runnable.NO_REASON else _name(att.wait_reasons, reason)
                if kind == "park" and ev.wait_reason == GC_ASSIST_REASON:
                    extra["stall"] = "gc_assist"
        if kind != "stw":
            verdict_into(ev, int(raw.flags), int(raw.http_req))
        return ev.finish()

    # -- maps: histograms and counters ----------------------------------------------------------

    def _read_counters(self, prog: _Program, only: str | None = None) -> dict[int, int]:
        """``{pid: value}`` of one counter (``only``), or of every counter keyed ``(pid, name)``."""
        out: dict = {}
        for key, value in loader.read_map_items(prog.bpf[b"counters"]):
            name = COUNTER_NAMES[key.which] if key.which < len(COUNTER_NAMES) else str(key.which)
            if only is None:
                out[(int(key.tgid), name)] = int(value.value)
            elif name == only:
                out[int(key.tgid)] = int(value.value)
        return out

    def runtime_counters(self, pid: int) -> dict:
        """Netpoller, GC and ring-buffer counters of ``pid`` (a missing key = not measured)."""
        with self._lock:
            att = self._attached.get(pid)
            if att is None:
                return {}
            values = self._read_counters(att.program)
            out = {name: 0 for name in ("gc_cycles", "stw_count", "ringbuf_lost", "wait_slot_reused")}
            if att.goroutine_tier_seen:
                out.update({name: 0 for name in GOROUTINE_TIER_COUNTERS})
                if self.options.netpoll_calls:
                    out["netpoll_calls"] = 0
            for (p, name), v in values.items():
                if p == pid and name in out:
                    out[name] = max(v, 0)
            if "idle_waits" in out:  # loop heads are judged idle in Python (uprobe_verdict)
                out["idle_waits"] += self._verdicts.idle_waits.get(pid, 0)
            block = att.program.fast_hist(pid) if att.goroutine_tier_seen else None
            if block is not None:
                out["netpoll_waiting"] = max(out["netpoll_waiting"] + int(block.netpoll_waiting), 0)
                out["netpoll_ready"] += int(block.netpoll_ready)
            return out

    def histograms(self) -> list[dict]:
        """Every duration measured in BPF, per process, stall kind and wait reason: log2(us) buckets.
        Processes that exited are folded in by their labels (``pid=""``, ``lgf.histories``)."""
        with self._lock:
            return self._histogram_rows() + self._retired.rows()

    def _histogram_rows(self, only_pid: int | None = None) -> list[dict]:
        """The rows of live processes (``only_pid``: of that one); called with ``self._lock`` held."""
        out = []
        programs = list(self._programs.values())
        attached = dict(self._attached)
        names_of = {name: kind for kind, name in STALL_NAMES.items()}
        python_side = self._verdicts.hist_items()
        for prog in programs:
            groups: dict[tuple, dict[int, int]] = {}
            for key, value in loader.read_map_items(prog.bpf[b"hist"]):
                if only_pid is not None and int(key.tgid) != only_pid:
                    continue
                g = groups.setdefault((int(key.tgid), int(key.kind), int(key.reason)), {})
                g[int(key.slot)] = g.get(int(key.slot), 0) + int(value.value)
            for pid in list(prog.hslots):  # the per-switch path's blocks
                if only_pid is not None and pid != only_pid:
                    continue
                block = prog.fast_hist(pid)
                if block is not None:
                    _add_fast_hist(groups, pid, block)
            for (pid, stall, reason), slots in python_side:  # loop-head waits judged in Python
                if only_pid is not None and pid != only_pid:
                    continue
                if attached.get(pid) is not None and attached[pid].program is prog:
                    g = groups.setdefault((pid, names_of[stall], reason), {})
                    for slot, n in slots.items():
                        g[slot] = g.get(slot, 0) + n
            for (pid, kind, reason), slots in sorted(groups.items()):
                att = attached.get(pid)
                stall = STALL_NAMES.get(kind, str(kind))
                names = (att.stw_reasons if stall == "stw" else att.wait_reasons) if att else []
                if stall == "runnable":  # the high byte says what made it runnable (lgf.golang.runnable)
                    reason &= 0xFF
                comm = att.target.comm if att else loader.comm_of(pid)
                out.append({"labels": {"pid": str(pid), "comm": comm, "exe": att.target.exe if att else "",
                                       "stall": stall,
                                       "wait_reason": "" if reason == runnable.NO_REASON and stall == "runnable"
                                       else _name(names, reason)},
                            "log2_us": loader.log2_buckets(slots)})
        return out


def _gc_cycles(prog, pid: int) -> int:
    """GC cycles ``pid`` has started (the gcStart probe's counter), stamped on an event that carries
    addresses into the heap: trace_context reads them only if no cycle has started since, so an
    object the goroutine let go of cannot have been freed and reused (one map lookup)."""
    table = prog.bpf[b"counters"]
    value = table.get(table.Key(pid, COUNTER_NAMES.index("gc_cycles")))
    return int(value.value) if value is not None else 0


def _optional_offset(binary, struct: str, field: str) -> int:
    """A field only some features read (g.labels for trace_context): -1 when the layout lacks it,
    so the target is still traced without that feature."""
    try:
        return binary.field_offset(struct, field)
    except TargetRefused:
        return -1


def _span(prefix: str, binary, fields: tuple[str, ...]) -> dict[str, int]:
    """``{PREFIX_LO, PREFIX_LEN}``: the bytes of runtime.g holding ``fields``, read at once in BPF
    (one user-memory read costs about as much for 8 bytes as for 150)."""
    offs = [binary.field_offset("g", f) for f in fields]
    lo, hi = min(offs), max(offs) + 8
    if hi - lo > 256:
        raise binary.refuse(f"runtime.g fields {fields} span {hi - lo} bytes (lgf reads at most 256)")
    return {f"{prefix}_LO": lo, f"{prefix}_LEN": hi - lo}


def _add_fast_hist(groups: dict, pid: int, block) -> None:
    """Add one fast_hists block's nonzero cells to ``groups`` ({(pid, kind, reason): {slot: n}})."""
    cells = memoryview(bytes(block.cells)).cast("Q")
    per_kind = FH_REASONS * FH_SLOTS
    for i, n in enumerate(cells):
        if n:
            k, rest = divmod(i, per_kind)
            reason, slot = divmod(rest, FH_SLOTS)
            g = groups.setdefault((pid, FH_KINDS[k], reason), {})
            g[slot] = g.get(slot, 0) + n


def _name(names: list[str], index: int) -> str:
    return names[index] if 0 <= index < len(names) else f"reason {index}"


@hookimpl
def lgf_components():
    return [Component("source", "uprobe", UprobeSource, UprobeOptions,
                      doc="goroutine parks, scheduling latency and GC stop-the-world via uprobes")]
