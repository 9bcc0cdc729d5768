"""What lgf's probes cost the traced program: a channel ping-pong and a net/http server under wrk.

Run as root: ``.venv/bin/python bench/bench_probe_cost.py`` (``make bench``). Prints each figure
beside its baseline from the same run (no probes), and the ratio. Configurations:

- ``off``: nothing attached (the baseline);
- ``default``: the shipped plugins.toml: the uprobe source with ``goroutine_tier = "on_stall"``
  (only the cheap stop-the-world probes attached while nothing stalls, and the goroutine sampler
  reading the target's goroutines from outside every 20 ms);
- ``on_stall, sampler off``: the same with ``sample_interval = "0s"`` (what the sampler adds);
- ``default + tracepoint source``: the same plus blocking-syscall tracing (raw sys_enter/sys_exit);
- ``goroutine tier always``: ``goroutine_tier = "always"``: execute (one hit per goroutine switch)
  + ready (one per wake-up) + the sched_switch tracepoint;
- ``..., no ready``: the same with ``sched_latency = false``: one uprobe hit per switch only.

Last, what the goroutine sampler costs lgf itself: CPU per sample of a target with 100 and with
10,000 parked goroutines (``tests/goapps/runtimestate``), beside the time of one bare
``process_vm_readv`` of the allgs header (the floor of any sample), and the share of one CPU its
thread takes at the default interval (stretched for a dear target, see ``lgf.sources.uprobe.sampler``).

Ping-pong: ns per round trip (each round trip is two park/wake cycles: the worst case for
per-switch probes), median of 5 runs of 200k round trips. net/http: server CPU time (utime +
stime from /proc) per request while ``wrk -t2 -c16`` loads it for a few seconds on loopback.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from lgf.sources.tracepoint import TracepointOptions, TracepointSource  # noqa: E402
from lgf.sources.uprobe import UprobeOptions, UprobeSource  # noqa: E402
from lgf.testing import EventCollector  # noqa: E402
from support.gobuild import build_go  # noqa: E402
from support.stallfixture import run_context  # noqa: E402

GO = os.environ.get("LGF_BENCH_GO", "1.25.5")
WRK_SECONDS = int(os.environ.get("LGF_BENCH_WRK_SECONDS", "3"))
ROUNDS = int(os.environ.get("LGF_BENCH_ROUNDS", "3"))
"""Configurations are measured in interleaved rounds and each figure is the median over rounds:
the host is shared, so load drifts; interleaving gives every configuration the same drift."""
CONFIGS = {
    "off": None,
    "default (shipped plugins.toml)": ("on_stall", True, False, None),
    "on_stall, sampler off": ("on_stall", True, False, 0),
    "default + tracepoint source": ("on_stall", True, True, None),
    "goroutine tier always": ("always", True, False, None),
    "goroutine tier always, no ready": ("always", False, False, None),
}
"""name -> (goroutine_tier, sched_latency, with tracepoint source, sample_interval or None for the
default), None = nothing attached."""


def attach(pid: int, config):
    if config is None:
        return []
    tier, sched, with_tp, sample_interval = config
    ctx = run_context("50ms", pids=[pid])
    options = UprobeOptions(goroutine_tier=tier, sched_latency=sched)
    if sample_interval is not None:
        options.sample_interval = sample_interval
    sources = [UprobeSource(options, ctx)]
    if with_tp:
        sources.append(TracepointSource(TracepointOptions(), ctx))
    for s in sources:
        s.start(EventCollector())
    return sources


def detach(sources) -> None:
    for s in sources:
        s.stop()


def start(exe: Path, *args: str) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([str(exe), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return proc, json.loads(proc.stdout.readline())


def pingpong(exe: Path, config) -> float:
    proc, _ = start(exe)
    sources = attach(proc.pid, config)
    try:
        runs = []
        for _ in range(5):
            proc.stdin.write("\n")
            proc.stdin.flush()
            runs.append(json.loads(proc.stdout.readline())["ns_per_round_trip"])
        return statistics.median(runs)
    finally:
        detach(sources)
        proc.stdin.close()
        proc.wait()


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def http_cpu_per_request(exe: Path, config) -> tuple[float, float, int]:
    """(server CPU microseconds per request, requests per second, goroutine tier armed at the end:
    1/0, so an on_stall row shows whether the sampler armed it during the run)."""
    proc, hello = start(exe)
    sources = attach(proc.pid, config)
    try:
        url = f"http://{hello['addr']}/"
        subprocess.run(["wrk", "-t1", "-c4", "-d1s", url], capture_output=True, check=True)  # warm-up
        before = cpu_ticks(proc.pid)
        out = subprocess.run(["wrk", "-t2", "-c16", f"-d{WRK_SECONDS}s", url], capture_output=True,
                             text=True, check=True).stdout
        used = cpu_ticks(proc.pid) - before
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        hz = os.sysconf("SC_CLK_TCK")
        armed = sources[0].stats()["armed"] if sources else 0
        return used / hz * 1e6 / requests, requests / WRK_SECONDS, armed
    finally:
        detach(sources)
        proc.stdin.close()
        proc.wait()


def sampler_cost(exe: Path, parked: int, samples: int = 100) -> tuple[float, float, float, float]:
    """(lgf CPU us per sample, us per bare allgs header read, % of one CPU of the sampler thread
    over 3 s, its interval in ms then) against one runtimestate process with ``parked`` goroutines."""
    import time
    import types

    from lgf.golang.gobinary import open_binary
    from lgf.golang.runtime_reader import RuntimeReader
    from lgf.services import Services
    from lgf.sources.uprobe.handoff import NoGoroutineTier
    from lgf.sources.uprobe.sampler import GoroutineSampler

    proc, _ = start(exe, "-parked", str(parked), "-conns", "0")
    try:
        target = types.SimpleNamespace(pid=proc.pid, binary=open_binary(f"/proc/{proc.pid}/exe"),
                                       exe=str(exe), comm="runtimestate")
        never = 1 << 62  # a threshold never reached: measure reading, not arming
        sampler = GoroutineSampler(UprobeOptions().sample_interval, never, tier=NoGoroutineTier(),
                                   services=Services(), emit=lambda e: None, max_goroutines=1 << 20)
        sampler.add(target)
        state = sampler._procs[proc.pid]
        c0 = time.process_time()
        for _ in range(samples):
            state.next_ns = 0
            sampler.sample_once()
        per_sample = (time.process_time() - c0) / samples * 1e6
        reader = RuntimeReader(proc.pid)
        header = reader.addr("runtime.allgs")
        c0 = time.process_time()
        for _ in range(samples):
            reader.read(header, 16)
        bare = (time.process_time() - c0) / samples * 1e6
        reader.close()
        sampler.start()
        c0 = time.process_time()
        time.sleep(3)
        share = (time.process_time() - c0) / 3 * 100
        interval_ms = state.interval_ns / 1e6
        sampler.stop()
        return per_sample, bare, share, interval_ms
    finally:
        proc.stdin.close()
        proc.wait()


def main() -> int:
    if os.geteuid() != 0:
        print("bench_probe_cost: needs root (BPF)", file=sys.stderr)
        return 1
    pp = build_go(ROOT / "tests" / "goapps" / "pingpong", GO)
    hh = build_go(ROOT / "tests" / "goapps" / "httphello", GO)
    print(f"Probe cost, Go {GO}, {os.cpu_count()} CPUs (ratios against 'off' from this run)")
    print(f"\nchannel ping-pong: ns per round trip (median of {ROUNDS} rounds x 5 x 200k)")
    pp_runs = {name: [] for name in CONFIGS}
    for _ in range(ROUNDS):
        for name, config in CONFIGS.items():
            pp_runs[name].append(pingpong(pp, config))
    base = statistics.median(pp_runs["off"])
    for name, runs in pp_runs.items():
        ns = statistics.median(runs)
        print(f"  {name:34s} {ns:9.1f} ns   {ns / base:5.2f}x")
    print(f"\nnet/http hello under wrk -t2 -c16 -d{WRK_SECONDS}s: server CPU per request "
          f"(median of {ROUNDS} interleaved rounds)")
    http_runs = {name: [] for name in CONFIGS}
    for _ in range(ROUNDS):
        for name, config in CONFIGS.items():
            http_runs[name].append(http_cpu_per_request(hh, config))
    base = statistics.median(us for us, _, _ in http_runs["off"])
    for name, runs in http_runs.items():
        us = statistics.median(u for u, _, _ in runs)
        rps = statistics.median(r for _, r, _ in runs)
        armed = sum(a for _, _, a in runs)
        print(f"  {name:34s} {us:7.2f} us/req  {rps:9.0f} req/s   {100 * (us / base - 1):+6.1f} % CPU/req"
              f"   goroutine tier armed in {armed}/{len(runs)} runs")
    rs = build_go(ROOT / "tests" / "goapps" / "runtimestate", GO)
    print("\ngoroutine sampler: lgf CPU per sample (baseline: one bare allgs header read)")
    for parked in (100, 10_000):
        per_sample, bare, share, interval_ms = sampler_cost(rs, parked)
        print(f"  {parked:6d} parked goroutines  {per_sample:9.1f} us/sample  (bare read {bare:5.1f} us, "
              f"{per_sample / bare:6.0f}x)   thread: {share:4.1f} % of one CPU at a {interval_ms:.0f} ms interval")
    return 0


if __name__ == "__main__":
    sys.exit(main())
