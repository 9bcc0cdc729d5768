"""Helpers for the gobinary, discovery and inspect tests: builds of the binfacts fixture in every
variant, running it, and the Go toolchain's own tools as oracles (``go tool nm``, ``go tool
objdump``, ``go tool buildid``, and the runtime's source for the wait-reason strings)."""

from __future__ import annotations

import ast
import contextlib
import re
import subprocess
from pathlib import Path

from support.gobuild import GOAPPS, build_go, go_binary, go_env, goroot

BINFACTS = GOAPPS / "binfacts"
VARIANTS = {"plain": {}, "sw": {"ldflags": "-s -w"}, "strip": {"strip": True}}
"""plain: symbols and DWARF; sw: ``-ldflags=-s -w`` (no .symtab, no DWARF); strip: ``strip`` after linking."""


def binfacts(version: str, variant: str = "plain") -> Path:
    return build_go(BINFACTS, version, **VARIANTS[variant])


def binfacts_pie(version: str) -> Path:
    return build_go(BINFACTS, version, buildmode="pie")


@contextlib.contextmanager
def running(binary: Path, seconds: int = 60):
    """Run the fixture; yields ``(proc, work_addr)`` once it printed "ready"; stops it after."""
    proc = subprocess.Popen([str(binary), str(seconds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline().split()
        assert line[:2] == ["ready", str(proc.pid)], line
        yield proc, int(line[2], 16)
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def go_tool(version: str, *args: str) -> str:
    return subprocess.run([str(go_binary(version)), "tool", *args], env=go_env(version), check=True,
                          capture_output=True, text=True).stdout


def go_nm(version: str, binary: Path) -> dict[str, tuple[int, str]]:
    """``{name: (addr, kind letter)}`` from ``go tool nm`` (the reference symbol lister)."""
    out = {}
    for line in go_tool(version, "nm", str(binary)).splitlines():
        parts = line.split(None, 2)  # names of generic instances hold spaces
        if len(parts) == 3 and re.fullmatch(r"[0-9a-f]+", parts[0]):
            out.setdefault(parts[2], (int(parts[0], 16), parts[1]))
    return out


def go_objdump(version: str, binary: Path, func: str) -> list[tuple[int, str]]:
    """``[(address, Go-syntax instruction)]`` of ``func`` from ``go tool objdump`` (reads the pclntab,
    so it works on stripped binaries too)."""
    rows = []
    for line in go_tool(version, "objdump", "-s", "^" + re.escape(func) + "$", str(binary)).splitlines():
        m = re.match(r"\s+\S+:\d+\s+(0x[0-9a-f]+)\s+[0-9a-f]+\s+(.*)$", line)
        if m:
            rows.append((int(m.group(1), 16), m.group(2).strip()))
    return rows


def runtime_strings(version: str, type_name: str, array_name: str) -> list[str]:
    """The ``[...]string`` array ``array_name`` of the toolchain's runtime source, indexed by the
    ``type_name = iota`` constants: the oracle for what lgf reads out of binaries."""
    src = goroot(version) / "src" / "runtime"
    text = "\n".join(p.read_text() for p in sorted(src.glob("*.go")) if not p.name.endswith("_test.go"))
    if f"var {array_name} " not in text:
        return []  # a table that release does not have (stwReasonStrings came with Go 1.21)
    m = re.search(r"\nconst \(\n\s*(\w+)\s+" + type_name + r" = iota(.*?)\n\)", text, re.S)
    assert m, f"no iota block for {type_name} in {src}"
    consts = [m.group(1)] + re.findall(r"^\s*(\w+)\b", m.group(2), re.M)
    consts = [c for c in consts if not c.startswith("//")]
    body = re.search(r"\nvar " + array_name + r" = \[\.\.\.\]string\{(.*?)\n\}", text, re.S)
    assert body, f"no {array_name} in {src}"
    entries = {name: ast.literal_eval(lit) for name, lit in
               re.findall(r"^\s*(\w+):\s*(\"(?:[^\"\\]|\\.)*\"),", body.group(1), re.M)}
    index = {name: i for i, name in enumerate(consts)}
    size = max(index[name] for name in entries) + 1
    out = [""] * size
    for name, value in entries.items():
        out[index[name]] = value
    return out
