"""Shared fixtures: Go toolchains, cached Go builds, and the rule for BPF tests.

BPF tests need root and BCC. Elsewhere they skip; with ``LGF_REQUIRE_BPF=1`` (set by .ci/run,
which runs as root on a machine with BPF) that skip becomes a failure, so CI can never go green
by silently not tracing anything.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLCHAINS = ROOT / ".toolchains"
CACHE = ROOT / ".cache" / "gobuild"
GOAPPS = Path(__file__).resolve().parent / "goapps"

GO_VERSIONS = ("1.21.13", "1.25.5", "1.27.3")
"""Every toolchain the Makefile installs: the oldest supported, the design's, the newest."""


def go_binary(version: str) -> Path:
    return TOOLCHAINS / f"go{version}" / "go" / "bin" / "go"


def available_go_versions() -> list[str]:
    return [v for v in GO_VERSIONS if go_binary(v).exists()]


def require_bpf_or_skip(reason: str) -> None:
    if os.environ.get("LGF_REQUIRE_BPF") == "1":
        pytest.fail(f"LGF_REQUIRE_BPF=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def bpf_ok() -> None:
    """Use in every test that loads a BPF program."""
    if os.geteuid() != 0:
        require_bpf_or_skip("BPF tests need root")
    try:
        import bcc  # noqa: F401  (Debian's python3-bpfcc, seen through the venv)
    except ImportError:
        require_bpf_or_skip("BCC is not importable (apt-get install python3-bpfcc)")


@pytest.fixture(scope="session")
def go_toolchains() -> dict[str, Path]:
    """``{"1.21.13": Path(".../go"), ...}``; every listed toolchain must exist (make test installs them)."""
    found = {v: go_binary(v) for v in available_go_versions()}
    missing = [v for v in GO_VERSIONS if v not in found]
    if missing:
        pytest.fail(f"Go toolchains missing: {missing}; run `make test` (it installs them)")
    return found


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
