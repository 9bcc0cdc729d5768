"""Symbols shared over a Ray cluster: one actor per build id serves every lgf attached to it.

A real Ray head (``ray start --head --block`` on this host, its own temp dir and port) serves the
module; three lgf instances run as separate processes (``support.raydriver``), each in a mount
namespace of its own holding its own copy of one Go binary on a tmpfs the cluster cannot see, as
on three other hosts: the first ships the binary to the build's actor, the other two find that
actor warm. Then the head is stopped: the next symbolization is local, correct, and logged once.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from lgf.golang.pclntab import Pclntab
from lgf.golang.ray_shared import ACTOR_PREFIX, NAMESPACE, actor_name, file_build_id
from lgf.plugins.symbolizer import LocalBackend
from support.gobuild import GO_VERSIONS, GOAPPS, build_go
from support.rayhead import Head, Lgf

pytest.importorskip("ray")
if shutil.which("unshare") is None or os.geteuid() != 0:
    pytest.skip("needs root and unshare (a mount namespace per simulated host)", allow_module_level=True)

@pytest.fixture(scope="module")
def head():
    h = Head()
    yield h
    h.close()


@pytest.fixture(scope="module")
def binary(go_toolchains):
    return build_go(GOAPPS / "inline", GO_VERSIONS[-1])


@pytest.mark.slow
def test_an_idle_actor_exits_and_the_next_lgf_makes_it_again(head, go_toolchains, tmp_path):
    app = build_go(GOAPPS / "pingpong", GO_VERSIONS[-1])
    tab = Pclntab.from_elf(app)
    pcs = sorted({e + (end - e) // 2 + 1 for _, e, end in tab.funcs()})
    name = actor_name(file_build_id(app))
    lgf = Lgf(head.address, app, tmp_path / "idle", "10s")
    try:
        assert lgf.ask(op="sym", pcs=pcs[:20])["funcs"] == _expected(app, pcs[:20])
        assert name in [a["name"] for a in lgf.ask(op="named")["named"]]
        deadline = time.monotonic() + 120
        while name in [a["name"] for a in lgf.ask(op="named")["named"]]:
            assert time.monotonic() < deadline, "the idle actor did not exit"
            time.sleep(2)
        got = lgf.ask(op="sym", pcs=pcs[20:40])  # its handle is dead: the actor is made again
        assert got["backend"] == "ray" and got["lost"] == 0 and got["funcs"] == _expected(app, pcs[20:40])
        assert lgf.ask(op="info")["actor"]["decoded"] == 1
    finally:
        lgf.close()


def _expected(binary: Path, pcs: list[int]) -> list[list[str]]:
    frames = LocalBackend().resolve([("k", str(binary), pcs)])[0]
    return [[f.func for f in fs] for fs in frames]


@pytest.mark.slow
def test_one_actor_per_build_serves_three_lgfs_and_a_lost_head_falls_back_locally(head, binary, tmp_path):
    tab = Pclntab.from_elf(binary)
    pcs = sorted({e + (end - e) // 2 + 1 for _, e, end in tab.funcs()})
    first, later = pcs[::2], pcs[1::2]
    expected_first, expected_later = _expected(binary, first), _expected(binary, later)
    build_id = file_build_id(binary)
    assert build_id

    lgfs: list[Lgf] = []
    try:
        for n in range(3):
            lgfs.append(Lgf(head.address, binary, tmp_path / f"host{n}"))
            assert lgfs[-1].ready == {"ready": "ray"}
            got = lgfs[-1].ask(op="sym", pcs=first)
            assert got["backend"] == "ray" and got["funcs"] == expected_first
        # a reload's new enricher in a process already attached uses that connection
        assert lgfs[1].ask(op="reload") == {"ready": "ray"}
        got = lgfs[1].ask(op="sym", pcs=later[:40])
        assert got["backend"] == "ray" and got["funcs"] == expected_later[:40]
        info = lgfs[2].ask(op="info")
        ours = [a for a in info["named"] if a["name"] == actor_name(build_id)]
        assert ours == [{"name": actor_name(build_id), "namespace": NAMESPACE}], info["named"]
        assert all(a["name"].startswith(ACTOR_PREFIX) for a in info["named"])  # and no private ones
        actor = info["actor"]
        assert actor["decoded"] == 1 and actor["shipped"] == 1, actor  # once per cluster, not per host
        assert len(actor["clients"]) == 3, actor  # every lgf found the first one's actor
        assert actor["build_id"] == build_id

        head.stop()
        survivor = lgfs[0]
        got = survivor.ask(op="sym", pcs=later)  # PCs its driver cache has not seen: needs a decode
        assert got["backend"] == "local" and got["funcs"] == expected_later
        assert got["lost"] == 1
        again = survivor.ask(op="sym", pcs=later[:50] + first[:50])
        assert again["funcs"] == expected_later[:50] + expected_first[:50] and again["lost"] == 1
        # Ray ends a driver whose GCS is gone for 60 s; lgf must have let go of the cluster first
        time.sleep(75)
        assert survivor.proc.poll() is None, survivor.log.read_text()[-3000:]
        assert survivor.ask(op="sym", pcs=first[:10])["funcs"] == expected_first[:10]
    finally:
        for lgf in lgfs:
            lgf.close()
    lines = [ln for ln in lgfs[0].log.read_text().splitlines() if "lost the Ray cluster" in ln]
    assert len(lines) == 1, lgfs[0].log.read_text()[-3000:]
