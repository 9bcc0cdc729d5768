"""Benchmark: the symbolizer's Ray backend (2 actors) against the local backend on 100+ binaries.

Generates ``N`` distinct Go binaries (one tiny program, a different constant in each, built
once with one toolchain and cached under .cache/raybench), takes ``PCS`` PCs spread over each
binary's functions, and symbolizes them all:

* local: ``LocalBackend`` in this process, cold (every binary opened and decoded for the first time);
* ray: ``RayBackend`` with 2 actors on a local Ray (num_cpus=2), cold actors, requests batched
  ``BATCH`` binaries per call (hundreds of PCs per actor call);
* ray, actors warm: the same PCs again with the driver cache emptied (every PC crosses to an actor);
* ray, driver cache: the same PCs again (what a steady enricher pays).

Prints PCs/s for each and the ratio to local. Actor start-up is printed, not counted.
Run: .venv/bin/python bench/bench_ray_symbolizer.py [N] [PCS]
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from lgf.plugins.symbolizer import LocalBackend  # noqa: E402
from support.gobuild import ROOT as REPO  # noqa: E402
from support.gobuild import available_go_versions, go_binary, go_env  # noqa: E402
from support.symbolize import spread_pcs  # noqa: E402

BATCH = 8
PROGRAM = """package main

import (
	"fmt"
	"os"
	"strings"
)

const variant = {n}

func describe(x int) string {{
	return strings.Repeat("v", x%7) + fmt.Sprint(x*variant)
}}

func main() {{
	fmt.Fprintln(os.Stdout, describe(len(os.Args)+variant))
}}
"""


def build_variants(n: int, version: str) -> list[Path]:
    """``n`` distinct binaries, built in one `go build ./cmd/...` (parallel, shared std) and cached."""
    mod = REPO / ".cache" / "raybench" / f"go{version}"
    out = mod / "bin"
    wanted = [out / f"variant{i:03d}" for i in range(n)]  # not "vNNN": Go reads that as a major version
    if all(p.exists() for p in wanted):
        return wanted
    (mod / "cmd").mkdir(parents=True, exist_ok=True)
    (mod / "go.mod").write_text("module example.com/raybench\n\ngo 1.21\n")
    for i in range(n):
        d = mod / "cmd" / f"variant{i:03d}"
        d.mkdir(exist_ok=True)
        (d / "main.go").write_text(PROGRAM.format(n=i + 1))
    out.mkdir(exist_ok=True)
    print(f"building {n} variants with go{version} (once; cached in {mod}) ...", flush=True)
    subprocess.run([str(go_binary(version)), "build", "-p", "2", "-o", str(out) + "/", "./cmd/..."],
                   cwd=mod, env=go_env(version), check=True)
    return wanted


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 120
    per = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    version = available_go_versions()[-1]
    binaries = build_variants(n, version)
    requests = [(f"v{i}", str(b), spread_pcs(b, per, seed=i)) for i, b in enumerate(binaries)]
    total = sum(len(r[2]) for r in requests)
    batches = [requests[i:i + BATCH] for i in range(0, len(requests), BATCH)]

    local = LocalBackend(max_binaries=n + 8)
    expected = []
    t_local = timed(lambda: [expected.extend(local.resolve(b)) for b in batches])
    local.close()

    import ray

    from lgf.golang.ray_symbols import RayBackend

    t0 = time.perf_counter()
    backend = RayBackend("local", workers=2, max_binaries=n + 8)
    startup = time.perf_counter() - t0
    got = []
    t_cold = timed(lambda: [got.extend(backend.resolve(b)) for b in batches])
    backend._cache.clear()
    t_warm_actors = timed(lambda: [backend.resolve(b) for b in batches])
    t_driver = timed(lambda: [backend.resolve(b) for b in batches])
    per_actor = ray.get([a.binaries.remote() for a in backend.actors])
    backend.close()
    if got != expected:
        print("WARNING: Ray and local answers differ")

    print(f"{n} distinct Go binaries (go{version}), {per} PCs each = {total} PCs, batches of {BATCH} binaries; "
          f"Ray: 2 actors (binaries per actor {per_actor}), start-up {startup:.1f} s not counted")
    print(f"{'backend':<34}{'PCs/s':>12}{'vs local':>10}")
    print(f"{'local (baseline), cold':<34}{total / t_local:>12,.0f}{1.0:>9.2f}x")
    for label, t in (("ray 2 workers, cold", t_cold), ("ray 2 workers, actors warm", t_warm_actors),
                     ("ray 2 workers, driver cache", t_driver)):
        print(f"{label:<34}{total / t:>12,.0f}{t_local / t:>9.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
