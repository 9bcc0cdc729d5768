"""When Ray cannot be reached, the symbolizer says so in one line and symbolizes locally.

Kept apart from test_ray_symbolizer.py so no Ray instance is running here: the backend must
try (and fail) to join the cluster it is given, promptly.
"""

from __future__ import annotations

import os
import socket

import pytest

from lgf import Event, RunContext
from lgf.golang.pclntab import Pclntab
from lgf.golang.ray_symbols import RayBackend, RayUnavailable
from lgf.plugins.symbolizer import SymbolizerEnricher, SymbolizerOptions
from lgf.stats import Stats
from support.gobuild import GO_VERSIONS, GOAPPS, build_go

ray = pytest.importorskip("ray")


@pytest.fixture
def requests(go_toolchains):
    inline = build_go(GOAPPS / "inline", GO_VERSIONS[-1])
    tab = Pclntab.from_elf(inline)
    return [("inline", str(inline), [tab.func_by_name("main.work") + 8])]


def test_unreachable_cluster_falls_back_to_local_with_one_line(caplog, requests):
    assert not ray.is_initialized()
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RayUnavailable, match="cannot reach"):
        RayBackend(f"127.0.0.1:{port}", workers=1)
    assert not ray.is_initialized()
    stats = Stats()
    enricher = SymbolizerEnricher(SymbolizerOptions(backend="ray", ray_address=f"127.0.0.1:{port}"),
                                  RunContext(config=None, stats=stats))
    assert enricher.backend.name == "local"
    warnings = [r.getMessage() for r in caplog.records if "Ray backend unavailable" in r.getMessage()]
    assert len(warnings) == 1 and "symbolizing locally" in warnings[0]
    assert "trying again every minute" in warnings[0]  # a host may boot before the head
    assert stats.get("lgf_symbolizer_failures_total", reason="ray_unavailable") == 1
    _, path, pcs = requests[-1]
    ev = Event(exe=path, pcs=[pcs[0] + 1])
    enricher.lgf_enrich(ev)
    assert ev.stack
    enricher.close()


def test_auto_without_a_cluster_says_how_to_start_one(monkeypatch):
    if os.path.exists("/tmp/ray/ray_current_cluster"):
        pytest.skip("`ray start` ran on this host: there is a cluster for \"auto\" to find")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(RayUnavailable, match="ray start --head"):
        RayBackend("auto", workers=1)
