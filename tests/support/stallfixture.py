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

from lgf.components import RunContext
from lgf.config import HostOptions, TargetOptions
from lgf.options import Duration, parse_duration
from lgf.stats import Stats
from support.gobuild import GOAPPS
from support.wait import wait_until

STALLS_SRC = GOAPPS / "stalls"

NEEDS_NO_PREEMPTION = ("starve", "stw")
"""Modes whose busy loop must not be preempted asynchronously (GODEBUG=asyncpreemptoff=1)."""


class StallFixture:
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

    def go(self, timeout: float = 30) -> list[dict]:
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

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> StallFixture:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_context(threshold: str = "50ms", pids=(), exe=()) -> RunContext:
    """What the host hands a source factory, with only the parts a source reads."""
    config = types.SimpleNamespace(host=HostOptions(threshold=Duration(parse_duration(threshold))),
                                   targets=TargetOptions(pids=list(pids), exe=list(exe)))
    return RunContext(config=config, stats=Stats(), name="test")


def wait_attached(source, pid: int, timeout: float = 20.0) -> None:
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
