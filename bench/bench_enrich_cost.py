"""What the gc_phase, poller and sched enrichers cost per event, on a live Go process.

The target is tests/goapps/runtimestate (built with the newest toolchain) holding 100, then
10,000 parked goroutines. Baseline from the same run: one read of /proc/PID/status, the cheapest
thing an enricher could do per event. ``sched`` is measured uncached (``cache = 0``: every event
walks allgs) and with its default 100 ms cache. No assertions; run as root or as the owner of
the target: `.venv/bin/python bench/bench_enrich_cost.py`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from lgf import RunContext  # noqa: E402
from lgf.event import Event  # noqa: E402
from lgf.options import Duration  # noqa: E402
from lgf.plugins.gc_phase import GcPhaseEnricher  # noqa: E402
from lgf.plugins.poller import PollerEnricher  # noqa: E402
from lgf.plugins.sched import SchedEnricher, SchedOptions  # noqa: E402
from lgf.stats import Stats  # noqa: E402
from support.gobuild import GO_VERSIONS, GOAPPS, build_go  # noqa: E402

ROUNDS = 300


def per_event_us(fn, pid: int) -> float:
    t0 = time.perf_counter()
    for _ in range(ROUNDS):
        end = time.monotonic_ns()
        fn(Event(pid=pid, start_ns=end - 60_000_000, end_ns=end, duration_ns=60_000_000,
                 extra={"stall": "park"}))
    return (time.perf_counter() - t0) / ROUNDS * 1e6


def baseline(pid: int):
    def read_status(_event):
        with open(f"/proc/{pid}/status") as fh:
            fh.read()
    return read_status


def main() -> None:
    exe = build_go(GOAPPS / "runtimestate", GO_VERSIONS[-1])
    print(f"enricher cost per event (us), Go {GO_VERSIONS[-1]}, {ROUNDS} events each; "
          "baseline = one read of /proc/PID/status")
    for parked in (100, 10_000):
        proc = subprocess.Popen([str(exe), "-parked", str(parked)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        try:
            pid = json.loads(proc.stdout.readline())["pid"]
            ctx = RunContext(config=None, stats=Stats(), name="bench")
            base = per_event_us(baseline(pid), pid)
            rows = {
                "gc_phase": GcPhaseEnricher(None, ctx),
                "poller": PollerEnricher(None, ctx),
                "sched (uncached)": SchedEnricher(SchedOptions(cache=Duration(0)), ctx),
                "sched (100 ms cache)": SchedEnricher(None, ctx),
            }
            print(f"  {parked:>6} parked goroutines: baseline {base:8.1f}")
            for name, enricher in rows.items():
                enricher.lgf_enrich(Event(pid=pid, end_ns=time.monotonic_ns()))  # open the reader once
                cost = per_event_us(enricher.lgf_enrich, pid)
                print(f"      {name:<22} {cost:8.1f}   ratio {cost / base:6.1f}x baseline")
        finally:
            proc.stdin.close()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
