"""Issue 18's "services that stall": what the shipped config costs a web server with one slow
request a second, does it report every slow request, and does lgf's own estimate of its cost
match what this bench measures?

``tests/goapps/bench_server -idle 8 -tick 100ms`` (net/http) under ``wrk -t2 -c16`` on "/" for
``WRK_SECONDS``, while this script makes one slow request every second throughout the load:
``GET /lock?ms=120`` (through the fixture's stdin "lock 120"), whose handler waits 120 ms on a
mutex another goroutine holds (then sleeps 300 ms before answering: the fixture keeps the request
alive for its tests). Under ``goroutine_tier = "on_stall"`` each stall the sampler sees asks for
the goroutine tier; it is armed for ``arm_slice`` (2 s) only while the server's overhead budget
(``overhead_budget``, 2 % of its CPU) has credit (lgf.sources.uprobe.budget). Rows, in
interleaved rounds, `lgf run` against the server's pid only:

- ``off``: lgf not running (the baseline);
- ``shipped plugins.toml``: the repo's plugins.toml, targets and spool_dir rewritten, its stdout
  sink made a JSON ``file`` sink, ``[http]`` on a free loopback port (scraped);
- ``goroutine tier always``: the same with ``goroutine_tier = "always"``.

Columns: the server's CPU per request (utime + stime from /proc over the wrk run / requests) and
its ratio to off; slow requests made vs reported (a ``stall`` event of the handler's goroutine
overlapping its lock wait, CLOCK_MONOTONIC bounds the fixture reads around ``mu.Lock``); the
share of the wrk run the goroutine tier was armed (lgf's "goroutine tier armed" / "disarmed" log
lines, stamped when this script reads them). Under each lgf row, lgf's own account of the same
wrk run, scraped from its /metrics before and after (``lgf_go_runtime{counter="tier_*"}``): the
tier's estimated cost (its hits counted in BPF x the per-hit cost lgf measured) per request and
as a share of off's CPU per request, next to the extra CPU per request this bench measured; the
hits per second, the per-hit cost, and the armings the budget refused.

Run as root: ``.venv/bin/python bench/bench_stalling_service.py``. ``LGF_BENCH_ROUNDS`` (2),
``LGF_BENCH_WRK_SECONDS`` (10; 30 gives the budget's slices time to average out), ``LGF_BENCH_GO``
(1.25.5). About 1.5 minutes per round at 10 s.

Measured on 2026-12-03, loaded 2-core VM (shared with other engineers' runs), Go 1.25.5,
CPU per request against off in the same run. Before the budget (``arm_for = 1m``)::

    run (rounds)   off          shipped plugins.toml             goroutine tier always
    1 (2)          29.6 us/req  1.41x (+41 %)  21/22, armed 98 %   1.26x (+26 %)  22/22
    2 (2)          28.7 us/req  1.57x (+57 %)  22/22, armed 99 %   1.55x (+55 %)  22/22
    3 (3)          28.6 us/req  1.53x (+53 %)  33/33, armed 99 %   1.71x (+71 %)  33/33

With the budget (``arm_slice = 2s``, ``overhead_budget = 0.02``)::

    run (rounds, wrk)  off          shipped plugins.toml                  goroutine tier always
    4 (3, 10 s)        28.2 us/req  1.09x (+8.9 %)  34/34, armed 21 %     1.78x (+77.5 %)  33/33
    5 (2, 30 s)        31.3 us/req  0.98x (-1.7 %)  62/62, armed 12 %     1.55x (+55.0 %)  62/62

    lgf's estimate vs measured, extra CPU per request as a share of off's:
    4: shipped +2.7 % est. / +8.9 % measured;  always +37.0 % est. / +77.5 % measured (tight-loop
       per-hit cost, 1.6-1.8 us: half the truth; hence the in-program factor IN_SITU = 2)
    5: shipped +2.3 % est. / -1.7 % measured (noise);  always +66.0 % est. / +55.0 % measured
       (1.2x), at 3.2-3.5 us/hit (1.6-1.7 us measured x 2); 111 armings refused in the shipped rows

After the wake signal (on_ready notes each woken goroutine in a per-CPU ring; later the same day,
the host loaded by three other engineers' benches and builds)::

    run (rounds, wrk)  off          shipped plugins.toml                  goroutine tier always
    6 (2, 30 s)        21.6 us/req  1.09x (+8.6 %)  62/62, armed 18 %     1.50x (+50.0 %)  62/62
    7 (3, 30 s)        21.1 us/req  1.00x (-0.4 %)  93/93, armed 14 %     1.44x (+44.4 %)  93/93

    lgf's estimate vs measured: 6: shipped +3.1 % est. / +8.6 % measured, always +59.1 % / +50.0 %;
    7: shipped +2.4 % / -0.4 % (noise), always +69.6 % / +44.4 % (1.6x), 2.1-2.5 us/hit

Every slow request was reported in runs 4 and 5 (the ones the tier was not armed for by the
sampler, with sampled bounds). Run 4's 10 s window is short against the budget's bucket (it
starts full and holds 30 s of budget), so the shipped figure includes its first slices; at 30 s
the shipped config is within this host's noise of off. The estimate can only be checked where the
cost stands out of the noise: with the tier always on.
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
from benchlib import CLK_TCK, ROOT, LgfProcess, cpu_ticks, free_port, scrape, shipped_config  # noqa: E402

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


def exported(port: int, pid: int) -> dict[str, float]:
    """What lgf exports of ``pid`` in /metrics' ``lgf_go_runtime`` (the tier's measured price)."""
    out = {}
    for line in scrape(port, "lgf_go_runtime{"):
        m = re.match(r'lgf_go_runtime\{(.*)\} (\S+)$', line)
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1))) if m else {}
        if labels.get("pid") == str(pid):
            out[labels["counter"]] = float(m.group(2))
    return out


def measure(exe: Path, config: str | None) -> dict:
    proc = subprocess.Popen([str(exe), "-idle", "8", "-tick", "100ms"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    hello = json.loads(proc.stdout.readline())
    tmp = tempfile.TemporaryDirectory(prefix="lgf-bench-")
    lgf, stop, made = None, threading.Event(), []
    try:
        if config is not None:
            tier = "always" if config == "always" else None
            port = free_port()
            lgf = LgfProcess(shipped_config(proc.pid, Path(tmp.name), tier=tier, port=port))
            lgf.wait_log(f"tracing pid {proc.pid}")
            time.sleep(1.0)
            lgf.wait_log("probe hit cost")  # the per-hit cost is measured before the run
        url = f"http://{hello['addr']}/"
        slow = threading.Thread(target=slow_requests, args=(proc, stop, made), daemon=True)
        first = {}
        for _ in range(120 if lgf is not None else 0):  # until lgf exports the target (its histograms)
            first = exported(port, proc.pid)
            if "tier_cost_seconds" in first:
                break
            time.sleep(0.25)
        t0, before = time.monotonic(), cpu_ticks(proc.pid)
        slow.start()
        out = subprocess.run(["wrk", "-t2", "-c16", f"-d{WRK_SECONDS}s", url], capture_output=True,
                             text=True, check=True).stdout
        used, t1 = cpu_ticks(proc.pid) - before, time.monotonic()
        last = exported(port, proc.pid) if lgf is not None else {}
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
            # lgf's own account of the run: the tier's estimated cost (its hits x the per-hit cost
            # it measured), per request and as a share of the server's CPU, and its refusals
            row["est_us_per_req"] = (last["tier_cost_seconds"] - first.get("tier_cost_seconds", 0)) * 1e6 / requests
            cpu = last["target_cpu_seconds"] - first.get("target_cpu_seconds", 0)
            row["est_share"] = (last["tier_cost_seconds"] - first.get("tier_cost_seconds", 0)) / cpu if cpu else 0.0
            row["hit_cost_us"] = last["probe_hit_cost_seconds"] * 1e6
            row["refused"] = last["tier_arm_refused"] - first.get("tier_arm_refused", 0)
            row["hits_per_s"] = (last["tier_hits"] - first.get("tier_hits", 0)) / (t1 - t0)
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
        if name != "off":
            # (c) lgf's estimate next to what this bench measured (CPU per request over off)
            est = statistics.median(r["est_us_per_req"] for r in rows)
            print(f"  {'':24s} lgf's estimate of the tier's cost {est:6.2f} us/req ({100 * est / base:+5.1f} % of off)"
                  f" vs measured {us - base:+6.2f} us/req ({100 * (us / base - 1):+5.1f} %);"
                  f" estimated share of the server's CPU {100 * statistics.median(r['est_share'] for r in rows):4.1f} %,"
                  f" {statistics.median(r['hits_per_s'] for r in rows):7.0f} hits/s at"
                  f" {statistics.median(r['hit_cost_us'] for r in rows):4.2f} us/hit (measured by lgf),"
                  f" {int(sum(r['refused'] for r in rows))} armings refused by the budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
