"""/metrics keeps each stall-duration series and its labels for its whole life, across exits.

A process's BPF histogram counts are folded into its service's series when it exits
(``lgf.histories``), so Prometheus never sees a counter go down, nor the counts jump to
``cause="unknown"`` / ``service=""``; a restarted service continues its series. Real BPF, both
sources, on the stalls fixture (its ``pipe`` mode: a goroutine blocked in read(2), which the
tracepoint source measures, while the main goroutine sleeps, which the uprobe source measures).
"""

from __future__ import annotations

import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lgf import config as cfg
from lgf.alerts import AlertEngine
from lgf.http import HttpServer
from lgf.stats import Stats
from lgf.testing import EventCollector
from support.gobuild import GO_VERSIONS, build_go
from support.stallfixture import STALLS_SRC, StallFixture, run_context, wait_attached

pytestmark = pytest.mark.bpf


def counts(url: str) -> dict[tuple, float]:
    """``{(cause, service, stall): count}`` of lgf_stall_duration_seconds in one scrape."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == "lgf_stall_duration_seconds":
            for s in fam.samples:
                if s.name.endswith("_count"):
                    out[(s.labels["cause"], s.labels["service"], s.labels["stall"])] = s.value
    return out


def run_once(exe, sources) -> int:
    """One life of the fixture: attached, one stall, exited and detached. Returns its pid."""
    with StallFixture(exe, "pipe", "-d", "80ms") as fx:
        for src in sources:
            wait_attached(src, fx.pid)
        fx.go()
        pid = fx.pid
    deadline = time.monotonic() + 20
    while any(src.is_attached(pid) for src in sources):  # discovery notices the exit
        assert time.monotonic() < deadline, "the sources never noticed the exit"
        time.sleep(0.05)
    return pid


def test_series_survive_the_exit_and_a_restarted_service_continues_them(tmp_path, bpf_ok, go_toolchains):
    from lgf.sources.tracepoint import TracepointOptions, TracepointSource
    from lgf.sources.uprobe import UprobeOptions, UprobeSource

    exe = build_go(STALLS_SRC, GO_VERSIONS[-1], ldflags="-X main.privateCopy=metrics")
    ctx = run_context("50ms", exe=[str(exe)])
    sources = [UprobeSource(UprobeOptions(goroutine_tier="always"), ctx), TracepointSource(TracepointOptions(), ctx)]
    config = cfg.validate({"lgf": {"spool_dir": str(tmp_path)}, "http": {"listen": "127.0.0.1:0"}}, {})
    server = HttpServer(config, AlertEngine(config, Stats()), Stats(), sources)
    events = EventCollector()
    for src in sources:
        src.start(events)
    server.start()
    try:
        with StallFixture(exe, "pipe", "-d", "80ms") as fx:
            for src in sources:
                wait_attached(src, fx.pid)
            fx.go()
            events.wait_for(lambda e: e.pid == fx.pid and e.extra.get("stall") == "syscall")
            alive = counts(server.url)  # scraped while the process runs
            first_pid = fx.pid
        deadline = time.monotonic() + 20
        while any(src.is_attached(first_pid) for src in sources):
            assert time.monotonic() < deadline, "the sources never noticed the exit"
            time.sleep(0.05)
        exited = counts(server.url)
        run_once(exe, sources)  # the service restarts (a new pid), stalls again, exits
        restarted = counts(server.url)
    finally:
        server.stop()
        for src in sources:
            src.stop()

    service = "stalls"  # its main module's name (lgf.test/stalls): no [alerts] services pattern
    mine = {k for k in alive if k[1] == service}
    assert ("syscall", service, "syscall") in mine and ("sleep", service, "park") in mine, alive
    for before, after in ((alive, exited), (exited, restarted)):
        for key, n in before.items():
            assert after.get(key, 0) >= n, (key, before, after)  # never down, never moved away
        assert set(after) - set(before) <= {k for k in after if k[1] == service and k[0] != "unknown"}, after
    assert not any(k[0] == "unknown" or k[1] == "" for k in set(exited) | set(restarted) if k not in alive)
    assert restarted[("syscall", service, "syscall")] > exited[("syscall", service, "syscall")]  # continued
    assert restarted[("sleep", service, "park")] > exited[("sleep", service, "park")]
