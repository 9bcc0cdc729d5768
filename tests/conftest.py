"""Shared fixtures: Go toolchains and the rule for BPF tests. Helpers live in ``tests/support``.

BPF tests need root and BCC. Elsewhere they skip; with ``LGF_REQUIRE_BPF=1`` (set by .ci/run,
which runs as root on a machine with BPF) that skip becomes a failure, so CI can never go green
by silently not tracing anything.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.gobuild import GO_VERSIONS, available_go_versions, go_binary


def pytest_collection_modifyitems(config, items):
    """A BPF test that fails is run once more, and passes only if that second run passes.

    Why: these tests drive real probes against real Go programs on a shared 2-core host, where a
    neighbour can hold a process off its CPUs for longer than any stall a test induces; the
    assertions are causal (no wall-clock tolerance, see docs/testing.md), yet a starved
    sampler or attach can still miss its moment. A second run tells such a moment from a
    regression, which fails both. Every second run is listed as RERUN in the summary: a flake to
    look into, not a pass to forget."""
    for item in items:
        if item.get_closest_marker("bpf") and not item.get_closest_marker("flaky"):
            item.add_marker(pytest.mark.flaky(reruns=1))


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
