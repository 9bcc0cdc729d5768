"""Drive the ``tests/goapps/stalls`` Go fixture and an lgf BPF source against it.

Shared by the source tests (``test_source_*.py``), the end-to-end tests and the benchmarks: run
the fixture in one mode, wait until the source has attached to it, say "go", and collect the
fixture's own figures and the events lgf reported for its pid.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import types
from pathlib import Path

from lgf.components import RunContext
from lgf.config import HostOptions, TargetOptions
from lgf.options import Duration, parse_duration
from lgf.stats import Stats

STALLS_SRC = Path(__file__).resolve().parent / "goapps" / "stalls"

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


class Collector:
    """The ``emit`` callback of a source: keeps every event, thread-safe, and waits for some."""

    def __init__(self):
        self.events: list = []
        self._cond = threading.Condition()

    def __call__(self, event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def of_pid(self, pid: int) -> list:
        with self._cond:
            return [e for e in self.events if e.pid == pid]

    def wait_for(self, pred, timeout: float = 5.0) -> list:
        """Events matching ``pred`` once at least one arrived (or after ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [e for e in self.events if pred(e)]
                left = deadline - time.monotonic()
                if found or left <= 0:
                    return found
                self._cond.wait(left)


def run_context(threshold: str = "50ms", pids=(), exe=()) -> RunContext:
    """What the host hands a source factory, with only the parts a source reads."""
    config = types.SimpleNamespace(host=HostOptions(threshold=Duration(parse_duration(threshold))),
                                   targets=TargetOptions(pids=list(pids), exe=list(exe)))
    return RunContext(config=config, stats=Stats(), name="test")


def wait_attached(source, pid: int, timeout: float = 20.0) -> None:
    """Until ``source`` has attached to ``pid`` (live attach through discovery is polled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if source.is_attached(pid):
            return
        time.sleep(0.05)
    raise AssertionError(f"source did not attach to pid {pid} within {timeout} s")


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
