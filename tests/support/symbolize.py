"""Shared by the symbolizer tests and benches: the addr2line oracle, the toolchains' `compile` and
`link` binaries, PCs, and `lgf symbolize` run as its own process."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from lgf.golang.pclntab import Pclntab
from support.gobuild import CACHE, build_go, go_binary, go_env


def addr2line_tool(version: str) -> Path:
    """The cached `go tool addr2line` binary (so the go command's start-up is not counted)."""
    out = subprocess.run([str(go_binary(version)), "tool", "-n", "addr2line"], env=go_env(version),
                         capture_output=True, text=True, check=True).stdout.strip()
    path = Path(out)
    if not path.exists():  # `-n` prints where the tool would be; build it once by running it
        subprocess.run([str(go_binary(version)), "tool", "addr2line", "--help"], env=go_env(version),
                       capture_output=True)
    return path


def run_addr2line(version: str, binary: Path, lines: list[str]) -> list[str]:
    """What `go tool addr2line BINARY` prints for these input lines, one process for all of them."""
    res = subprocess.run([str(addr2line_tool(version)), str(binary)], input="".join(x + "\n" for x in lines),
                         capture_output=True, text=True, check=True)
    return res.stdout.splitlines()


def compile_binary(version: str) -> Path:
    """The toolchain's own `compile` (GOTOOLDIR), a large real Go program built by that version."""
    return go_binary(version).parent.parent / "pkg" / "tool" / "linux_amd64" / "compile"


def link_binary(version: str) -> Path:
    """The toolchain's own `link` (~7 MB, ~5,700 functions): issue 21's whole-process benchmark."""
    return compile_binary(version).with_name("link")


def stripped_copy(binary: Path) -> Path:
    """A copy of ``binary`` run through `strip` (no .symtab), cached beside the Go builds."""
    out = CACHE / f"stripped-{binary.parent.parent.parent.parent.name}-{binary.name}-{binary.stat().st_size}"
    if not out.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        shutil.copyfile(binary, tmp)
        subprocess.run([shutil.which("strip") or "strip", str(tmp)], check=True)
        tmp.rename(out)
    return out


def spread_pcs(binary: Path, n: int, seed: int = 3) -> list[int]:
    """``n`` PCs spread evenly over the binary's functions: one random offset in each, in turn."""
    with Pclntab.from_elf(binary) as tab:
        funcs = [(e, end) for _, e, end in tab.funcs()]
    rnd = random.Random(seed)
    step = max(1, len(funcs) // n)
    pcs = []
    i = rnd.randrange(step)
    while len(pcs) < n:
        entry, end = funcs[i % len(funcs)]
        pcs.append(rnd.randrange(entry, max(end, entry + 1)))
        i += step
    return pcs


def build_pie(src: Path, version: str) -> Path:
    return build_go(src, version, buildmode="pie")


def addr2line_lines(tab: Pclntab, pcs: list[int]) -> list[str]:
    """What ``go tool addr2line`` would print for ``pcs``, as lgf's Pclntab answers it."""
    out = []
    for pc in pcs:
        name, file, line = tab.addr2line(pc)
        out += [name, f"{file}:{line}"]
    return out


LGF = Path(sys.executable).with_name("lgf")
"""The venv's `lgf` command (the console script a user runs)."""


class ProcessRun(NamedTuple):
    wall: float
    """Seconds from start to exit."""
    cpu: float
    """User + system CPU seconds of the process."""
    rss_kib: int
    """Peak resident set size."""
    code: int


def run_process(argv: list, stdin: Path, stdout: Path, stderr: Path | None = None) -> ProcessRun:
    """Run ``argv`` as its own process, stdin and stdout from and to files; what it cost.

    CPU and RSS come from GNU time (Debian's ``time``, in the Makefile's set-up), which forks the
    program from its own small process: Linux counts a child's RSS from before its exec too, so
    wait4 from this (large) Python process would report this process's size for every program.
    The wall time includes GNU time's own start (~1 ms), the same for every program measured.
    """
    with tempfile.NamedTemporaryFile(prefix="lgf-rss-", mode="r") as usage, \
            open(stdin, "rb") as fin, open(stdout, "wb") as fout, open(stderr or os.devnull, "wb") as ferr:
        t0 = time.perf_counter()
        code = subprocess.run([GNU_TIME, "-f", "%M %U %S", "-o", usage.name, *map(str, argv)], stdin=fin,
                              stdout=fout, stderr=ferr).returncode
        wall = time.perf_counter() - t0
        rss, user, system = usage.read().split()[-3:]
    return ProcessRun(wall, float(user) + float(system), int(rss), code)


GNU_TIME = "/usr/bin/time"
