"""lgf's goroutine tier per goroutine switch, against the floor of any per-switch uprobe, same run.

The issue's bar: with the goroutine tier on, a channel ping-pong (two switches per round trip, the
worst case) may cost at most 1.3x what an EMPTY BPF program on the same probe sites costs (the
kernel's trap and return, which no program can go below: bench_uprobe_floor.py). Configurations,
measured in interleaved rounds (the host is shared) on one pingpong process each:

- ``off``: nothing attached;
- ``floor: empty on execute``: an empty program on runtime.execute (lgf's one hit per switch);
- ``lgf tier, no ready``: lgf's uprobe source, ``goroutine_tier = "always"``, ``sched_latency =
  false``: on_execute + the sched_switch tracepoint;
- ``floor: empty on execute + ready`` and ``lgf tier (sched_latency)``: the same with
  runtime.ready probed too (lgf's default when the tier is on).

Prints ns per round trip, the ratio to ``off``, and each lgf row's ratio to its floor. With
``LGF_BENCH_BPF_STATS=1`` it also turns on kernel.bpf_stats_enabled for the run and prints the
average run time of each lgf BPF program (what the program itself costs, without the trap).

Run as root: ``.venv/bin/python bench/bench_tier_floor.py``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from lgf.bpf import loader  # noqa: E402
from lgf.golang.gobinary import open_binary  # noqa: E402
from lgf.sources.uprobe import UprobeOptions, UprobeSource  # noqa: E402
from lgf.testing import EventCollector as Collector  # noqa: E402
from support.gobuild import GOAPPS, build_go  # noqa: E402
from support.stallfixture import run_context  # noqa: E402

GO = os.environ.get("LGF_BENCH_GO", "1.25.5")
ROUNDS = int(os.environ.get("LGF_BENCH_ROUNDS", "3"))
EMPTY = "int empty(struct pt_regs *ctx) { return 0; }"
CONFIGS = {
    "off": None,
    "floor: empty on execute": ("empty", ["runtime.execute"]),
    "lgf tier, no ready": ("lgf", False),
    "floor: empty on execute + ready": ("empty", ["runtime.execute", "runtime.ready"]),
    "lgf tier (sched_latency)": ("lgf", True),
}
FLOOR_OF = {"lgf tier, no ready": "floor: empty on execute",
            "lgf tier (sched_latency)": "floor: empty on execute + ready"}


def _attach(exe: Path, pid: int, config):
    """-> a detach function."""
    if config is None:
        return lambda: None
    what, arg = config
    if what == "lgf":
        src = UprobeSource(UprobeOptions(goroutine_tier="always", sched_latency=arg),
                           run_context("50ms", pids=[pid]))
        src.start(Collector())
        return src.stop
    from bcc import BPF

    bpf = BPF(text=EMPTY)
    binary = open_binary(str(exe))
    probes = [loader.attach_uprobe(bpf, str(exe), binary.func_addr(fn) + binary.probe_offset(fn), "empty", pid)
              for fn in arg]

    def detach():
        for p in probes:
            loader.detach_uprobe(bpf, p)
        bpf.cleanup()
    return detach


def prog_stats() -> dict[int, tuple[str, int, int]]:
    """{prog id: (name, run_time_ns, run_cnt)} of every BPF program on the host."""
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True).stdout
    return {p["id"]: (p.get("name", ""), p.get("run_time_ns", 0), p.get("run_cnt", 0))
            for p in json.loads(out or "[]")}


def measure(exe: Path, config, per_prog: dict) -> float:
    proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pid = json.loads(proc.stdout.readline())["pid"]
    existing = set(prog_stats()) if per_prog is not None else set()
    detach = _attach(exe, pid, config)
    try:
        # only the programs this attach loaded: other tools on a shared host may run programs
        # of the same names
        before = {i: v for i, v in prog_stats().items() if i not in existing} if per_prog is not None else {}
        runs = []
        for _ in range(5):
            proc.stdin.write("\n")
            proc.stdin.flush()
            runs.append(json.loads(proc.stdout.readline())["ns_per_round_trip"])
        if per_prog is not None:
            for pid_, (name, t, c) in prog_stats().items():
                if pid_ in before and name.startswith("on_") and c - before[pid_][2] > 1000:
                    per_prog.setdefault(name, []).append((t - before[pid_][1]) / (c - before[pid_][2]))
        return statistics.median(runs)
    finally:
        detach()
        proc.stdin.close()
        proc.wait()


def main() -> int:
    if os.geteuid() != 0:
        print("bench_tier_floor: needs root (BPF)", file=sys.stderr)
        return 1
    exe = build_go(GOAPPS / "pingpong", GO)
    stats = os.environ.get("LGF_BENCH_BPF_STATS") == "1"
    per_prog: dict | None = {} if stats else None
    if stats:
        subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=1"], check=True)
    results: dict[str, list[float]] = {name: [] for name in CONFIGS}
    try:
        for _ in range(ROUNDS):
            for name, config in CONFIGS.items():
                results[name].append(measure(exe, config, per_prog if config and config[0] == "lgf" else None))
    finally:
        if stats:
            subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=0"], check=True)
    med = {name: statistics.median(v) for name, v in results.items()}
    print(f"goroutine tier vs the per-switch uprobe floor: channel ping-pong (Go {GO}), ns per round trip, "
          f"median of {ROUNDS} interleaved rounds x 5 x 200k")
    for name, v in med.items():
        line = f"  {name:34s} {v:9.0f} ns  {v / med['off']:6.2f}x off"
        if name in FLOOR_OF:
            line += f"   {v / med[FLOOR_OF[name]]:5.2f}x its floor (target <= 1.3x)"
        print(line)
    if per_prog:
        print("  BPF program run time (bpf_stats, mean per run, incl. the stats' own ~30 ns):")
        for name, vals in sorted(per_prog.items()):
            print(f"    {name:18s} {statistics.median(vals):6.0f} ns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
