"""What telling idle waits from stalls costs the sampler, on a server with many idle connections.

The sampler now follows parks on the network (``IO wait``) too and judges each park once, when it
crosses the threshold: its stack read from outside, symbolized and matched (``lgf.idle``). An
idle server with many keep-alive connections is where that costs most. Measured on
``tests/goapps/idleserver`` (Go 1.25.5) holding ``CONNS`` idle keep-alive connections, in lgf's
own thread CPU time (``time.thread_time``): the pass in which every park crosses the threshold
(µs per judged park), and a steady-state pass afterwards, each against the old rule
(``sample_ignore_reasons = ["IO wait", "select (no cases)"]``: network parks not followed, nothing
judged) in the same run.

Run as root: ``.venv/bin/python bench/bench_idle_judge.py``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from lgf.config import TargetOptions  # noqa: E402
from lgf.golang.discovery import examine  # noqa: E402
from lgf.services import Services  # noqa: E402
from lgf.sources.uprobe.handoff import NoGoroutineTier  # noqa: E402
from lgf.sources.uprobe.sampler import GoroutineSampler  # noqa: E402
from support.gobuild import GOAPPS, build_go  # noqa: E402

CONNS = 400
THRESHOLD_NS = 50_000_000
STEADY_PASSES = 30


def open_idle_connections(addr: str, n: int) -> list[socket.socket]:
    host, port = addr.rsplit(":", 1)
    conns = []
    for _ in range(n):
        s = socket.create_connection((host, int(port)))
        s.sendall(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while b"hello" not in got:
            got += s.recv(4096)
        conns.append(s)
    return conns


def measure(target, ignore: list[str]) -> tuple[float, float, int]:
    """(thread CPU s of the crossing pass, best steady pass, parks judged idle)."""
    services = Services()  # no source registered to arm: a park only gets judged
    sampler = GoroutineSampler(20_000_000, THRESHOLD_NS, tier=NoGoroutineTier(), services=services,
                               emit=lambda ev: None, max_goroutines=100_000, ignore_reasons=ignore)
    sampler.add(target)
    proc = sampler._procs[target.pid]

    def one_pass() -> float:
        proc.next_ns = 0  # due now: the bench times passes, not the sampler's pacing
        t0 = time.thread_time()
        sampler.sample_once()
        return time.thread_time() - t0

    one_pass()  # every parked goroutine seen once
    time.sleep(THRESHOLD_NS / 1e9 * 1.5)
    crossing = one_pass()  # they all cross the threshold now: judged
    steady = float("inf")
    for _ in range(STEADY_PASSES):
        time.sleep(0.02)
        steady = min(steady, one_pass())
    parks = sampler._procs[target.pid].parks
    judged = sum(1 for p in parks.values() if p.verdict is not None and p.verdict.idle)
    sampler.stop()
    services.close()
    return crossing, steady, judged


def main() -> int:
    exe = build_go(GOAPPS / "idleserver", "1.25.5")
    proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pid = json.loads(proc.stdout.readline())["pid"]
        addr = json.loads(proc.stdout.readline())["addr"]
        conns = open_idle_connections(addr, CONNS)
        target = examine(TargetOptions(pids=[pid]), pid)
        old = measure(target, ["IO wait", "select (no cases)"])
        new = measure(target, [])
        print(f"idle server, {CONNS} keep-alive connections (lgf thread CPU time; machine shared):")
        print(f"  crossing pass: old rule {old[0] * 1e3:.2f} ms, judging {new[0] * 1e3:.2f} ms "
              f"({new[2]} parks judged idle: {(new[0] - old[0]) / max(new[2], 1) * 1e6:.0f} us each, once per park)")
        print(f"  steady pass:   old rule {old[1] * 1e3:.3f} ms, judging {new[1] * 1e3:.3f} ms "
              f"(ratio {new[1] / old[1]:.2f}x)")
        for c in conns:
            c.close()
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
