"""Go toolchains and cached builds of the fixture programs under tests/goapps.

Every toolchain the Makefile installs is used: the oldest supported, the design's, the newest.
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

GO_VERSIONS = ("1.21.13", "1.25.5", "1.27.3")
"""Every toolchain the Makefile installs: the oldest supported, the design's, the newest."""


def go_binary(version: str) -> Path:
    return TOOLCHAINS / f"go{version}" / "go" / "bin" / "go"


def available_go_versions() -> list[str]:
    return [v for v in GO_VERSIONS if go_binary(v).exists()]


def go_env(version: str) -> dict[str, str]:
    cache = ROOT / ".cache"
    return {**os.environ, "GOCACHE": str(cache / f"gocache-{version}"),
            "GOPATH": str(cache / "gopath"), "GOFLAGS": "-mod=mod", "GO111MODULE": "on",
            "GOTOOLCHAIN": "local", "CGO_ENABLED": "0", "GOPROXY": "off"}


def build_go(src: str | Path, version: str, ldflags: str = "", strip: bool = False,
             tags: str = "", buildmode: str = "") -> Path:
    """Build the Go program in directory ``src`` with toolchain ``version``; cached by content.

    ``strip=True`` also runs ``strip`` on the result (removes .symtab: the pclntab path);
    ``buildmode="pie"`` builds a position-independent executable.
    """
    src = Path(src)
    key = f"{version}|{ldflags}|{strip}|{tags}" + (f"|{buildmode}" if buildmode else "")
    h = hashlib.sha256(key.encode())
    for p in sorted(src.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    out = CACHE / f"{src.name}{'-' + buildmode if buildmode else ''}-go{version}-{h.hexdigest()[:12]}"
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
    subprocess.run(cmd, cwd=src, env=go_env(version), check=True, capture_output=True)
    if strip:
        subprocess.run([shutil.which("strip") or "strip", str(tmp)], check=True)
    tmp.rename(out)
    return out
