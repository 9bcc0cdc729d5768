"""Benchmark: lgf's pclntab symbolizer next to `go tool addr2line`, same binary, same PCs, same run.

For each toolchain's own `compile` (a ~20-28 MB Go program) and 10,000 PCs spread over its
functions, prints:

* cold load: opening the binary and answering the first PC, vs addr2line answering one PC
  (its whole process: read the file, build the function table, answer);
* cold lookups/s: the first pass over all PCs, one Python call per PC (the binary's pc-value
  tables decoded in C on the first lookup; no on-disk cache here);
* warm lookups/s: the second pass (the per-PC cache), the steady state of a running lgf;
* 2nd visit/s: new PCs (addr2line mode), each a bisect in the decoded index;
* addr2line's PCs/s over the same 10,000 PCs fed on one stdin (its load included, as a user
  pays it), and the ratios. The cached tool binary is run, so the go command's start-up is not
  counted. Goal: warm lookups at least addr2line's throughput. Whole processes, `lgf symbolize`
  against addr2line over 200,000 PCs, are bench_symbolizer_link.py.

Run: .venv/bin/python bench/bench_symbolizer.py [N_PCS]
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from benchlib import best_of  # noqa: E402

from lgf.golang.symbols import Symbolizer  # noqa: E402
from support.gobuild import available_go_versions  # noqa: E402
from support.symbolize import addr2line_tool, compile_binary, spread_pcs  # noqa: E402


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    print(f"lgf symbolizer vs go tool addr2line, {n} PCs spread over each binary's functions")
    print(f"{'binary':<22}{'figure':<34}{'lgf':>14}{'addr2line':>14}{'lgf/addr2line':>15}")
    for version in available_go_versions():
        binary = compile_binary(version)
        tool = addr2line_tool(version)
        pcs = spread_pcs(binary, n)
        stdin = "".join(f"{pc:#x}\n" for pc in pcs).encode()

        def run_tool(data: bytes, tool=tool, binary=binary) -> None:
            subprocess.run([str(tool), str(binary)], input=data, capture_output=True, check=True)

        a2l_one = best_of(3, lambda s=stdin: run_tool(s.splitlines(keepends=True)[0]))
        a2l_all = best_of(3, lambda s=stdin: run_tool(s))

        def cold_load(binary=binary, pc=pcs[0]) -> None:
            sym = Symbolizer(binary)
            sym.frames(pc)
            sym.close()

        load = best_of(5, cold_load)
        sym = Symbolizer(binary)
        t0 = time.perf_counter()
        for pc in pcs:
            sym.frames(pc)
        cold = time.perf_counter() - t0
        warm = best_of(3, lambda sym=sym, pcs=pcs: [sym.frames(pc) for pc in pcs])
        t0 = time.perf_counter()
        for pc in pcs:
            sym.addr2line(pc)
        a2l_mode = time.perf_counter() - t0
        sym.close()

        name = f"compile go{version}"
        rows = [
            ("cold load (ms, lower is better)", load * 1e3, a2l_one * 1e3, a2l_one / load, "x faster"),
            ("cold lookups/s (first pass)", n / cold, n / a2l_all, a2l_all / cold, "x"),
            ("warm lookups/s (cached)", n / warm, n / a2l_all, a2l_all / warm, "x"),
            ("2nd visit/s (tables decoded whole)", n / a2l_mode, n / a2l_all, a2l_all / a2l_mode, "x"),
        ]
        for label, mine, base, ratio, unit in rows:
            print(f"{name:<22}{label:<34}{mine:>14,.1f}{base:>14,.1f}{ratio:>13.2f}{unit}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
