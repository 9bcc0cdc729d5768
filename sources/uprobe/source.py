"""The uprobe source itself: puts its parts together (the package docstring has the design).

A target process that starts is attached (``targets.py``: its program from ``program.py``, the
cheap tier's probes, the goroutine tier too with ``goroutine_tier = "always"``) and, with
``on_stall``, handed to the sampler; one that exits is folded into the retired histograms and
detached. Once a second the housekeeper disarms expired goroutine tiers and counts ring-buffer
losses. Events come from each program's ring-buffer thread (``events.py``) and the sampler's thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from lgf import Event
from lgf.errors import TargetRefused
from lgf.idle import options_of

from .budget import Budget
from .events import EventPath
from .metrics import Metrics
from .options import UprobeOptions
from .probelimit import raise_probe_limit
from .program import Programs
from .targets import Targets
from .tiers import GoroutineTier
from .verdict import LoopHeadJudge
from .wakes import WakeSignal

log = logging.getLogger("lgf.uprobe")
HOUSEKEEP_S = 0.25


class UprobeSource:
    """Made by the host as ``UprobeSource(options, ctx)``; see :mod:`lgf.sources.uprobe`."""

    def __init__(self, options: UprobeOptions | None, ctx):
        self.options = options or UprobeOptions()
        self.ctx = ctx
        self.log = getattr(ctx, "log", None) or log
        self.threshold_ns = int(ctx.config.host.threshold)
        self.report_idle = options_of(ctx.config).report_idle
        programs = Programs(self.options, self.threshold_ns, self.report_idle, on_event=None)
        self.targets = Targets(programs, ctx.stats, self.log)
        self.verdicts = LoopHeadJudge(ctx.services)
        self.events = EventPath(self.targets, self.verdicts, ctx.services, ctx.stats, self.report_idle)
        programs.on_event = self.events.on_ring_event
        self.budget = Budget(self.options, self.targets, ctx.stats, self.log)
        self.tier = GoroutineTier(self.options, self.targets, self.log, budget=self.budget)
        self.metrics = Metrics(self.targets, self.verdicts, self.options, ctx.stats, self.log, budget=self.budget)
        self.sampler = None
        """The goroutine sampler (lgf.sources.uprobe.sampler), with ``on_stall``."""
        self.wakes = WakeSignal(self.targets, self.budget, ctx.stats, self.log)
        """Which goroutines woke, for the sampler of big processes (``wake_signal``)."""
        self._watcher = None
        self._stop = threading.Event()
        self._housekeeper: threading.Thread | None = None

    @property
    def wake_signal(self) -> bool:
        """Whether big processes get the wake signal: asked for, paid from a budget, and with the
        ``sched_latency`` probes it is made of."""
        return self.options.wake_signal and self.budget.enabled and self.options.sched_latency

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, emit: Callable[[Event], None]) -> None:
        from lgf.golang.discovery import ProcessWatcher

        self.events.emit = emit
        raise_probe_limit(self.log)  # (BCC's 1,000 is spent by a host of 200 Go services)
        if self.options.goroutine_tier == "on_stall" and self.options.sample_interval > 0:
            from .sampler import GoroutineSampler

            self.sampler = GoroutineSampler(
                self.options.sample_interval, self.threshold_ns, tier=self.tier, services=self.ctx.services,
                emit=emit, max_goroutines=self.options.sample_max_goroutines,
                ignore_reasons=self.options.sample_ignore_reasons, report_idle=self.report_idle,
                stats=self.ctx.stats, logger=self.log,
                wakes=self.wakes if self.wake_signal else None, quiet_interval_ns=self.options.quiet_interval)
            self.tier.sampler = self.events.sampler = self.sampler
            self.tier.wakes = self.sampler.wakes
            self.sampler.start()
        self._watcher = ProcessWatcher(self.ctx.config.targets, self._on_start, self._on_exit,
                                       interval=self.options.rescan_interval / 1e9, logger=self.log)
        self._watcher.poll()  # the processes already running are attached before start returns
        self._watcher.start()
        self.ctx.services.arming.register(self.tier.request)
        self._housekeeper = threading.Thread(target=self._housekeep, name="lgf-uprobe-house", daemon=True)
        self._housekeeper.start()

    def stop(self) -> None:
        self.ctx.services.arming.unregister(self.tier.request)
        self._stop.set()
        if self._watcher is not None:
            self._watcher.stop()
        if self._housekeeper is not None:
            self._housekeeper.join(timeout=5)
        if self.sampler is not None:
            self.sampler.stop()
        with self.targets.lock:
            for pid in list(self.targets.attached):
                self.targets.detach_all(pid)
            for prog in self.targets.programs.all():
                self.metrics.collect_lost(prog)
                prog.close()
            self.targets.programs.clear()

    def _housekeep(self) -> None:
        """Every HOUSEKEEP_S: read the overhead budgets (tier hits, targets' CPU), disarm the
        goroutine tiers whose slice ended or whose budget ran out, count ring-buffer losses. A
        quarter second: a budget that runs dry overshoots by at most that much armed time."""
        if self.options.goroutine_tier == "on_stall" and self.options.arm_for:
            self.log.warning("uprobe: arm_for is deprecated: each stall arms the goroutine tier for %.0f s and "
                             "overhead_budget is not enforced; remove it for budgeted slices (arm_slice)",
                             self.options.arm_for / 1e9)
        while not self._stop.wait(HOUSEKEEP_S):
            if self.options.goroutine_tier != "never":
                self.budget.update()
            self.tier.disarm_expired()
            if self.sampler is not None and self.sampler.wakes is not None:
                self.wakes.sync()
            with self.targets.lock:
                for prog in self.targets.programs.all():
                    self.metrics.collect_lost(prog)

    # -- targets ------------------------------------------------------------------------------

    def _on_start(self, target) -> None:
        try:
            with self.targets.lock:
                if self._stop.is_set() or target.pid in self.targets.attached:
                    return
                att = self.targets.add(target, self.ctx.services.idle_rules)
                if self.options.goroutine_tier == "always":
                    self.tier.attach(att)
        except TargetRefused as exc:
            self.ctx.stats.inc("lgf_targets_refused_total", source="uprobe")
            self.log.warning("uprobe: not tracing pid %d: %s", target.pid, exc)
            return
        if self.sampler is not None:
            self.sampler.add(target)
        self.ctx.stats.set("lgf_targets_attached", len(self.targets.attached), source="uprobe")
        if self.ctx.services is not None:
            self.ctx.services.note_process(target.pid, target.exe)
        self.log.info("uprobe: tracing pid %d (%s, %s)", target.pid, target.exe, target.binary.go_version)

    def _on_exit(self, target) -> None:
        with self.targets.lock:
            if target.pid not in self.targets.attached:
                return
            self.metrics.retire(target.pid)  # its counts join its service's series (lgf.histories)
            self.wakes.forget(target.pid)
            self.targets.drop(target.pid)
            if self.sampler is not None:
                self.sampler.remove(target.pid)
            self.verdicts.forget(target.pid)
        self.log.info("uprobe: pid %d exited; detached", target.pid)

    # -- what the host and tests ask ------------------------------------------------------------

    def arm(self, pid: int) -> None:
        """Attach the goroutine tier to ``pid`` for one slice now (``goroutine_tier = "on_stall"``),
        whatever its budget says (tests, ``lgf inspect``); the housekeeper still disarms it when
        the slice ends or the budget is spent."""
        self.tier.arm(pid)

    def is_attached(self, pid: int) -> bool:
        """Whether ``pid`` is traced now (its cheap tier at least)."""
        with self.targets.lock:
            return pid in self.targets.attached

    def probe_addresses(self, pid: int) -> dict[str, int]:
        """``{probe function: address}`` of every uprobe attached to ``pid`` now (tests, inspect)."""
        return self.targets.probe_addresses(pid)

    def stats(self) -> dict:
        with self.targets.lock:
            return {"targets": len(self.targets.attached), "programs": len(self.targets.programs),
                    "armed": self.tier.armed_count()}

    def tier_periods(self, pid: int) -> list[tuple[int, int | None]]:
        """(on, off) CLOCK_MONOTONIC ns of ``pid``'s last armed slices, the current one last with
        off None (tests, benches)."""
        with self.targets.lock:
            att = self.targets.attached.get(pid)
            if att is None:
                return []
            return list(att.tier_periods) + ([(att.tier_since, None)] if att.tier_since is not None else [])

    def tier_costs(self) -> list[dict]:
        """What the goroutine tier costs each target, as lgf measured it (the latency page):
        ``{"pid", "comm", "armed", **budget counters}`` per attached process."""
        with self.targets.lock:
            attached = dict(self.targets.attached)
        out = []
        for pid, att in sorted(attached.items()):
            counters = self.budget.counters(pid)
            if counters:
                out.append({"pid": pid, "comm": att.target.comm, "armed": att.tier_on(), **counters})
        return out

    def runtime_counters(self, pid: int) -> dict:
        """Netpoller, GC and ring-buffer counters of ``pid`` (a missing key = not measured)."""
        return self.metrics.runtime_counters(pid)

    def histograms(self) -> list[dict]:
        """Every duration measured in BPF, per process, stall kind and wait reason (log2 us)."""
        return self.metrics.histograms()
