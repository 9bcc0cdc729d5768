"""Alert policy: grouping, counts, severities per environment, silences and the deploy window."""

from __future__ import annotations

import pytest

from lgf import config as cfg
from lgf.alerts import AlertEngine
from lgf.errors import ConfigErrors
from lgf.event import Event
from lgf.stats import Stats

MS = 1_000_000
S = 1000 * MS


class Clock:
    """The engine's monotonic clock, moved by the test (report intervals are engine time)."""

    def __init__(self):
        self.now = 10 * S

    def __call__(self):
        return self.now


def engine_for(tmp_path, toml: dict | None = None, env="prod"):
    raw = {"lgf": {"env": env, "spool_dir": str(tmp_path), "threshold": "50ms", "report_interval": "10s"}}
    for k, v in (toml or {}).items():
        raw.setdefault(k, {}).update(v)
    clock, stats = Clock(), Stats()
    return AlertEngine(cfg.validate(raw, {}), stats, clock=clock), clock, stats


def stall(dur_ms, pid=100, comm="api", cause="lock", frame="main.(*Store).Get", goid=1, build_id="b1",
          wait_reason="sync.Mutex.Lock", at_ms=0):
    return Event(pid=pid, comm=comm, exe=f"/srv/{comm}", goid=goid, cause=cause, wait_reason=wait_reason,
                 build_id=build_id, start_ns=at_ms * MS, end_ns=(at_ms + dur_ms) * MS,
                 duration_ns=dur_ms * MS, stack_summary=[frame] if frame else [],
                 stack=[{"func": "runtime.gopark", "file": "proc.go", "line": 1, "pc": 1, "inlined": False},
                        {"func": frame, "file": "store.go", "line": 42, "pc": 2, "inlined": False}],
                 extra={"stall": "park"})


def test_stalls_group_by_service_cause_and_top_frame_into_one_alert(tmp_path):
    eng, clock, _ = engine_for(tmp_path)
    for i, d in enumerate((60, 250, 90)):
        eng.observe(stall(d, goid=i + 1, at_ms=i * 1000))
    eng.observe(stall(70, cause="channel", wait_reason="chan receive"))
    eng.observe(stall(70, frame="main.handler"))
    assert eng.due(clock.now + 9 * S) == []  # the report interval has not closed
    alerts = eng.due(clock.now + 10 * S)
    assert len(alerts) == 3
    lock = next(a for a in alerts if a.cause == "lock" and a.extra["top_frame"] == "main.(*Store).Get")
    assert lock.kind == "alert" and lock.extra["count"] == 3
    assert lock.extra["worst_ns"] == 250 * MS and lock.extra["total_ns"] == 400 * MS
    assert lock.extra["goroutines"] == 3 and lock.extra["pids"] == [100]
    assert lock.severity == "warning"  # prod: warning at 100 ms, critical at 1 s
    assert lock.stack[1]["func"] == "main.(*Store).Get" and lock.extra["example_event_id"]
    assert len({a.id for a in alerts}) == 3 and lock.ts.endswith("Z")
    assert {a.trace_id for a in alerts} == {""}  # no stall knew its trace: none is made up
    assert eng.due(clock.now + 100 * S) == []  # sent once


def test_an_alerts_trace_is_its_worst_stalls_never_another_members(tmp_path):
    # One kind of slow request (GET /order): a traced request and an untraced one that waited
    # longer (behind the traced one's lock). The alert shows the untraced one's stack and
    # duration, so it names no trace rather than the traced request's, which did not wait that long.
    eng, clock, _ = engine_for(tmp_path)
    traced, untraced = stall(250, goid=1), stall(260, goid=2)
    traced.trace_id, traced.span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    for ev in (traced, untraced):
        ev.scope, ev.http_method, ev.http_path = "request", "GET", "/order"
        eng.observe(ev)
    (alert,) = eng.due(clock.now + 10 * S)
    assert alert.extra["count"] == 2 and alert.extra["example_event_id"] == untraced.id
    assert (alert.trace_id, alert.span_id) == ("", "")
    traced.duration_ns = traced.end_ns = 270 * MS  # the traced one is the worst: its trace is the alert's
    for ev in (traced, untraced):
        eng.observe(ev)
    (alert,) = eng.due(clock.now + 10 * S)
    assert alert.extra["example_event_id"] == traced.id
    assert (alert.trace_id, alert.span_id) == (traced.trace_id, traced.span_id)


def test_a_stall_under_the_environment_threshold_makes_no_alert_but_is_labelled(tmp_path):
    eng, clock, stats = engine_for(tmp_path, env="dev")  # dev: alerts from 200 ms
    ev = stall(150)
    eng.observe(ev)
    assert ev.env == "dev" and ev.severity == "info" and ev.topology["host"]
    assert eng.due(2**63 - 1) == []
    assert stats.get("lgf_stalls_below_alert_threshold_total", env="dev") == 1


@pytest.mark.parametrize("env,worst_ms,severity", [
    ("prod", 60, "info"), ("prod", 100, "warning"), ("prod", 1000, "critical"),
    ("dev", 900, "info"), ("dev", 1000, "warning"), ("test", 600, "warning"),
])
def test_the_environment_picks_the_severity(tmp_path, env, worst_ms, severity):
    eng, _, _ = engine_for(tmp_path, env=env)
    eng.observe(stall(worst_ms))
    assert [a.severity for a in eng.due(2**63 - 1)] == [severity]


def test_environment_tables_override_defaults_and_bad_ones_are_refused(tmp_path):
    eng, _, _ = engine_for(tmp_path, {"environments": {"prod": {"critical": "200ms", "min_count": 2}}})
    eng.observe(stall(300))
    assert eng.due(2**63 - 1) == []  # one stall < min_count 2
    eng.observe(stall(300))
    eng.observe(stall(300))
    assert [a.severity for a in eng.due(2**63 - 1)] == ["critical"]
    with pytest.raises(ConfigErrors, match=r"environments.prod: critical must be at least warning"):
        engine_for(tmp_path, {"environments": {"prod": {"critical": "10ms"}}})
    with pytest.raises(ConfigErrors, match=r"environments.dev.warnng: unknown key \(did you mean .warning.\?\)"):
        engine_for(tmp_path, {"environments": {"dev": {"warnng": "1s"}}})


def test_tags_topology_and_services_come_from_the_config(tmp_path):
    eng, _, _ = engine_for(tmp_path, {"alerts": {"tags": {"team": "payments"},
                                                  "topology": {"region": "cn-sh"},
                                                  "services": {"gateway": "^api"}}})
    eng.observe(stall(80, pid=1, comm="api"))
    eng.observe(stall(80, pid=2, comm="api2"))
    (alert,) = eng.due(2**63 - 1)
    assert alert.extra["service"] == "gateway" and alert.extra["pids"] == [1, 2]
    assert alert.tags == {"team": "payments"}
    assert alert.topology["region"] == "cn-sh" and alert.topology["host"]


def test_a_silenced_alert_is_counted_and_remembered_not_sent(tmp_path):
    eng, _, stats = engine_for(tmp_path, {"silences": {"rules": [{"matchers": ["cause=lock", "service=api"]}]}})
    eng.observe(stall(80))
    eng.observe(stall(80, cause="channel", wait_reason="chan receive"))
    sent = eng.due(2**63 - 1)
    assert [a.cause for a in sent] == ["channel"]
    assert stats.get("lgf_alerts_silenced_total", cause="lock", reason="silence") == 1
    recent = eng.recent()["alerts"]
    assert [(a["cause"], a.get("silenced_by")) for a in recent] == [("channel", None), ("lock", "config-0")]


def test_a_runtime_silence_applies_to_the_next_alerts(tmp_path):
    eng, _, stats = engine_for(tmp_path)
    eng.silences.add(["severity=critical"], duration="1h")
    eng.observe(stall(2000))
    eng.observe(stall(80, frame="main.other"))
    assert [a.severity for a in eng.due(2**63 - 1)] == ["info"]
    assert stats.total("lgf_alerts_silenced_total") == 1


def test_a_new_build_of_a_service_opens_its_deploy_silence(tmp_path):
    eng, clock, stats = engine_for(tmp_path, {"environments": {"prod": {"silence_after_deploy": "2m"}}})
    eng.observe(stall(80, build_id="v1"))
    assert len(eng.due(clock.now + 10 * S)) == 1
    clock.now += 20 * S
    eng.observe(stall(80, build_id="v2"))  # a new binary: deployed now
    assert eng.due(clock.now + 10 * S) == []
    assert stats.get("lgf_alerts_silenced_total", cause="lock", reason="deploy") == 1
    clock.now += 121 * S  # the deploy window is over
    eng.observe(stall(80, build_id="v2"))
    assert len(eng.due(clock.now + 10 * S)) == 1


def test_mark_deploy_silences_only_that_service(tmp_path):
    eng, clock, _ = engine_for(tmp_path, {"environments": {"prod": {"silence_after_deploy": "2m"}}})
    eng.mark_deploy("api")
    eng.observe(stall(80, comm="api"))
    eng.observe(stall(80, comm="billing", pid=7))
    assert [a.extra["service"] for a in eng.due(2**63 - 1)] == ["billing"]


def test_repeats_within_the_repeat_interval_are_folded_into_the_next_alert(tmp_path):
    eng, clock, stats = engine_for(tmp_path, {"alerts": {"repeat_interval": "30s"}})
    sent = []
    for _ in range(5):  # one group per 10 s interval, for 50 s
        eng.observe(stall(80))
        clock.now += 10 * S
        sent += eng.due(clock.now)
    assert len(sent) == 2  # at 0 s and at 30 s
    assert sent[1].extra["suppressed_repeats"] == 2
    assert stats.get("lgf_alerts_repeats_suppressed_total") == 3


def test_groups_are_bounded(tmp_path):
    eng, _, stats = engine_for(tmp_path, {"alerts": {"max_groups": 10}})
    for i in range(50):
        eng.observe(stall(80, frame=f"main.f{i}"))
    alerts = eng.due(2**63 - 1)
    assert len(alerts) == 11 and stats.get("lgf_alert_groups_overflow_total") == 40
    assert sum(a.extra["count"] for a in alerts) == 50


def test_recent_has_windows_and_alerts_for_debug_latency(tmp_path):
    eng, _, _ = engine_for(tmp_path)
    eng.observe(stall(80, at_ms=0))
    eng.observe(stall(90, at_ms=100, goid=2))
    eng.due(2**63 - 1)
    r = eng.recent()
    assert r["env"] == "prod" and r["threshold_ns"] == 50 * MS
    assert r["windows"][0]["count"] == 2 and r["alerts"][0]["count"] == 2


def test_unknown_group_by_field_is_a_config_error(tmp_path):
    with pytest.raises(ConfigErrors, match="group_by"):
        engine_for(tmp_path, {"alerts": {"group_by": ["service", "colour"]}})


def test_a_service_is_named_from_declared_values_that_cannot_key_a_cache_as_from_text(tmp_path):
    """The service cache keys on the declared names as they come; one that is not hashable (a
    list in a hand-made recording) is named as its text, uncached, as the others are."""
    eng, _, _ = engine_for(tmp_path)
    listed, named = stall(80), stall(80, goid=2)
    listed.extra["otel_service"] = ["checkout"]
    named.extra["otel_service"] = "checkout"
    assert eng.service_of(listed) == "['checkout']" and eng.service_of(named) == "checkout"
    assert eng.service_of(stall(80, goid=3)) == eng.service_of(stall(80, goid=4)) == "api"
