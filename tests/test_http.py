"""/debug/latency, /metrics and the silence API over real HTTP on 127.0.0.1, and `lgf silence`."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lgf import config as cfg
from lgf.alerts import AlertEngine
from lgf.event import Event
from lgf.http import HttpServer
from lgf.stats import Stats
from support.cli import lgf

MS = 1_000_000


class HistogramSource:
    """A source at its boundary: what the BPF source's histograms()/runtime_counters() return."""

    name = "uprobe"

    def histograms(self):
        return [
            {"labels": {"pid": "42", "comm": "api", "stall": "park", "wait_reason": "chan receive"},
             "log2_us": [5, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]},  # 2 in [32.8 ms, 65.5 ms)
            {"labels": {"pid": "43", "comm": "api", "stall": "park", "wait_reason": "chan send"},
             "log2_us": [1]},
            {"labels": {"pid": "42", "comm": "api", "stall": "stw", "wait_reason": ""},
             "log2_us": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4]},
        ]

    def runtime_counters(self, pid):
        return {"gc_cycles": 7 * pid, "netpoll_waiting": 3}

    def stats(self):
        return {"ringbuf_lost": 9, "events": 1234}


@pytest.fixture
def served(tmp_path):
    raw = {"lgf": {"spool_dir": str(tmp_path), "env": "prod"}, "http": {"listen": "127.0.0.1:0"},
           "alerts": {"services": {"gateway": "^api"}},
           # lgf's rule before roles (tests/test_roles.py has prod's own: tokens and approval)
           "environments": {"prod": {"loopback_changes": True, "approval": False, "silence_after_deploy": "2m"}}}
    config = cfg.validate(raw, {})
    stats = Stats()
    engine = AlertEngine(config, stats)
    srv = HttpServer(config, engine, stats, [HistogramSource()])
    srv.start()
    assert srv.running
    yield srv, engine, stats, config, tmp_path
    srv.stop()


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


def call(method, url, body=None, token=""):
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 method=method, headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def stall(dur_ms, cause="channel", goid=1, at_ms=0):
    return Event(pid=42, comm="api", goid=goid, cause=cause, wait_reason="chan receive", build_id="b",
                 start_ns=at_ms * MS, end_ns=(at_ms + dur_ms) * MS, duration_ns=dur_ms * MS,
                 stack_summary=["main.consume"], extra={"stall": "park"})


def test_debug_latency_shows_recent_windows_and_alerts(served):
    srv, engine, *_ = served
    engine.observe(stall(80))
    engine.observe(stall(120, goid=2, at_ms=100))
    engine.due(2**63 - 1)
    code, ctype, body = get(srv.url + "/debug/latency")
    assert code == 200 and ctype == "application/json"
    data = json.loads(body)
    assert data["windows"][0]["count"] == 2 and data["windows"][0]["worst_ns"] == 120 * MS
    (alert,) = data["alerts"]
    assert alert["kind"] == "alert" and alert["service"] == "gateway" and alert["count"] == 2
    assert alert["top_frame"] == "main.consume" and alert["severity"] == "warning"
    everything = json.loads(get(srv.url + "/debug/latency?limit=0")[2])  # 0 = no limit
    assert everything["windows"] and everything["alerts"]


def test_metrics_has_bpf_histograms_per_cause_and_service_and_the_stats(served):
    srv, engine, stats, *_ = served
    stats.inc("lgf_events_total", 3, cause="channel")
    stats.inc("lgf_alerts_silenced_total", cause="lock", reason="silence")
    stats.inc("lgf_sink_delivered_total", 5, sink="wecom")
    stats.inc("lgf_sink_failed_total", 2, sink="wecom")
    stats.set("lgf_sink_queue_depth", 17, sink="wecom")
    code, ctype, body = get(srv.url + "/metrics")
    assert code == 200 and ctype.startswith("text/plain")
    fams = {f.name: f for f in text_string_to_metric_families(body)}
    h = fams["lgf_stall_duration_seconds"]
    samples = {(s.name, s.labels.get("cause"), s.labels.get("le")): s.value for s in h.samples}
    # both channel histograms (two pids, chan receive + chan send) merged under cause=channel
    assert samples[("lgf_stall_duration_seconds_count", "channel", None)] == 11
    # bcc's bpf_log2l: slot i holds [2^(i-1), 2^i) us, so its bucket's le is 2^i us.
    assert samples[("lgf_stall_duration_seconds_bucket", "channel", "1e-06")] == 6
    assert samples[("lgf_stall_duration_seconds_bucket", "channel", "0.065536")] == 11
    assert samples[("lgf_stall_duration_seconds_bucket", "channel", "0.032768")] == 9
    assert samples[("lgf_stall_duration_seconds_count", "gc_stw", None)] == 4
    assert {s.labels["service"] for s in h.samples} == {"gateway"}

    def value(name, **labels):
        return next(s.value for f in fams.values() for s in f.samples
                    if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    assert value("lgf_events_total", cause="channel") == 3
    assert value("lgf_alerts_silenced_total", cause="lock") == 1
    assert value("lgf_sink_delivered_total", sink="wecom") == 5
    assert value("lgf_sink_failed_total", sink="wecom") == 2
    assert value("lgf_sink_queue_depth", sink="wecom") == 17
    assert value("lgf_ringbuf_lost_total", source="uprobe") == 9
    assert value("lgf_go_runtime", pid="43", counter="gc_cycles") == 7 * 43
    assert value("lgf_silences_active") == 0


def test_silence_api_adds_lists_and_expires_and_the_engine_obeys(served):
    srv, engine, stats, *_ = served
    code, s = call("POST", srv.url + "/api/silences", {"matchers": ["cause=channel"], "duration": "1h",
                                                        "comment": "known", "created_by": "oncall"})
    assert code == 201 and s["matchers"] == ["cause=channel"] and s["expires"]
    assert [x["id"] for x in call("GET", srv.url + "/api/silences")[1]["silences"]] == [s["id"]]
    engine.observe(stall(80))
    assert engine.due(2**63 - 1) == []
    assert stats.get("lgf_alerts_silenced_total", cause="channel", reason="silence") == 1
    assert call("DELETE", srv.url + f"/api/silences/{s['id']}")[0] == 200
    assert call("DELETE", srv.url + f"/api/silences/{s['id']}")[0] == 404
    engine.observe(stall(80))
    assert len(engine.due(2**63 - 1)) == 1


@pytest.mark.parametrize("body,error", [
    ({"matchers": ["cause"], "duration": "1h"}, "not a matcher"),
    ({"matchers": ["cause=lock"]}, "exactly one"),
    ({"matchers": "cause=lock", "duration": "1h"}, "matchers"),
    ({"matchers": ["cause=lock"], "duration": "soon"}, "not a duration"),
])
def test_a_bad_silence_is_refused_with_the_reason(served, body, error):
    code, out = call("POST", served[0].url + "/api/silences", body)
    assert code == 400 and error in out["error"]


def test_a_token_guards_changes_when_configured(tmp_path, monkeypatch):
    monkeypatch.setenv("LGF_TEST_TOKEN", "s3cret")
    config = cfg.validate({"lgf": {"spool_dir": str(tmp_path)},
                           "http": {"listen": "127.0.0.1:0", "token_env": "LGF_TEST_TOKEN"}}, {})
    stats = Stats()
    srv = HttpServer(config, AlertEngine(config, stats), stats, [])
    srv.start()
    try:
        body = {"matchers": ["cause=lock"], "duration": "1h"}
        assert call("POST", srv.url + "/api/silences", body)[0] == 401
        assert call("POST", srv.url + "/api/silences", body, token="wrong")[0] == 401
        assert call("POST", srv.url + "/api/silences", body, token="s3cret")[0] == 201
        assert get(srv.url + "/metrics")[0] == 200  # reading needs no token
    finally:
        srv.stop()


def test_a_taken_port_is_reported_and_lgf_carries_on(served):
    srv, engine, stats, config, tmp_path = served
    host, port = srv.address
    taken = cfg.validate({"lgf": {"spool_dir": str(tmp_path)}, "http": {"listen": f"{host}:{port}"}}, {})
    second = HttpServer(taken, engine, stats, [])
    second.start()
    assert not second.running and stats.get("lgf_http_errors_total", what="bind") == 1


def test_default_listen_is_loopback():
    config = cfg.validate({}, {})
    assert config.sections["http"].listen == "127.0.0.1:9464"


def test_lgf_silence_command_talks_to_the_running_lgf(served):
    srv, engine, *_ = served
    env = {**os.environ, "LGF_URL": srv.url}
    added = lgf("silence", "add", "cause=lock", "comm=~api-.*", "--for", "2h", "--comment", "rollout",
                env=env)
    assert added.returncode == 0, added.stderr
    sid = added.stdout.split()[0]
    listed = lgf("silence", "list", "--json", env=env)
    assert [s["id"] for s in json.loads(listed.stdout)["silences"]] == [sid]
    assert engine.silences.list()[0].matchers == ["cause=lock", "comm=~api-.*"]
    assert lgf("silence", "expire", sid, env=env).returncode == 0
    assert engine.silences.list() == []
    gone = lgf("silence", "expire", sid, env=env)
    assert gone.returncode == 1 and "no such active silence" in gone.stderr
    bad = lgf("silence", "add", "cause", "--for", "1h", env=env)
    assert bad.returncode == 1 and "not a matcher" in bad.stderr
    deploy = lgf("silence", "deploy", "gateway", env=env)
    assert deploy.returncode == 0 and "120 s" in deploy.stdout


def test_lgf_silence_says_when_lgf_is_not_running(tmp_path):
    cfgfile = tmp_path / "plugins.toml"
    cfgfile.write_text('[http]\nlisten = "127.0.0.1:1"\n')
    out = lgf("silence", "--config", str(cfgfile), "list")
    assert out.returncode == 1 and "cannot reach lgf at http://127.0.0.1:1" in out.stderr
