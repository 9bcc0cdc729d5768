"""``[[sources]] use = "uprobe"``: the uprobe source's options (README's option table is made from
the field docstrings: ``make docs``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from lgf.options import Duration


@dataclass
class UprobeOptions:
    """``[[sources]] use = "uprobe"``."""

    goroutine_tier: Literal["always", "never", "on_stall"] = "always"
    """When per-goroutine probes are attached to a process (see the module docs for the cost)."""
    arm_slice: Duration = Duration(2_000_000_000)
    """With ``on_stall``: how long one stall arms the goroutine tier for (a stall while armed
    extends it), when ``overhead_budget`` allows: short, so that a service that keeps stalling
    pays for the tier in slices the budget can refuse, not for minutes at a time."""
    arm_for: Duration = Duration(0)
    """Deprecated (was 1 min): when set, the old policy, for a session that wants exactness at
    any price: each stall arms the tier for this long and ``overhead_budget`` is not enforced
    (still measured and exported). Kept rather than removed so that a config written for it
    keeps its meaning; unset (0), stalls arm ``arm_slice`` within the budget."""
    overhead_budget: float = 0.02
    """With ``on_stall``: the goroutine tier's estimated cost to each target, at most this share of
    the target's own CPU time (0.02: 2 %). lgf counts the tier's probe hits per process in BPF,
    prices them at ``probe_hit_cost`` and earns credit at this share of the target's CPU time; a
    stall with no credit left is not armed on (``lgf_tier_arm_refused_total{reason="budget"}``)
    and is reported by the sampler with sampled bounds. 0: no budget (arm on every stall)."""
    probe_hit_cost: Duration = Duration(0)
    """The CPU one probe hit of the goroutine tier costs the target. 0: measured once by lgf at
    start-up (a uprobe doing a typical hit's work on a ``push %rbp``, as on the Go functions, in
    lgf's own process: 1.2-1.8 us on this project's VM, less on bare metal), 1 us if that fails;
    set it to override the measurement."""
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
    """With ``on_stall``: how often the goroutine sampler (``lgf.sources.uprobe.sampler``) reads an unarmed
    target's goroutines; a park is seen once it lasts threshold + one interval."""
    sample_max_goroutines: int = 1_000_000
    """A target with more goroutines than this is not sampled: named in the log and in
    ``lgf_sampler_unwatched{pid}`` (the sampler keeps about 100 bytes per goroutine)."""
    wake_signal: bool = True
    """With ``on_stall``: in a target whose goroutines the sampler reads in turn (thousands of
    them), probe where goroutines are made runnable (``runtime.ready``, ``injectglist``, a new
    goroutine) so that one waking from a long idle park is read at the next pass
    (``lgf.sources.uprobe.wakes``). A probe hit per wake, paid from ``overhead_budget`` (off when
    that is 0, or without ``sched_latency``, whose probes these are); while on, the sampler spends
    less on reading idle pages in turn. ``lgf_sampler_wake_signal{pid}``."""
    quiet_interval: Duration = Duration(200_000_000)
    """With ``on_stall`` and ``wake_signal``: how often the sampler reads a *quiet* target in full
    (nothing followed, nothing runnable, for 5 passes in a row): in between, each
    ``sample_interval``, it reads only what its wake signal saw woken (``runtime.ready``, the
    netpoller, a new goroutine), and the parks not yet over the threshold. An idle service then
    costs lgf a small read per interval instead of a full one (about 0.5 % of a core each at 20 ms
    here: bench/bench_many_processes.py). What only full passes see is seen up to this late: a
    goroutine that runs with no wake noted (back from a blocking syscall) and parks; such a park is
    reported if it lasts the threshold after it is first seen. ``lgf_sampler_interval_seconds{pid}``;
    ``"0s"`` (or anything not over ``sample_interval``): every target read in full every interval."""
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
        if not 0 <= self.overhead_budget < 1:
            raise ValueError("overhead_budget: must be a share of CPU, 0 <= x < 1 (0.02 is 2 %)")
        if self.arm_slice <= 0:
            raise ValueError("arm_slice: must be positive")
        if self.quiet_interval < 0:
            raise ValueError("quiet_interval: must not be negative (0 turns it off)")
        if not 1 <= self.max_frames <= 127:
            raise ValueError("max_frames: must be between 1 and 127")
