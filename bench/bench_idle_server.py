"""What lgf costs a server that idles as real ones do, and a program that sleeps at start-up.

Issue 9's bars, each against "off" (nothing attached) in the same run, in interleaved rounds:

1. ``tests/goapps/bench_server``: net/http with idle keep-alive connections (-idle 8), an idle
   accept loop and a ticker goroutine whose period (100 ms) is over the threshold, left idle for
   ``IDLE_SECONDS`` with lgf attached, then loaded by ``wrk -t2 -c16`` on "/": server CPU time
   per request. With the shipped plugins.toml none of the idle waits may arm the goroutine tier,
   so the cost must stay within 2 % of off. Rows:

   - ``off``;
   - ``shipped plugins.toml``: the uprobe source with the [[sources]] options of the shipped file;
   - ``goroutine tier always``: the tier on from the start (with the ServeHTTP probe that records
     each request's ``*http.Request``);
   - ``..., no ServeHTTP probe``: the same without it: the difference is that probe's cost per
     request while the tier is armed.

   Each row also says in how many runs the goroutine tier was armed at the end.
2. ``tests/goapps/pingpong -sleep 2s``: a channel ping-pong whose main goroutine sleeps 2 s at
   start-up with lgf attached (its pong goroutine waits for the first ping meanwhile), then
   measures: ns per round trip, shipped plugins.toml vs off (bar: 1.2x).

Run as root: ``.venv/bin/python bench/bench_idle_server.py``. ``LGF_BENCH_ROUNDS`` (3),
``LGF_BENCH_WRK_SECONDS`` (3), ``LGF_BENCH_GO`` (1.25.5).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import lgf.sources.uprobe as uprobe  # noqa: E402
from lgf import options as opt  # noqa: E402
from lgf.config import parse_toml  # noqa: E402
from lgf.sources.uprobe import probes  # noqa: E402
from lgf.testing import EventCollector as Collector  # noqa: E402
from support.gobuild import GOAPPS, build_go  # noqa: E402
from support.stallfixture import run_context  # noqa: E402

GO = os.environ.get("LGF_BENCH_GO", "1.25.5")
ROUNDS = int(os.environ.get("LGF_BENCH_ROUNDS", "3"))
WRK_SECONDS = int(os.environ.get("LGF_BENCH_WRK_SECONDS", "3"))
IDLE_SECONDS = 1.5
"""Idle time before the load: every idle wait of the server passes the 50 ms threshold, and the
sampler (20 ms interval) sees each many times."""


def shipped_options() -> tuple[str, uprobe.UprobeOptions]:
    """(threshold, UprobeOptions) of the shipped plugins.toml's uprobe source."""
    raw = parse_toml(ROOT / "plugins.toml")
    table = next(t for t in raw.get("sources", []) if t.get("use") == "uprobe")
    errors: list = []
    options = opt.build(uprobe.UprobeOptions, table, "sources", errors, ignore=("use", "name"))
    if errors or options is None:
        raise SystemExit(f"plugins.toml: {errors}")
    return raw.get("lgf", {}).get("threshold", "50ms"), options


def configs() -> dict:
    threshold, shipped = shipped_options()
    return {
        "off": None,
        "shipped plugins.toml": (threshold, shipped, True),
        "goroutine tier always": ("50ms", uprobe.UprobeOptions(goroutine_tier="always"), True),
        "goroutine tier always, no ServeHTTP probe": ("50ms", uprobe.UprobeOptions(goroutine_tier="always"),
                                                      False),
    }


def attach(pid: int, config):
    if config is None:
        return None
    threshold, options, http_probe = config
    probes.HTTP_PROBES = HTTP_PROBES if http_probe else ()  # read by probes.goroutine_probes at attach
    src = uprobe.UprobeSource(options, run_context(threshold, pids=[pid]))
    src.start(Collector())
    return src


HTTP_PROBES = probes.HTTP_PROBES


def start(exe: Path, *args: str) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([str(exe), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return proc, json.loads(proc.stdout.readline())


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def idle_server(exe: Path, config) -> tuple[float, float, int]:
    """(server CPU us per request, requests per second, goroutine tier armed at the end: 1/0)."""
    proc, hello = start(exe, "-idle", "8", "-tick", "100ms")
    src = attach(proc.pid, config)
    try:
        time.sleep(IDLE_SECONDS)
        url = f"http://{hello['addr']}/"
        before = cpu_ticks(proc.pid)
        out = subprocess.run(["wrk", "-t2", "-c16", f"-d{WRK_SECONDS}s", url], capture_output=True,
                             text=True, check=True).stdout
        used = cpu_ticks(proc.pid) - before
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        armed = src.stats()["armed"] if src else 0
        return used / os.sysconf("SC_CLK_TCK") * 1e6 / requests, requests / WRK_SECONDS, armed
    finally:
        if src:
            src.stop()
        proc.stdin.close()
        proc.wait()


def sleepy_pingpong(exe: Path, config) -> tuple[float, int]:
    """(ns per round trip, goroutine tier armed at the end: 1/0)."""
    proc, _ = start(exe, "-sleep", "2s")
    src = attach(proc.pid, config)
    try:
        runs = []
        for _ in range(5):
            proc.stdin.write("\n")
            proc.stdin.flush()
            runs.append(json.loads(proc.stdout.readline())["ns_per_round_trip"])
        armed = src.stats()["armed"] if src else 0
        return statistics.median(runs), armed
    finally:
        if src:
            src.stop()
        proc.stdin.close()
        proc.wait()


def main() -> int:
    if os.geteuid() != 0:
        print("bench_idle_server: needs root (BPF)", file=sys.stderr)
        return 1
    server = build_go(GOAPPS / "bench_server", GO)
    pingpong = build_go(GOAPPS / "pingpong", GO)
    cfgs = configs()
    print(f"Idle-looking targets, Go {GO}, {os.cpu_count()} CPUs; ratios against 'off' from this run, "
          f"median of {ROUNDS} interleaved rounds")
    http = {name: [] for name in cfgs}
    for _ in range(ROUNDS):
        for name, config in cfgs.items():
            http[name].append(idle_server(server, config))
    base = statistics.median(us for us, _, _ in http["off"])
    print(f"\nbench_server (8 idle keep-alive conns, idle accept loop, 100 ms ticker) idle {IDLE_SECONDS} s, "
          f"then wrk -t2 -c16 -d{WRK_SECONDS}s: server CPU per request (bar: shipped <= +2 %)")
    for name, runs in http.items():
        us = statistics.median(u for u, _, _ in runs)
        rps = statistics.median(r for _, r, _ in runs)
        armed = sum(a for _, _, a in runs)
        print(f"  {name:44s} {us:7.2f} us/req {rps:8.0f} req/s {100 * (us / base - 1):+6.1f} % CPU/req"
              f"   tier armed in {armed}/{len(runs)} runs")
    probe = (statistics.median(u for u, _, _ in http["goroutine tier always"])
             - statistics.median(u for u, _, _ in http["goroutine tier always, no ServeHTTP probe"]))
    print(f"  => the ServeHTTP probe while the tier is armed: {probe:+.2f} us per request "
          f"({100 * probe / base:+.1f} % of off)")
    pp_cfgs = {k: cfgs[k] for k in ("off", "shipped plugins.toml")}
    pp = {name: [] for name in pp_cfgs}
    for _ in range(ROUNDS):
        for name, config in pp_cfgs.items():
            pp[name].append(sleepy_pingpong(pingpong, config))
    base = statistics.median(ns for ns, _ in pp["off"])
    print("\nping-pong whose main goroutine sleeps 2 s at start-up: ns per round trip (bar: shipped <= 1.2x)")
    for name, runs in pp.items():
        ns = statistics.median(n for n, _ in runs)
        armed = sum(a for _, a in runs)
        print(f"  {name:44s} {ns:8.1f} ns  {ns / base:5.2f}x   tier armed in {armed}/{len(runs)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
