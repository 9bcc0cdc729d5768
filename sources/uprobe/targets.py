"""The processes the uprobe source traces: each one's program, layout and attached probes.

Attaching is per process (a uprobe with a pid filter costs nothing in other processes running the
same binary). A target gets its program (:mod:`lgf.sources.uprobe.program`), its entry in the
``procs`` map (which binary, which histogram block, its PIE load bias) and the cheap tier's
probes; the goroutine tier's probes come and go with arming (:mod:`lgf.sources.uprobe.tiers`).
A probe that cannot be placed is counted (``lgf_attach_failures_total``) and logged; it never stops
the source. Everything here runs under :attr:`Targets.lock`.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from lgf.bpf import loader

from . import runnable
from .probes import CHEAP_PROBES, CHEAP_REQUIRED, TIER_MARK
from .program import Program, Programs


@dataclass
class Attached:
    """One traced process."""

    target: object  # lgf.golang.discovery.Target
    program: Program
    wait_reasons: list[str]
    stw_reasons: list[str]
    load_bias: int
    probes: dict[str, tuple[str, int]] = field(default_factory=dict)
    """fn_name -> (BCC probe name, ELF address) of every uprobe attached for this process."""
    armed_until: float = 0.0
    goroutine_tier_seen: bool = False
    tier_since: int | None = None
    """CLOCK_MONOTONIC ns when the goroutine tier was completely attached (None: off or attaching).
    Read by the sampler's thread without the lock, which an attach holds throughout."""
    tier_periods: deque = field(default_factory=lambda: deque(maxlen=64))
    """(on, off) CLOCK_MONOTONIC ns of the tier's last armed slices (tests and benches: which
    stalls fell about a hand-back to the sampler)."""

    def tier_on(self) -> bool:
        return TIER_MARK in self.probes


class Targets:
    """The attached processes of one source, and how probes go on and off them."""

    def __init__(self, programs: Programs, stats, log):
        self.programs = programs
        self.stats, self.log = stats, log
        self.attached: dict[int, Attached] = {}
        """pid -> its record; read without the lock by the sampler's and the ring buffer's threads."""
        self.lock = threading.RLock()

    def add(self, target, idle_rules) -> Attached:
        """Attach the cheap tier to ``target`` (the caller holds :attr:`lock`); raises
        TargetRefused when its binary cannot be traced."""
        binary = target.binary
        prog = self.programs.for_binary(binary)
        att = Attached(target=target, program=prog, wait_reasons=list(binary.wait_reasons),
                       stw_reasons=list(binary.stw_reasons), load_bias=target.load_bias())
        self.attached[target.pid] = att
        procs = prog.bpf[b"procs"]
        procs[procs.Key(target.pid)] = procs.Leaf(prog.register_binary(binary, idle_rules),
                                                  prog.take_hslot(target.pid), att.load_bias)
        self.attach_probes(att, CHEAP_PROBES, required=CHEAP_REQUIRED)
        return att

    def attach_probes(self, att: Attached, probes, required=()) -> None:
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
                self.stats.inc("lgf_attach_failures_total", source="uprobe", probe=func)
                if func in required:
                    self.log.warning("uprobe: pid %d: cannot probe %s: %s", pid, func, exc)
                else:
                    self.log.info("uprobe: pid %d: cannot probe %s: %s", pid, func, exc)

    def detach_probes(self, att: Attached, fn_names) -> None:
        for fn_name in fn_names:
            spot = att.probes.pop(fn_name, None)
            if spot is None:
                continue
            ev_name, _addr = spot
            try:
                loader.detach_uprobe(att.program.bpf, ev_name)
            except Exception as exc:  # already gone with its process: nothing left to remove
                self.log.debug("uprobe: detach %s from pid %d: %s", fn_name, att.target.pid, exc)

    def sync_sched_switch(self, prog: Program, attaching: bool = False) -> None:
        """The sched_switch tracepoint runs for every context switch on the host: keep it attached
        only while some process of this program has its goroutine tier on (or being attached)."""
        wanted = attaching or any(a.program is prog and a.tier_on() for a in self.attached.values())
        if wanted and not prog.sched_switch:
            prog.bpf.attach_raw_tracepoint(tp=b"sched_switch", fn_name=b"on_sched_switch")
            prog.sched_switch = True
        elif not wanted and prog.sched_switch:
            prog.bpf.detach_raw_tracepoint(tp=b"sched_switch")
            prog.sched_switch = False

    def detach_all(self, pid: int) -> None:
        """Detach every probe of ``pid`` and forget it."""
        att = self.attached.pop(pid, None)
        if att is not None:
            self.detach_probes(att, list(att.probes))
            att.tier_since = None
            self.sync_sched_switch(att.program)
            self.stats.set("lgf_targets_attached", len(self.attached), source="uprobe")

    def drop(self, pid: int) -> None:
        """``pid`` exited (or exec'd): clear its map entries and detach it. Its wait slots need no
        cleanup: each is tagged with pid and g and simply reused."""
        att = self.attached.get(pid)
        if att is None:
            return
        prog = att.program
        loader.delete_pid_entries(prog.bpf[b"hist"], pid)
        hslot = prog.hslots.get(pid)
        if hslot:  # zeroed too: an exec'd process keeps its block and starts its counts afresh
            blocks = prog.bpf[b"fast_hists"]
            blocks[blocks.Key(hslot)] = blocks.Leaf()
        self.detach_all(pid)
        if not Path(f"/proc/{pid}").exists():  # gone, not exec'd: its block is free
            prog.hslots.pop(pid, None)
        try:
            del prog.bpf[b"procs"][prog.bpf[b"procs"].Key(pid)]
        except KeyError:
            pass

    def probe_addresses(self, pid: int) -> dict[str, int]:
        """``{probe function: address}`` of every uprobe attached to ``pid`` now."""
        with self.lock:
            att = self.attached.get(pid)
            return {fn: addr + att.load_bias for fn, (_, addr) in att.probes.items()} if att else {}
