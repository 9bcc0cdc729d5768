"""The floor of any per-switch uprobe on this machine: an EMPTY BPF program on runtime.execute.

lgf's goroutine tier needs one uprobe hit per goroutine switch (bench_probe_cost.py measures it).
This measures what no BPF program, however short, can go below: the kernel's trap and return
for a uprobe on the same emulated instruction lgf uses (the `push %rbp` after the stack check,
found by lgf.golang.gobinary). Channel ping-pong (two switches per round trip), ns per round
trip: nothing attached vs an empty program on execute vs one on execute and ready.

Run as root: `.venv/bin/python bench/bench_uprobe_floor.py [GO_VERSION...]` (part of `make bench`,
Go 1.25.5). Give `1.19.8 1.21.13` to compare Go 1.19's probe site (`sub $N,%rsp`, single-stepped
by the kernel) with 1.21's (`push %rbp`, emulated).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from lgf.bpf import loader as bpfutil  # noqa: E402
from lgf.golang.gobinary import open_binary  # noqa: E402
from support.gobuild import GOAPPS, build_go  # noqa: E402

EMPTY = "int empty(struct pt_regs *ctx) { return 0; }"
ROUNDS = 5


def measure(exe: Path, funcs: list[str]) -> float:
    from bcc import BPF

    proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pid = json.loads(proc.stdout.readline())["pid"]
    bpf = BPF(text=EMPTY) if funcs else None
    binary = open_binary(str(exe))
    probes = [bpfutil.attach_uprobe(bpf, str(exe), binary.func_addr(fn) + binary.probe_offset(fn),
                                    "empty", pid) for fn in funcs]
    try:
        runs = []
        for _ in range(ROUNDS):
            proc.stdin.write("\n")
            proc.stdin.flush()
            runs.append(json.loads(proc.stdout.readline())["ns_per_round_trip"])
        return statistics.median(runs)
    finally:
        for probe in probes:
            bpfutil.detach_uprobe(bpf, probe)
        proc.stdin.close()
        proc.wait()


def main(versions: list[str]) -> None:
    for version in versions or ["1.25.5"]:
        floor(version)


def floor(version: str) -> None:
    exe = build_go(GOAPPS / "pingpong", version)
    configs = {"nothing attached": [], "empty program on execute": ["runtime.execute"],
               "empty program on execute + ready": ["runtime.execute", "runtime.ready"]}
    results = {name: [] for name in configs}
    for _ in range(3):  # interleaved rounds: the host is shared
        for name, funcs in configs.items():
            results[name].append(measure(exe, funcs))
    base = statistics.median(results["nothing attached"])
    site = open_binary(str(exe)).probe_site("runtime.execute")[1]
    print(f"uprobe floor: channel ping-pong (Go {version}, probe on `{site}`), ns per round trip, "
          "median of 3 interleaved rounds")
    for name, vals in results.items():
        v = statistics.median(vals)
        print(f"  {name:<34} {v:>9.0f} ns  {v / base:>6.1f}x")
    per_hit = (statistics.median(results["empty program on execute"]) - base) / 2
    print(f"  => one uprobe hit costs about {per_hit / 1000:.2f} us here (two switches per round trip)")


if __name__ == "__main__":
    main(sys.argv[1:])
