"""Issue 18's "services that stall": what the shipped config costs a web server with one slow
request a second, and does it report every slow request?

``tests/goapps/bench_server -idle 8 -tick 100ms`` (net/http) under ``wrk -t2 -c16`` on "/" for
``WRK_SECONDS``, while this script makes one slow request every second throughout the load:
``GET /lock?ms=120`` (through the fixture's stdin "lock 120"), whose handler waits 120 ms on a
mutex another goroutine holds (then sleeps 300 ms before answering: the fixture keeps the request
alive for its tests). Each real stall arms the goroutine tier for ``arm_for`` (1 min), so under
``goroutine_tier = "on_stall"`` a service that stalls once a second pays for the tier all the time.
Rows, in interleaved rounds, `lgf run` against the server's pid only:

- ``off``: lgf not running (the baseline);
- ``shipped plugins.toml``: the repo's plugins.toml, targets and spool_dir rewritten, its stdout
  sink made a JSON ``file`` sink, ``[http]`` off;
- ``goroutine tier always``: the same with ``goroutine_tier = "always"``.

Columns: the server's CPU per request (utime + stime from /proc over the wrk run / requests) and
its ratio to off; slow requests made vs reported (a ``stall`` event of the handler's goroutine
overlapping its lock wait, CLOCK_MONOTONIC bounds the fixture reads around ``mu.Lock``); the
share of the wrk run the goroutine tier was armed (lgf's "goroutine tier armed" / "disarmed" log
lines, stamped when this script reads them).

Run as root: ``.venv/bin/python bench/bench_stalling_service.py``. ``LGF_BENCH_ROUNDS`` (2),
``LGF_BENCH_WRK_SECONDS`` (10), ``LGF_BENCH_GO`` (1.25.5). About 1.5 minutes per round.

Measured on 2026-12-03, loaded 2-core VM (shared with other engineers' test runs: load average
3-4.6 on 2 cores, another engineer's bench_idle_server alongside; wrk shares the 2 cores with the
server and lgf), Go 1.25.5, wrk 10 s, CPU per request against off in the same run::

    run (rounds)   off          shipped plugins.toml             goroutine tier always
    1 (2)          29.6 us/req  1.41x (+41 %)  21/22, armed 98 %   1.26x (+26 %)  22/22
    2 (2)          28.7 us/req  1.57x (+57 %)  22/22, armed 99 %   1.55x (+55 %)  22/22
    3 (3)          28.6 us/req  1.53x (+53 %)  33/33, armed 99 %   1.71x (+71 %)  33/33

(slow requests reported / made; "armed": share of the wrk run the goroutine tier was attached.)
What holds from run to run: the shipped config costs what "always" costs (the first slow request
is seen by the sampler and arms the tier for 1 min, re-armed by every later one: armed 98-99 % of
the run), and every slow request but one in 77 was reported. The percentages themselves are
inflated and noisy on this loaded host (issue 18 measured +25-30 % and +22 % on a quieter one);
run it on an idle host for the figure to quote.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import CLK_TCK, ROOT, LgfProcess, cpu_ticks, shipped_config  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
from support.gobuild import GOAPPS, build_go  # noqa: E402

GO = os.environ.get("LGF_BENCH_GO", "1.25.5")
ROUNDS = int(os.environ.get("LGF_BENCH_ROUNDS", "2"))
WRK_SECONDS = int(os.environ.get("LGF_BENCH_WRK_SECONDS", "10"))
SLOW_MS = 120
CONFIGS = {"off": None, "shipped plugins.toml": "shipped", "goroutine tier always": "always"}


def slow_requests(proc: subprocess.Popen, stop: threading.Event, made: list[dict]) -> None:
    """One slow request a second until ``stop``: the fixture makes it and answers with its bounds."""
    next_at = time.monotonic()
    while not stop.is_set():
        proc.stdin.write(f"lock {SLOW_MS}\n")
        proc.stdin.flush()
        made.append(json.loads(proc.stdout.readline()))
        next_at += 1.0
        stop.wait(max(0.0, next_at - time.monotonic()))


def measure(exe: Path, config: str | None) -> dict:
    proc = subprocess.Popen([str(exe), "-idle", "8", "-tick", "100ms"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    hello = json.loads(proc.stdout.readline())
    tmp = tempfile.TemporaryDirectory(prefix="lgf-bench-")
    lgf, stop, made = None, threading.Event(), []
    try:
        if config is not None:
            tier = "always" if config == "always" else None
            lgf = LgfProcess(shipped_config(proc.pid, Path(tmp.name), tier=tier))
            lgf.wait_log(f"tracing pid {proc.pid}")
            time.sleep(1.0)
        url = f"http://{hello['addr']}/"
        slow = threading.Thread(target=slow_requests, args=(proc, stop, made), daemon=True)
        t0, before = time.monotonic(), cpu_ticks(proc.pid)
        slow.start()
        out = subprocess.run(["wrk", "-t2", "-c16", f"-d{WRK_SECONDS}s", url], capture_output=True,
                             text=True, check=True).stdout
        used, t1 = cpu_ticks(proc.pid) - before, time.monotonic()
        stop.set()
        slow.join(timeout=10)
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        row = {"us_per_req": used / CLK_TCK * 1e6 / requests, "rps": requests / WRK_SECONDS, "made": len(made)}
        if lgf is not None:
            time.sleep(1.5)  # the last slow request's report
            events = [e for e in lgf.events() if e.get("kind") == "stall" and e.get("pid") == proc.pid]
            found = [any(e.get("goid") == m["goid"] and e["start_ns"] <= m["end_ns"] and e["end_ns"] >= m["begin_ns"]
                         for e in events) for m in made]
            row["reported"] = sum(found)
            row["missed"] = [i + 1 for i, f in enumerate(found) if not f]
            row["sampled"] = sum(1 for e in events if e.get("precision") == "sampled")
            row["armed_share"] = lgf.armed_seconds(proc.pid, t0, t1) / (t1 - t0)
            row["events"] = len(events)
        return row
    finally:
        stop.set()
        if lgf is not None:
            lgf.stop()
        proc.stdin.close()
        proc.kill()
        proc.wait()
        tmp.cleanup()


def main() -> int:
    if os.geteuid() != 0:
        print("bench_stalling_service: needs root (BPF)", file=sys.stderr)
        return 1
    exe = build_go(GOAPPS / "bench_server", GO)
    print(f"Services that stall (issue 18), Go {GO}, {os.cpu_count()} CPUs (a shared host: other runs "
          f"load it); bench_server under wrk -t2 -c16 -d{WRK_SECONDS}s with one {SLOW_MS} ms lock stall "
          f"(GET /lock) a second; median of {ROUNDS} interleaved round(s), ratios against this run's off")
    runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    for _ in range(ROUNDS):
        for name, config in CONFIGS.items():
            runs[name].append(measure(exe, config))
    base = statistics.median(r["us_per_req"] for r in runs["off"])
    for name, rows in runs.items():
        us = statistics.median(r["us_per_req"] for r in rows)
        rps = statistics.median(r["rps"] for r in rows)
        made = sum(r["made"] for r in rows)
        line = (f"  {name:24s} {us:7.2f} us/req {rps:8.0f} req/s  {us / base:5.2f}x ({100 * (us / base - 1):+6.1f} %)"
                f"  slow requests ")
        if name == "off":
            line += f"made {made}"
        else:
            reported = sum(r["reported"] for r in rows)
            armed = statistics.median(r["armed_share"] for r in rows)
            line += f"reported {reported}/{made}"
            line += ("   tier on throughout" if CONFIGS[name] == "always"
                     else f"   tier armed {100 * armed:3.0f} % of the run")
            missed = "; ".join(f"round {i + 1}: #{', #'.join(map(str, r['missed']))}"
                               for i, r in enumerate(rows) if r["missed"])
            line += f"   (sampled: {sum(r['sampled'] for r in rows)}" + (f"; missed {missed})" if missed else ")")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
