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

Then what sharing over a cluster saves (``ray_address`` = a cluster: one actor per build id,
shared by every lgf attached; needs root and ``unshare``): a Ray head of its own on loopback, and
lgf instances as separate processes, each in a mount namespace with its own copy of Go's
`compile` on a tmpfs the head cannot read (as on other hosts). One event of ``SHARED_PCS`` PCs:

* local, cold (the baseline: what every host pays without sharing) and local, warm;
* the first lgf on the cluster: the build's actor is made, the binary shipped and decoded;
* the second lgf's first event: the actor is warm (its driver cache is empty);
* the second lgf's same event again: its driver cache;
* the same event with that cache emptied: the actor's answer alone, its connection already made.

Run: .venv/bin/python bench/bench_ray_symbolizer.py [N] [PCS]   (``shared``: that part only)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from lgf.plugins.symbolizer import LocalBackend  # noqa: E402
from support.gobuild import ROOT as REPO  # noqa: E402
from support.gobuild import available_go_versions, go_binary, go_env  # noqa: E402
from support.symbolize import spread_pcs  # noqa: E402

BATCH = 8
SHARED_PCS = 2000
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


def bench_shared(version: str) -> None:
    """What one build's shared actor saves a second lgf (see the module docstring)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        print("shared actors: skipped (needs root and unshare, for a mount namespace per lgf)")
        return
    from support.rayhead import Head, Lgf
    from support.symbolize import compile_binary

    binary = compile_binary(version)
    pcs = sorted(set(spread_pcs(binary, SHARED_PCS, seed=11)))
    tmp = Path(tempfile.mkdtemp(prefix="lgfbench"))
    t0 = time.perf_counter()
    head = Head()
    startup = time.perf_counter() - t0
    lgfs = []
    try:
        local = Lgf("-", binary, tmp / "local")
        first = Lgf(head.address, binary, tmp / "host1")
        second = Lgf(head.address, binary, tmp / "host2")
        lgfs = [local, first, second]
        rows = []
        for label, lgf in (("local, cold (baseline)", local), ("local, warm", local),
                           ("1st lgf: actor made, binary shipped", first),
                           ("2nd lgf, first event: actor warm", second),
                           ("2nd lgf, again: driver cache", second),
                           ("2nd lgf, cache emptied: actor's answer", second)):
            if label.startswith("2nd lgf, cache emptied"):
                lgf.ask(op="forget")
            got = lgf.ask(op="sym", pcs=pcs)
            rows.append((label, got["seconds"], got["funcs"], got["backend"]))
        info = second.ask(op="info")["actor"]
    finally:
        for lgf in lgfs:
            lgf.close()
        head.close()
        shutil.rmtree(tmp, ignore_errors=True)
    if any(r[2] != rows[0][2] for r in rows):
        print("WARNING: shared and local answers differ")
    base = rows[0][1]
    print(f"\nshared actors: one build (`compile`, go{version}, {binary.stat().st_size >> 20} MiB), one event of "
          f"{len(pcs)} PCs, each lgf its own process and copy; head start-up {startup:.1f} s not counted; "
          f"actor: decoded {info['decoded']}, shipped {info['shipped']}, clients {len(info['clients'])}")
    print(f"{'lgf':<40}{'backend':>8}{'ms':>10}{'vs local cold':>15}")
    for label, seconds, _, backend in rows:
        print(f"{label:<40}{backend:>8}{seconds * 1e3:>10.1f}{base / seconds:>14.2f}x")


def main() -> int:
    version = available_go_versions()[-1]
    if sys.argv[1:2] == ["shared"]:
        bench_shared(version)
        return 0
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 120
    per = int(sys.argv[2]) if len(sys.argv) > 2 else 300
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
    bench_shared(version)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
