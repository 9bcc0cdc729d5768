"""Cost of knowing a Go binary and of watching /proc, each next to a baseline from the same run.

1. Cold ``GoBinary(path).facts()`` (build info, symbols, DWARF offsets, decoded probe sites, wait
   reasons) on large real Go binaries (the toolchain's own ``compile`` and ``go``), next to Go's
   own tools reading part of the same: ``go version -m`` (build info) plus ``go tool nm`` (symbols),
   run from their cached binaries so the go command's start-up is not counted.
2. ``ProcessWatcher.poll()`` in steady state, next to the floor any /proc poller pays: listing
   /proc and reading every process's exe link.

Run: ``.venv/bin/python bench/bench_gobinary.py`` (or ``make bench``). No assertions on speed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from benchlib import best_of  # noqa: E402

from lgf.config import TargetOptions
from lgf.golang.discovery import ProcessWatcher
from lgf.golang.gobinary import GoBinary

ROOT = Path(__file__).resolve().parent.parent
GO = ROOT / ".toolchains" / "go1.25.5" / "go" / "bin" / "go"


def tool_path(name: str) -> str:
    return subprocess.run([str(GO), "tool", "-n", name], capture_output=True, text=True, check=True).stdout.strip()


def bench_facts() -> None:
    nm = tool_path("nm")
    goroot = GO.parent.parent
    targets = [Path(tool_path("compile")), goroot / "bin" / "go"]
    print("1. cold facts of one binary (best of 3)")
    for path in targets:
        ours = best_of(3, lambda p=path: GoBinary(p).facts())
        theirs = best_of(3, lambda p=path: (
            subprocess.run([str(GO), "version", "-m", str(p)], capture_output=True, check=True),
            subprocess.run([nm, str(p)], capture_output=True, check=True)))
        size = path.stat().st_size / 1e6
        src = GoBinary(path).offset_source  # distribution binaries carry no DWARF: "table"
        print(f"   {path.name:<8} {size:6.1f} MB offsets:{src:<5}  lgf {ours * 1e3:8.1f} ms   go version -m + go tool nm "
              f"{theirs * 1e3:8.1f} ms   ratio lgf/baseline {ours / theirs:5.2f}")


def bench_poll() -> None:
    watcher = ProcessWatcher(TargetOptions(all=True), lambda t: None, lambda t: None)
    watcher.poll()  # first poll opens every binary; steady state is what runs every interval

    def floor():
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    os.readlink(f"/proc/{name}/exe")
                except OSError:
                    pass

    n = sum(1 for name in os.listdir("/proc") if name.isdigit())
    ours = best_of(20, watcher.poll)
    base = best_of(20, floor)
    print(f"2. steady-state /proc poll over {n} processes (best of 20)")
    print(f"   ProcessWatcher.poll {ours * 1e3:6.2f} ms   listdir+readlink floor {base * 1e3:6.2f} ms   "
          f"ratio {ours / base:5.2f}   (at 250 ms: {ours / 0.25 * 100:.2f} % of a core)")


def main() -> int:
    if not GO.exists():
        print(f"needs the Go 1.25.5 toolchain at {GO} (make toolchains)")
        return 1
    bench_facts()
    bench_poll()
    return 0


if __name__ == "__main__":
    sys.exit(main())
