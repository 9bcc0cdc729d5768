"""The goroutine tier's overhead budget: what the tier costs each target, measured, and a cap on it.

A uprobe hit costs the target about 1 us on a VM (0.3 us on bare metal) in the kernel's trap,
whatever the BPF program does, so the per-switch tier costs what the target's switch rate makes
it cost (+22 to +30 % CPU per request on a real web server). Arming it for a minute after every
stall made a service that stalls once a second pay that for ever. So lgf prices the tier itself:

- **hits**: every tier probe program counts its hits per process in per-CPU BPF maps
  (``tier_hits`` and ``tier_hits_fast`` of uprobe.c);
- **per-hit cost**: measured once, at the first target (:func:`measure_hit_cost_ns`): a uprobe
  with a program of the same kind (uprobe.c's ``on_calibrate``) on a ``push %rbp`` in lgf's own
  process, the instruction every Go probe sits on, called N times with and without the probe;
  thread CPU time difference / N, times ``IN_SITU`` (a real program pays about twice what a
  tight loop does, measured). ``probe_hit_cost`` overrides it; 1 us if it cannot be measured;
- **the target's CPU**: utime + stime of ``/proc/PID/stat`` (every thread; the trap's cost is
  the target's own system time, so it is in there too).

Estimated cost = hits x per-hit cost. Each target has a token bucket (:class:`Account`, in ns of
CPU): it earns ``overhead_budget`` x the target's CPU time and pays the estimated cost of the
tier's hits. The tier is armed on a stall only while the bucket holds credit, for ``arm_slice``,
and disarmed when the slice ends or the bucket runs dry (:mod:`lgf.sources.uprobe.tiers`); a
stall refused is counted (``lgf_tier_arm_refused_total{reason="budget"}``) and still reported,
by the sampler, with sampled bounds. The bucket holds at most ``BURST_S`` seconds' worth of
credit at the target's recent CPU rate, and starts full: a process that stalls rarely gets its
first stalls armed at once; one that keeps stalling gets slices as its budget earns them. Debt
(an overshoot between two checks) is paid back before the next slice, so over a long run the
cost stays under the budget.

What is measured is exported per target through ``runtime_counters(pid)`` (``/metrics``'s
``lgf_go_runtime{counter="tier_cost_share"}`` etc.) and drawn on the latency page.

Not counted: the ``sched_switch`` raw tracepoint the tier needs while armed (host-wide, but a
tracepoint costs tens of ns, no trap) and lgf's own CPU attaching and detaching probes.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

HIT_COST_FALLBACK_NS = 1000.0
"""The per-hit cost assumed when it cannot be measured: the empty-uprobe floor on these VMs."""
IN_SITU = 2.0
"""What a hit costs a real program, over what it costs the calibration's tight loop: the trap
and the BPF program evict the program's own caches and branch state, which a loop calling a
do-nothing function barely has. Measured by bench/bench_stalling_service.py (net/http under
wrk, tier always on, 2026-12-03): the server's extra CPU was 2.1x the tight-loop figure x its
hits (+77.5 % measured, +37.0 % estimated). Applied to the measured figure only: an operator's
``probe_hit_cost`` is taken as the in-situ price."""
CALIBRATION_CALLS = 40_000
"""Calls per measurement: about 50 ms of CPU probed at 1.2 us a hit, twice (the best is kept)."""
BURST_S = 30.0
"""The bucket holds at most the budget's share of this many seconds of the target's CPU: about
one slice of a tier costing 25 % of the target, so a rare stall is armed at once but a steady
staller cannot bank a minute of exactness."""
MIN_CREDIT_NS = 2_000_000.0
"""The bucket holds at least this much (2 ms, about 1,700 hits): a nearly idle process, whose
budget share of almost no CPU is almost nothing, still gets its first stall armed (its tier
costs as little, in absolute terms, as its switch rate is low)."""
WINDOW_S = 60.0
"""The exported shares and rates are over about this long (the last readings)."""
CLK_TCK = os.sysconf("SC_CLK_TCK")
PUSH_RBP_RET = bytes([0x55, 0x48, 0x89, 0xE5, 0x5D, 0xC3])
"""push %rbp; mov %rsp,%rbp; pop %rbp; ret: a function that does nothing, starting on the
instruction the Go probes sit on (the kernel emulates it: no single-step)."""


def stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name (``state`` first); raises OSError.
    Read with os.open/os.read: pathlib's read_text cost 3.5 times as much (33 against 9 us here),
    and the housekeeper reads it for every target four times a second."""
    fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    try:
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    return data.rsplit(b")", 1)[1].split()


def cpu_ns(pid: int) -> int | None:
    """utime + stime of every thread of ``pid`` (ns; clock-tick resolution), None if gone."""
    try:
        fields = stat_fields(pid)
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // CLK_TCK


def cpu_rate(pid: int) -> float:
    """``pid``'s CPU time per second of its life so far (0.0 if unknown): the bucket's first size."""
    try:
        fields = stat_fields(pid)
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError):
        return 0.0
    age = uptime - int(fields[19]) / CLK_TCK
    used = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return used / age if age > 1.0 else 0.0


def measure_hit_cost_ns(bpf, calls: int = CALIBRATION_CALLS) -> float | None:
    """What one tier probe hit costs on this host (ns of the caller's CPU), or None.

    A do-nothing function starting with ``push %rbp`` is placed in an executable private mapping
    of a memfd (uprobes need a file and a private mapping) and called from this thread through
    ctypes ``calls`` times without and with ``on_calibrate`` of ``bpf`` attached to it (pid
    filter: this process only). The difference in this thread's CPU time, per call, is the hit's
    cost; best of two each, since other load only ever adds. The probe's own count (``tier_hits``
    for this pid) must equal the calls made, or the measurement is refused. About 0.15 s."""
    from bcc import BPF, lib

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                          ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    fd = os.memfd_create("lgf-hit-cost", 0)
    addr, probe_fd = None, -1
    me = os.getpid()
    try:
        os.write(fd, PUSH_RBP_RET.ljust(4096, b"\xcc"))
        addr = libc.mmap(None, 4096, 0x1 | 0x4, 0x02, fd, 0)  # PROT_READ|PROT_EXEC, MAP_PRIVATE
        if addr in (None, ctypes.c_void_p(-1).value):
            return None
        func = ctypes.CFUNCTYPE(None)(addr)

        def run() -> int:
            t0 = time.thread_time_ns()
            for _ in range(calls):
                func()
            return time.thread_time_ns() - t0

        bare = min(run(), run())
        prog = bpf.load_func(b"on_calibrate", BPF.KPROBE)
        hits = bpf[b"tier_hits"]
        key = hits.Key(me)
        ev_name = f"p_lgf_hit_cost_{me}".encode()
        probe_fd = lib.bpf_attach_uprobe(prog.fd, 0, ev_name, f"/proc/{me}/fd/{fd}".encode(), 0, me)
        if probe_fd < 0:
            return None
        probed = min(run(), run())
        try:
            counted = sum(int(v) for v in hits[key])
        except KeyError:
            counted = 0
        if counted != 2 * calls:  # the probe did not fire on every call: no figure, not a guess
            return None
        return max(0.0, (probed - bare) / calls)
    finally:
        if probe_fd >= 0:
            lib.bpf_close_perf_event_fd(probe_fd)
        try:
            del bpf[b"tier_hits"][bpf[b"tier_hits"].Key(me)]
        except Exception:  # noqa: BLE001 - nothing was counted
            pass
        if addr:
            libc.munmap(addr, 4096)
        os.close(fd)


def read_hits(prog) -> dict[int, int]:
    """``{pid: tier probe hits so far}`` of one program's processes (summed over CPUs and over
    both maps of uprobe.c; a fast slot reused by another process only ever adds, and callers take
    differences from a process's first reading)."""
    out: dict[int, int] = {}
    for key, values in prog.bpf[b"tier_hits"].items():
        out[int(key.value)] = out.get(int(key.value), 0) + sum(int(v) for v in values)
    fast = prog.bpf[b"tier_hits_fast"]
    for pid, slot in list(prog.hslots.items()):
        if slot:
            out[pid] = out.get(pid, 0) + sum(int(v) for v in fast[fast.Key(slot)])
    return out


@dataclass
class Account:
    """One target's bucket and what was measured of it (ns of CPU unless said)."""

    credit: float
    """Tokens: the budget's share of the target's CPU earned, less the tier's estimated cost."""
    cpu: int
    hits: int
    at: float
    """time.monotonic() of the last reading."""
    cpu_rate: float
    """The target's CPU ns per second (recent): sizes the bucket."""
    total_hits: int = 0
    total_cost: float = 0.0
    total_cpu: int = 0
    refused: int = 0
    window: deque = field(default_factory=lambda: deque(maxlen=int(WINDOW_S * 4)))
    """(seconds, cpu ns, hits, cost ns, armed seconds) of each reading."""
    window_s: float = 0.0
    window_cpu: float = 0.0
    """The sums of the window's seconds and cpu ns, kept as it moves (summed anew at each reading,
    they were a third of the housekeeper's CPU at 200 targets)."""

    def note(self, reading: tuple) -> None:
        """One more reading in the window (the oldest goes once it is full)."""
        if len(self.window) == self.window.maxlen:
            old = self.window[0]
            self.window_s -= old[0]
            self.window_cpu -= old[1]
        self.window.append(reading)
        self.window_s += reading[0]
        self.window_cpu += reading[1]

    def shares(self) -> dict[str, float]:
        dt = sum(w[0] for w in self.window)
        cpu = sum(w[1] for w in self.window)
        hits = sum(w[2] for w in self.window)
        cost = sum(w[3] for w in self.window)
        armed = sum(w[4] for w in self.window)
        return {"tier_cost_share": cost / cpu if cpu else 0.0,
                "tier_armed_share": armed / dt if dt else 0.0,
                "tier_hits_per_second": hits / dt if dt else 0.0}


class Budget:
    """Every target's :class:`Account`; :meth:`update` is called a few times a second by the
    source's housekeeper, :meth:`allows` and :meth:`exhausted` by the goroutine tier."""

    def __init__(self, options, targets, stats, log):
        self.options, self.targets, self.stats, self.log = options, targets, stats, log
        self.accounts: dict[int, Account] = {}
        self._lock = threading.Lock()
        self.hit_cost_ns = float(options.probe_hit_cost) or HIT_COST_FALLBACK_NS
        self.hit_cost_measured = False
        self._calibrated = bool(options.probe_hit_cost)
        stats.set("lgf_probe_hit_cost_seconds", self.hit_cost_ns / 1e9, source="uprobe")

    @property
    def enabled(self) -> bool:
        return self.options.goroutine_tier == "on_stall" and self.options.overhead_budget > 0

    # -- the per-hit cost ------------------------------------------------------------------------

    def calibrate(self) -> None:
        """Measure the per-hit cost once, with the first program compiled (the housekeeper's
        thread: 0.15 s that must not delay an arming or an attach)."""
        if self._calibrated:
            return
        programs = self.targets.programs.all()
        if not programs:
            return
        self._calibrated = True
        try:
            cost = measure_hit_cost_ns(programs[0].bpf)
        except Exception as exc:  # noqa: BLE001 - a host that refuses it keeps the default
            self.log.info("uprobe: probe hit cost not measured (%s): assuming %.2f us", exc, self.hit_cost_ns / 1e3)
            return
        if cost is None or cost <= 0:
            self.log.info("uprobe: probe hit cost not measured: assuming %.2f us", self.hit_cost_ns / 1e3)
            return
        self.hit_cost_ns, self.hit_cost_measured = cost * IN_SITU, True
        self.stats.set("lgf_probe_hit_cost_seconds", self.hit_cost_ns / 1e9, source="uprobe")
        self.log.info("uprobe: one probe hit costs %.2f us on this host (measured %.2f us in a tight loop, "
                      "x%.1f in a real program)", self.hit_cost_ns / 1e3, cost / 1e3, IN_SITU)

    # -- the accounts ----------------------------------------------------------------------------

    def _capacity(self, acct: Account) -> float:
        return max(self.options.overhead_budget * acct.cpu_rate * BURST_S, MIN_CREDIT_NS)

    def _open(self, pid: int, hits: int, now: float) -> Account | None:
        cpu = cpu_ns(pid)
        if cpu is None:
            return None
        acct = Account(credit=0.0, cpu=cpu, hits=hits, at=now, cpu_rate=cpu_rate(pid) * 1e9)
        acct.credit = self._capacity(acct)  # full: a process's first stalls are armed at once
        return acct

    def update(self) -> None:
        """Read every target's hits and CPU time; earn, pay, and note what was measured."""
        self.calibrate()
        now = time.monotonic()
        with self.targets.lock:
            attached = dict(self.targets.attached)
            hits: dict[int, int] = {}
            for prog in self.targets.programs.all():
                try:
                    hits.update({pid: n for pid, n in read_hits(prog).items() if pid in attached})
                except Exception:  # noqa: BLE001 - a program closed under us: next time
                    continue
        with self._lock:
            for pid in list(self.accounts):
                if pid not in attached:
                    del self.accounts[pid]
            for pid, att in attached.items():
                n = hits.get(pid, 0)
                acct = self.accounts.get(pid)
                if acct is None:
                    acct = self._open(pid, n, now)
                    if acct is not None:
                        self.accounts[pid] = acct
                    continue
                cpu = cpu_ns(pid)
                if cpu is None:
                    continue
                dt, dcpu, dhits = now - acct.at, max(0, cpu - acct.cpu), max(0, n - acct.hits)
                cost = dhits * self.hit_cost_ns
                since = att.tier_since  # armed time in this interval (attach done; read lock-free)
                armed = min(dt, max(0.0, now - since / 1e9)) if since is not None else 0.0
                acct.cpu, acct.hits, acct.at = cpu, n, now
                acct.total_hits += dhits
                acct.total_cost += cost
                acct.total_cpu += dcpu
                acct.note((dt, dcpu, dhits, cost, armed))
                if acct.window_s >= 1.0:
                    acct.cpu_rate = acct.window_cpu / acct.window_s
                acct.credit = min(acct.credit + self.options.overhead_budget * dcpu - cost, self._capacity(acct))

    def allows(self, pid: int) -> bool:
        """Whether a stall in ``pid`` may arm the tier now (it has credit left); a refusal is
        counted. A target not yet read is allowed: its bucket starts full."""
        if not self.enabled:
            return True
        with self._lock:
            acct = self.accounts.get(pid)
            if acct is None or acct.credit > 0:
                return True
            acct.refused += 1
        self.stats.inc("lgf_tier_arm_refused_total", source="uprobe", reason="budget")
        return False

    def exhausted(self, pid: int) -> bool:
        """Whether ``pid``'s tier has spent its credit (it is disarmed before its slice ends)."""
        if not self.enabled:
            return False
        with self._lock:
            acct = self.accounts.get(pid)
            return acct is not None and acct.credit <= 0

    def counters(self, pid: int) -> dict:
        """What was measured of ``pid`` (``runtime_counters``, /metrics, the latency page): shares
        and rates over about the last minute, totals since it was attached, the per-hit cost."""
        with self._lock:
            acct = self.accounts.get(pid)
            if acct is None:
                return {}
            return {**acct.shares(),
                    "tier_hits": acct.total_hits,
                    "tier_cost_seconds": acct.total_cost / 1e9,
                    "target_cpu_seconds": acct.total_cpu / 1e9,
                    "tier_budget_credit_seconds": acct.credit / 1e9,
                    "tier_budget_share": self.options.overhead_budget if self.enabled else 0.0,
                    "tier_arm_refused": acct.refused,
                    "probe_hit_cost_seconds": self.hit_cost_ns / 1e9}
