"""Alert storm: 100k stalls from 50 synthetic processes through `lgf replay`, alert policy on.

Baseline, from the same run: the same recording through the same host and pipeline with the alert
engine removed (classify + deliver only), so the difference is what grouping, windows, silences
and severities cost. Each run is its own process; peak memory is its max RSS (wait4).

Prints, for each figure, the candidate beside its baseline and their ratio; no assertions.
Run: `.venv/bin/python bench/bench_alert_storm.py` (about 20 s on 2 cores).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lgf.event import Event, write_events

N = 100_000
PROCESSES = 50
MS = 1_000_000
PARK_REASONS = ["chan receive", "chan send", "select", "sync.Mutex.Lock", "sync.RWMutex.RLock", "IO wait",
                "semacquire", "sleep", "sync.Cond.Wait"]
FRAMES = [f"main.(*Handler{i}).Serve" for i in range(20)]

BASELINE = """
import sys
from lgf.event import read_events
from lgf.run import open_host
host = open_host(sys.argv[1], with_sources=False)
host.pipeline.engine = None  # the baseline: no alert policy
n = host.replay(read_events(sys.argv[2]))
print(f"lgf: replayed {n} event(s)", file=sys.stderr)
"""


def make_recording(path: Path) -> None:
    rnd = random.Random(7)

    def event(i: int) -> Event:
        pid = 1000 + i % PROCESSES
        kind = rnd.choices(["park", "runnable", "syscall", "stw"], weights=[85, 8, 5, 2])[0]
        dur = int(min(2000, 40 * rnd.lognormvariate(0.3, 0.8)) * MS)
        start = 10**9 + i * 600_000  # 100k stalls over a minute
        return Event(pid=pid, tid=pid + i % 9, comm=f"svc{pid % 10}", exe=f"/srv/svc{pid % 10}",
                     goid=0 if kind == "stw" else 100 + i % 500, go_version="go1.25.5",
                     build_id=f"build-{pid % 10}", start_ns=start, end_ns=start + dur, duration_ns=dur,
                     wait_reason=rnd.choice(PARK_REASONS) if kind == "park" else "",
                     syscall="read" if kind == "syscall" else "",
                     stack_summary=[rnd.choice(FRAMES), "main.main"],
                     stack=[{"func": "runtime.gopark", "file": "proc.go", "line": 425, "pc": 0x43a000,
                             "inlined": False}],
                     extra={"stall": kind}, source="uprobe")

    write_events(path, (event(i) for i in range(N)))


def run(cmd: list[str], out: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read()
    if proc.returncode != 0:
        sys.exit(f"{cmd[:4]} failed: {err}")
    alerts = sum(1 for line in open(out) if '"kind":"alert"' in line) if out.exists() else 0
    return {"seconds": seconds, "maxrss_mib": usage.ru_maxrss / 1024, "alerts": alerts,
            "cpu_s": usage.ru_utime + usage.ru_stime}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rec = tmp / "storm.msgpack"
        make_recording(rec)
        results = {}
        for name in ("baseline", "candidate"):
            out = tmp / f"{name}.jsonl"
            cfg = tmp / f"{name}.toml"
            cfg.write_text(f'[lgf]\nspool_dir = "{tmp}/spool-{name}"\nthreshold = "50ms"\n'
                           f'report_interval = "10s"\n[[classifiers]]\nuse = "waitreason"\n'
                           f'[[sinks]]\nuse = "file"\npath = "{out}"\nreceive = "alerts"\n')
            cmd = ([sys.executable, "-c", BASELINE, str(cfg), str(rec)] if name == "baseline" else
                   [sys.executable, "-m", "lgf.cli", "replay", str(rec), "--config", str(cfg)])
            results[name] = run(cmd, out)
        b, c = results["baseline"], results["candidate"]
        print(f"alert storm: {N:,} stalls, {PROCESSES} processes, 10 services, 20 top frames, report_interval 10s")
        print(f"{'':24}{'baseline (no alert policy)':>28}{'lgf replay (alert policy)':>28}{'ratio':>9}")
        print(f"{'wall time (s)':24}{b['seconds']:>28.2f}{c['seconds']:>28.2f}{c['seconds'] / b['seconds']:>9.2f}")
        print(f"{'cpu time (s)':24}{b['cpu_s']:>28.2f}{c['cpu_s']:>28.2f}{c['cpu_s'] / b['cpu_s']:>9.2f}")
        print(f"{'events/s':24}{N / b['seconds']:>28,.0f}{N / c['seconds']:>28,.0f}"
              f"{b['seconds'] / c['seconds']:>9.2f}")
        print(f"{'peak RSS (MiB)':24}{b['maxrss_mib']:>28.1f}{c['maxrss_mib']:>28.1f}"
              f"{c['maxrss_mib'] / b['maxrss_mib']:>9.2f}")
        print(f"{'alerts produced':24}{b['alerts']:>28}{c['alerts']:>28}"
              f"{'':>9}")
        if c["alerts"]:
            print(f"{'stalls per alert':24}{'':>28}{N / c['alerts']:>28,.0f}")
        print(json.dumps({"baseline": b, "candidate": c}))


if __name__ == "__main__":
    main()
