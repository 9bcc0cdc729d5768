"""The `symbolizer` enricher (local backend) on events whose PCs come from real Go binaries."""

from __future__ import annotations

import subprocess

import pytest

from lgf import Event, RunContext
from lgf.errors import ConfigError
from lgf.golang.pclntab import Pclntab
from lgf.golang.symbols import is_user_func, print_name, stack_summary
from lgf.options import build
from lgf.plugins.symbolizer import SymbolizerEnricher, SymbolizerOptions, lgf_components
from lgf.stats import Stats
from support.gobuild import GO_VERSIONS, GOAPPS, build_go
from support.symbolize import build_pie

INLINE = GOAPPS / "inline"


def _enricher(**options) -> tuple[SymbolizerEnricher, Stats]:
    stats = Stats()
    return SymbolizerEnricher(SymbolizerOptions(**options), RunContext(config=None, stats=stats)), stats


def _deep_return_address(tab: Pclntab) -> int:
    """A return address whose call site (pc-1) sits four frames deep in inlined code."""
    work = tab.func_by_name("main.work")
    return 1 + next(pc for pc in range(work, work + 400) if len(tab.frames(pc, is_return_addr=False)) == 4)


@pytest.fixture
def running_fixture(go_toolchains):
    binary = build_go(INLINE, GO_VERSIONS[1])
    proc = subprocess.Popen([str(binary), "100000000000"], stdout=subprocess.DEVNULL)
    yield binary, proc
    proc.kill()
    proc.wait()


def test_event_from_a_running_process_gets_stack_and_summary(running_fixture):
    binary, proc = running_fixture
    tab = Pclntab.from_elf(binary)
    gopark = tab.func_by_name("runtime.gopark")
    ev = Event(pid=proc.pid, exe="", pcs=[gopark + 20, _deep_return_address(tab), 0x10])
    enricher, stats = _enricher()
    enricher.lgf_enrich(ev)
    park = [f.func for f in tab.frames(gopark + 20)]  # gopark, after whatever it inlines there
    assert park[-1] == "runtime.gopark"
    assert [f["func"] for f in ev.stack] == park + ["main.leaf", "main.middle", "main.outer", "main.work"]
    assert [f["inlined"] for f in ev.stack][len(park):] == [True, True, True, False]
    assert all(set(f) == {"func", "file", "line", "pc", "inlined"} for f in ev.stack)
    assert ev.stack[len(park)]["pc"] == ev.pcs[1] and ev.stack[len(park)]["file"].endswith("inline/main.go")
    assert ev.stack_summary == ["main.leaf", "main.middle", "main.outer"]
    assert stats.get("lgf_symbolizer_failures_total", reason="pc_not_found") == 1
    assert stats.get("lgf_symbolizer_events_total", backend="local") == 1
    enricher.close()


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_pie_pcs_are_taken_relative_to_the_load_bias(go_toolchains, version):
    binary = build_pie(INLINE, version)
    tab = Pclntab.from_elf(binary)
    bias = 0x7F12_3400_0000
    ret = _deep_return_address(tab)
    ev = Event(exe=str(binary), pcs=[ret + bias], extra={"load_bias": bias})
    enricher, _ = _enricher()
    enricher.lgf_enrich(ev)
    assert [f["func"] for f in ev.stack] == ["main.leaf", "main.middle", "main.outer", "main.work"]
    assert ev.stack[0]["pc"] == ret + bias


def test_unreadable_binaries_are_counted_logged_once_and_skipped(tmp_path, caplog):
    not_go = tmp_path / "not-go"
    not_go.write_bytes(b"\x7fELF" + bytes(200))
    enricher, stats = _enricher()
    for _ in range(3):
        ev = Event(exe=str(not_go), pcs=[0x401000])
        enricher.lgf_enrich(ev)
        assert ev.stack == [] and ev.stack_summary == []
    assert stats.get("lgf_symbolizer_failures_total", reason="bad_binary") == 3
    assert sum("cannot read" in r.message for r in caplog.records) == 1
    ev = Event(exe=str(tmp_path / "gone"), pid=0, pcs=[0x401000])
    enricher.lgf_enrich(ev)
    assert stats.get("lgf_symbolizer_failures_total", reason="no_binary") == 1


def test_component_and_options_are_declared_for_plugins_toml():
    (component,) = lgf_components()
    assert (component.kind, component.use, component.options) == ("enricher", "symbolizer", SymbolizerOptions)
    errors: list[ConfigError] = []
    opts = build(SymbolizerOptions, {"backend": "ray", "ray_address": "10.0.0.5:6379", "workers": 4},
                 "enrichers[0]", errors)
    assert errors == [] and opts.workers == 4
    build(SymbolizerOptions, {"backend": "gpu"}, "enrichers[0]", errors)
    build(SymbolizerOptions, {"workers": 0}, "enrichers[0]", errors)
    build(SymbolizerOptions, {"ray_address": "not an address"}, "enrichers[0]", errors)
    assert len(errors) == 3


def test_summary_skips_the_runtime_and_std_internals():
    assert not is_user_func("runtime.gopark")
    assert not is_user_func("internal/poll.(*FD).Read")
    assert not is_user_func("sync.runtime_SemacquireMutex")
    assert is_user_func("sync.(*Mutex).Lock") and is_user_func("go.uber.org/zap.(*Logger).Info")
    assert print_name("slices.SortFunc[go.shape.[]int,go.shape.int]") == "slices.SortFunc[...]"
    frames = [{"func": f} for f in ("runtime.gopark", "runtime.chanrecv1", "main.consumer", "main.main")]
    assert stack_summary(frames) == ["main.consumer", "main.main"]
    assert stack_summary([{"func": "runtime.gcBgMarkWorker"}]) == ["runtime.gcBgMarkWorker"]


def test_the_local_backend_uses_the_hosts_shared_symbol_cache(running_fixture):
    """One symbol cache per host: the enricher reads through ``ctx.services.symbolizers`` (what
    the scope step and the sampler use), ``max_binaries`` only grows it, and closing the enricher
    (a reload swapping it, lgf_unconfigure) leaves the host's cache open."""
    from lgf.services import SYMBOLIZER_MAX_OPEN, Services
    binary, proc = running_fixture
    services = Services()
    ctx = RunContext(config=None, stats=Stats(), services=services)
    small = SymbolizerEnricher(SymbolizerOptions(max_binaries=2), ctx)
    assert small.backend.symbolizers is services.symbolizers
    assert services.symbolizers.max_open == SYMBOLIZER_MAX_OPEN  # never made smaller
    big = SymbolizerEnricher(SymbolizerOptions(max_binaries=200), ctx)
    assert services.symbolizers.max_open == 200
    tab = Pclntab.from_elf(str(binary))
    event = Event(pid=proc.pid, exe=str(binary), pcs=[_deep_return_address(tab)])
    big.lgf_enrich(event)
    assert event.stack and len(services.symbolizers) == 1
    big.lgf_unconfigure()
    small.close()
    assert len(services.symbolizers) == 1, "the host's cache is the host's to close"
    services.close()
    assert len(services.symbolizers) == 0
