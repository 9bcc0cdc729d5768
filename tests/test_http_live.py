"""Live: the uprobe source on a real Go program -> enrichers, classifier, alert policy -> HTTP.

One Go version (the newest) keeps this light; the per-version coverage of each part is in its
own tests. Needs root and BCC (``bpf_ok``).
"""

from __future__ import annotations

import json
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lgf import config as cfg
from lgf.alerts import AlertEngine
from lgf.http import HttpServer
from lgf.plugins.gc_phase import GcPhaseEnricher
from lgf.plugins.poller import PollerEnricher
from lgf.plugins.sched import SchedEnricher
from lgf.plugins.waitreason import WaitReasonClassifier
from lgf.stats import Stats
from lgf.testing import EventCollector
from support.gobuild import GO_VERSIONS, build_go
from support.stallfixture import STALLS_SRC, StallFixture, outside_bounds, run_context, wait_attached

pytestmark = pytest.mark.bpf


@pytest.fixture(scope="module")
def live(bpf_ok, go_toolchains):
    from lgf.sources.uprobe import UprobeOptions, UprobeSource

    exe = build_go(STALLS_SRC, GO_VERSIONS[-1])
    ctx = run_context("50ms", exe=[str(exe)])
    src = UprobeSource(UprobeOptions(goroutine_tier="always"), ctx)
    events = EventCollector()
    src.start(events)
    yield src, events, exe, ctx
    src.stop()


def scrape(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def test_a_real_channel_stall_becomes_an_enriched_alert_and_a_histogram(live, tmp_path):
    src, events, exe, ctx = live
    ctx.sources = [src]
    config = cfg.validate({"lgf": {"spool_dir": str(tmp_path), "threshold": "50ms"},
                           "http": {"listen": "127.0.0.1:0"}}, {})
    stats = Stats()
    engine = AlertEngine(config, stats)
    server = HttpServer(config, engine, stats, [src])
    server.start()
    enrichers = [GcPhaseEnricher(None, ctx), PollerEnricher(None, ctx), SchedEnricher(None, ctx)]
    classifier = WaitReasonClassifier(None, ctx)
    try:
        with StallFixture(exe, "chanrecv", "-d", "120ms") as fx:
            wait_attached(src, fx.pid)
            (res,) = fx.go()
            found = events.wait_for(lambda e: e.pid == fx.pid and e.goid == res["goid"]
                                    and e.wait_reason == "chan receive")
            assert found, [(e.goid, e.wait_reason) for e in events.of_pid(fx.pid)]
            ev = found[0]
            for e in enrichers:  # right away, while the process still runs: as the pipeline does
                e.lgf_enrich(ev)
            ev.cause = classifier.lgf_classify(ev)
            engine.observe(ev)
            metrics = scrape(server.url + "/metrics")
            bpf_rows = src.histograms()
        assert ev.cause == "channel"
        assert ev.sched["goroutines"] >= 2 and ev.sched["gomaxprocs"] >= 1
        assert ev.gc_phase["phase"] in ("off", "mark", "mark_termination")
        assert "waiting" in ev.poller
        (alert,) = engine.due(2**63 - 1)
        latency = json.loads(scrape(server.url + "/debug/latency"))
        assert latency["alerts"][0]["id"] == alert.id and latency["alerts"][0]["cause"] == "channel"
        assert latency["windows"][0]["pid"] == fx.pid
        assert alert.extra["worst_ns"] == ev.duration_ns
        assert not outside_bounds(res, ev.start_ns, ev.end_ns), (ev, res)

        fams = {f.name: f for f in text_string_to_metric_families(metrics)}
        counts = {s.labels["cause"]: s.value for s in fams["lgf_stall_duration_seconds"].samples
                  if s.name.endswith("_count")}
        assert counts.get("channel", 0) >= 1  # from the BPF histogram, not from the event
        # The fixture's stall is its longest channel receive: the highest slot of its BPF row.
        # bcc's bpf_log2l puts it in slot i = [2^(i-1), 2^i) us, the convention /metrics'
        # le = 2^i us stands on (tests/test_http.py); a factor of two off fails here.
        (row,) = [h["log2_us"] for h in bpf_rows if h["labels"]["pid"] == str(fx.pid)
                  and h["labels"]["stall"] == "park" and h["labels"]["wait_reason"] == "chan receive"]
        top = max(i for i, n in enumerate(row) if n)
        assert 2 ** (top - 1) <= ev.duration_ns / 1000 < 2**top, (ev.duration_ns, row)
        runtime = {(s.labels["pid"], s.labels["counter"]) for s in fams["lgf_go_runtime"].samples}
        assert (str(fx.pid), "gc_cycles") in runtime
    finally:
        server.stop()
