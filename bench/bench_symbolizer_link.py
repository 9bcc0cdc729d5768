"""Benchmark (issue 21): `lgf symbolize --addr2line` against `go tool addr2line`, whole processes.

The newest toolchain's own `link` (~7 MB, ~5,700 functions), as built and `strip`ped, and 200,000
PCs spread over its functions on stdin: each command is run as the user runs it, start-up, reading
the binary, answering and printing included, and the two outputs are compared byte for byte.
Rows, each beside addr2line's figure from the same run (rounds alternate; the median is shown):

* lgf, cold: an empty symbol cache, so this process decodes the binary's pc-value tables (in C)
  and writes them to the cache;
* lgf, warm: a second process on the same build, its tables read from the cache the first wrote;
* CPU seconds (user + system) of each, steadier than wall time on a shared host;
* peak RSS of each process, lgf's beside addr2line's.

Goal: lgf's time <= 1x addr2line's, output identical. The cached tool binary is run (the go
command's start-up is not counted).

Run: .venv/bin/python bench/bench_symbolizer_link.py [N_PCS] [ROUNDS]
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.gobuild import available_go_versions  # noqa: E402
from support.symbolize import LGF, addr2line_tool, link_binary, run_process, spread_pcs, stripped_copy  # noqa: E402


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    version = available_go_versions()[-1]
    tool = addr2line_tool(version)
    print(f"lgf symbolize --addr2line vs go tool addr2line (go{version}), {n} PCs, whole processes, "
          f"median of {rounds} alternating rounds")
    print(f"{'binary':<16}{'figure':<30}{'lgf':>12}{'addr2line':>12}{'lgf/addr2line':>15}  output")
    failed = False
    with tempfile.TemporaryDirectory(prefix="lgf-bench-sym-") as tmp:
        tmp = Path(tmp)
        for label, binary in (("link", link_binary(version)), ("link stripped", stripped_copy(link_binary(version)))):
            pcs = spread_pcs(binary, n)
            stdin = tmp / "pcs.txt"
            stdin.write_bytes("".join(f"{pc:#x}\n" for pc in pcs).encode())
            cache = tmp / "symcache"
            lgf = [LGF, "symbolize", "--addr2line", "--cache-dir", cache, binary]
            runs: dict[str, list] = {"a2l": [], "cold": [], "warm": []}
            same = True
            for _ in range(rounds):
                for kind in ("a2l", "cold", "warm"):
                    if kind == "cold":
                        shutil.rmtree(cache, ignore_errors=True)
                    argv = [tool, binary] if kind == "a2l" else lgf
                    out = tmp / f"{kind}.out"
                    run = run_process(argv, stdin, out, tmp / f"{kind}.err")
                    if run.code != 0:
                        print(f"!! {kind} exited {run.code}: {(tmp / f'{kind}.err').read_text()[-500:]}")
                        return 1
                    runs[kind].append(run)
                    if kind != "a2l":
                        same &= out.read_bytes() == (tmp / "a2l.out").read_bytes()
            verdict = "identical" if same else "DIFFERENT"
            failed |= not same
            rows = [("wall", "time, cold (s)", "cold", 1), ("wall", "time, warm from cache (s)", "warm", 1),
                    ("cpu", "CPU, cold (s)", "cold", 1), ("cpu", "CPU, warm from cache (s)", "warm", 1),
                    ("rss_kib", "peak RSS, cold (MiB)", "cold", 1024), ("rss_kib", "peak RSS, warm (MiB)", "warm", 1024)]
            for field, name, kind, unit in rows:
                mine = statistics.median(getattr(r, field) for r in runs[kind]) / unit
                base = statistics.median(getattr(r, field) for r in runs["a2l"]) / unit
                note = verdict if field == "wall" else ""
                print(f"{label:<16}{name:<30}{mine:>12.3f}{base:>12.3f}{mine / base:>14.2f}x  {note}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
