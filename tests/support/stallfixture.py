"""Drive the ``tests/goapps/stalls`` Go fixture and an lgf BPF source against it.

Shared by the source tests (``test_source_*.py``), the end-to-end tests and the benchmarks: run
the fixture in one mode, wait until the source has attached to it, say "go", and collect the
fixture's own figures and the events lgf reported for its pid (in an ``lgf.testing.EventCollector``).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import types
from pathlib import Path

from lgf import RunContext
from lgf.config import HostOptions, TargetOptions
from lgf.options import Duration, parse_duration
from lgf.stats import Stats
from support.fixtureproc import FixtureProcess
from support.gobuild import GOAPPS
from support.wait import wait_until

STALLS_SRC = GOAPPS / "stalls"

NEEDS_NO_PREEMPTION = ("starve", "stw")
"""Modes whose busy loop must not be preempted asynchronously (GODEBUG=asyncpreemptoff=1)."""


class StallFixture(FixtureProcess):
    """One run of the fixture: ``StallFixture(exe, "chanrecv")``, then ``go()`` -> its results."""

    def __init__(self, exe: str | Path, mode: str, *args: str):
        env = dict(os.environ)
        if mode in NEEDS_NO_PREEMPTION:
            env["GODEBUG"] = "asyncpreemptoff=1"
        self.mode = mode
        self.proc = subprocess.Popen([str(exe), mode, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        self.hello = json.loads(self.proc.stdout.readline())
        self.pid = self.proc.pid
        self.main_goid = self.hello["main_goid"]

    def go(self, timeout: float = 120) -> list[dict]:
        """Start the stalls; return the fixture's result lines (without the final "done")."""
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        results: list[dict] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            obj = json.loads(line)
            if obj.get("done"):
                return results
            results.append(obj)
        raise AssertionError(f"fixture {self.mode} did not finish: {results}")


def run_context(threshold: str = "50ms", pids=(), exe=()) -> RunContext:
    """What the host hands a source factory, with only the parts a source reads."""
    config = types.SimpleNamespace(host=HostOptions(threshold=Duration(parse_duration(threshold))),
                                   targets=TargetOptions(pids=list(pids), exe=list(exe)))
    return RunContext(config=config, stats=Stats(), name="test")


def wait_attached(source, pid: int, timeout: float = 120.0) -> None:
    """Until ``source`` has attached to ``pid`` (live attach through discovery is polled)."""
    wait_until(lambda: source.is_attached(pid), timeout, 0.05, what=f"source attached to pid {pid}")


def probe_bytes(pid: int, addrs) -> list[int]:
    """The first byte at each address in ``pid``'s memory: 0xCC where a uprobe is installed."""
    out = []
    with open(f"/proc/{pid}/mem", "rb") as mem:
        for a in addrs:
            mem.seek(a)
            out.append(mem.read(1)[0])
    return out


def bpftool_perf_pids() -> set[int]:
    """Pids holding a BPF program attached to a perf event (uprobes, tracepoints): the kernel's
    own listing, ``bpftool perf``."""
    out = subprocess.run(["bpftool", "-j", "perf"], capture_output=True, text=True, check=True).stdout
    return {int(row["pid"]) for row in json.loads(out or "[]")}


def outside_bounds(res: dict, start_ns: int, end_ns: int, ended_by: int | None = None) -> list[str]:
    """What of lgf's interval ``[start_ns, end_ns]`` breaks the causal bounds of the fixture's own
    clock reads (empty: nothing). ``ended_by`` is when lgf says the wait had surely ended, if it
    differs from ``end_ns`` (a sampled stall: its ``end_before_ns``).

    The bounds hold on any host however busy, which a tolerance ("within 5 ms of the program's
    own figure") does not: a descheduled fixture reads its clock late, not lgf wrong. The wait
    began after ``begin_ns`` and ended before ``end_ns`` (the waiter's reads around its blocking
    call), and not before ``earliest_end_ns`` (read by whoever ended it, just before it did).
    All are CLOCK_MONOTONIC, the clock of ``bpf_ktime_get_ns``.
    """
    ended_by = end_ns if ended_by is None else ended_by
    broken = []
    if start_ns < res["begin_ns"]:
        broken.append(f"starts {res['begin_ns'] - start_ns} ns before the goroutine began waiting")
    if end_ns > res["end_ns"]:
        broken.append(f"ends {end_ns - res['end_ns']} ns after the goroutine ran again")
    if ended_by < res["earliest_end_ns"]:
        broken.append(f"ends {res['earliest_end_ns'] - ended_by} ns before anything ended the wait")
    if not start_ns <= end_ns:
        broken.append("ends before it starts")
    return broken


def unexplained(reported, long_waits) -> list:
    """The reported ``(goid, start_ns, end_ns)`` that no wait the noise fixture timed as long
    itself (``long_waits``: ``[goid, begin_ns, end_ns, kind]``) contains.

    A busy host can hold a process off its CPUs for longer than the threshold: then a "short" wait
    really did last that long and lgf is right to say so. What lgf must never do is report a wait
    the fixture saw end sooner; this is what a noise test asserts is empty.
    """
    return [r for r in reported
            if not any(goid == r[0] and begin <= r[1] and r[2] <= end for goid, begin, end, _ in long_waits)]
