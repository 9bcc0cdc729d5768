"""Shared by the symbolizer tests: the addr2line oracle, the toolchains' `compile` binaries, PCs."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

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
