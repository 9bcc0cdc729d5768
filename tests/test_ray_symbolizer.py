"""The Ray backend on a real local Ray: same frames as the local backend, shipping, fallback.

One Ray instance (num_cpus=2, no dashboard) serves the module and is shut down after it.
"""

from __future__ import annotations

import pytest

from lgf import Event, RunContext
from lgf.golang.pclntab import Pclntab
from lgf.golang.ray_symbols import RayBackend
from lgf.plugins.symbolizer import LocalBackend, SymbolizerEnricher, SymbolizerOptions
from lgf.stats import Stats
from support.gobuild import GO_VERSIONS, GOAPPS, build_go
from support.symbolize import compile_binary, spread_pcs

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def requests(go_toolchains):
    reqs = [(f"compile-{v}", str(compile_binary(v)), spread_pcs(compile_binary(v), 1500, seed=5))
            for v in GO_VERSIONS]
    inline = build_go(GOAPPS / "inline", GO_VERSIONS[-1])
    tab = Pclntab.from_elf(inline)
    reqs.append(("inline", str(inline), [e + (end - e) // 2 for _, e, end in tab.funcs()] + [0x10]))
    return reqs


@pytest.mark.slow
def test_ray_actors_give_the_same_frames_as_the_local_backend(local_ray, requests):
    backend = RayBackend("local", workers=2)
    try:
        expected = LocalBackend().resolve(requests)
        assert backend.resolve(requests) == expected
        assert backend.resolve(requests) == expected  # answered from the driver cache
        counts = ray.get([a.binaries.remote() for a in backend.actors])
        assert sum(counts) == len(requests), "each binary is mapped by exactly one actor"
        assert sorted(backend.shard_of(k) for k, _, _ in requests) == sorted(
            i for i, n in enumerate(counts) for _ in range(n))
    finally:
        backend.close()
    assert ray.is_initialized(), "a backend that joined a running Ray must leave it running"


def test_a_binary_the_actor_cannot_see_is_shipped_to_it(local_ray, requests):
    backend = RayBackend("local", workers=2)
    try:
        key, path, pcs = requests[-1]
        size = len(open(path, "rb").read())
        backend._idents["elsewhere"] = (size, 1)  # as if the actor's node had another file there
        got = backend.resolve([("elsewhere", path, pcs)])
        assert got == LocalBackend().resolve([(key, path, pcs)])
    finally:
        backend.close()


def test_enricher_with_ray_backend_fills_the_stack(local_ray, requests):
    _, path, pcs = requests[-1]
    tab = Pclntab.from_elf(path)
    work = tab.func_by_name("main.work")
    deep = next(pc for pc in range(work, work + 400) if len(tab.frames(pc, is_return_addr=False)) == 4)
    stats = Stats()
    enricher = SymbolizerEnricher(SymbolizerOptions(backend="ray"), RunContext(config=None, stats=stats))
    try:
        assert enricher.backend.name == "ray"
        ev = Event(exe=path, pcs=[deep + 1])
        enricher.lgf_enrich(ev)
        assert [f["func"] for f in ev.stack] == ["main.leaf", "main.middle", "main.outer", "main.work"]
        assert stats.get("lgf_symbolizer_events_total", backend="ray") == 1
    finally:
        enricher.close()
