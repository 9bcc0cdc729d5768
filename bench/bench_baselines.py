"""Drift-aware baselines: what they add to the alert engine per stall, per recompute, and on disk.

Baseline, from the same run: the same stalls through the same alert engine with ``[baselines]
enabled = false`` (fixed thresholds only), so the difference is what feeding and grading the
baselines costs. Also: one recompute of μ and σ over a full week of one series (what a series
pays at most every ``[baselines] refresh``), and the store's size on disk per series-week.

Prints each figure beside its baseline and their ratio; no assertions.
Run: `.venv/bin/python bench/bench_baselines.py` (about 30 s on 2 cores).
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path

from lgf import config as cfg
from lgf.alerts import AlertEngine
from lgf.baselines import BaselineOptions, BaselineStore
from lgf.event import Event
from lgf.stats import Stats

N = 60_000
SERVICES = 50
MS = 1_000_000
S = 1000 * MS
START = 1_767_225_600.0


class Time:
    def __init__(self):
        self.wall = START

    def now(self):
        return self.wall

    def mono(self):
        return int((self.wall - START) * S)


def per_stall_ns(enabled: bool, events: list[tuple[float, Event]]) -> float:
    with tempfile.TemporaryDirectory() as d:
        t = Time()
        raw = {"lgf": {"spool_dir": d, "threshold": "50ms"}, "baselines": {"enabled": enabled}}
        eng = AlertEngine(cfg.validate(raw, {}), Stats(), clock=t.mono, wall_clock=t.now)
        next_due = 0.0
        start = time.perf_counter_ns()
        for at, ev in events:
            t.wall = START + at
            eng.observe(ev)
            if at >= next_due:  # the host asks every 100 ms; here every simulated second
                eng.due(t.mono())
                next_due = at + 1.0
        eng.due(2**63 - 1)
        eng.close()
        return (time.perf_counter_ns() - start) / len(events)


def make_events() -> list[tuple[float, Event]]:
    rng = random.Random(1)
    causes = ["lock", "channel", "gc_stw"]
    out = []
    for i in range(N):
        svc = f"svc{rng.randrange(SERVICES)}"
        dur = int(rng.uniform(20, 120) * MS)
        out.append((i * 0.05, Event(pid=1000 + int(svc[3:]), comm=svc, exe=f"/srv/{svc}", goid=rng.randrange(100),
                                     cause=rng.choice(causes), build_id="b", duration_ns=dur,
                                     stack_summary=[f"main.f{rng.randrange(5)}"])))
    return out


def week_of_one_series() -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as d:
        store = BaselineStore(d, BaselineOptions())
        t = START
        for _ in range(7 * 24 * 60):
            store.observe("api", "lock", 60 * MS, now_s=t)
            t += 60
            store.tick(t)
        store.close()
        size = sum(f.stat().st_size for f in Path(d).iterdir())
        reader = BaselineStore(d, BaselineOptions(), readonly=True)
        runs = []
        for _ in range(5):
            begin = time.perf_counter_ns()
            reader._compute("api", "lock", int(t // 60))
            runs.append(time.perf_counter_ns() - begin)
        return sorted(runs)[2] / 1e6, size


def main() -> None:
    events = make_events()
    off = per_stall_ns(False, events)
    on = per_stall_ns(True, events)
    print(f"alert engine per stall ({N} stalls, {SERVICES} services x 3 causes), os.cpu_count()={os.cpu_count()}:")
    print(f"  baselines off {off / 1e3:.1f} us   on {on / 1e3:.1f} us   ratio {on / off:.2f}x")
    ms, size = week_of_one_series()
    print(f"one recompute of mu/sigma over a week of one series (10080 minutes): {ms:.1f} ms (median of 5)")
    print(f"store on disk for that series-week: {size / 1e6:.2f} MB ({size / 10080:.0f} bytes per minute)")


if __name__ == "__main__":
    main()
