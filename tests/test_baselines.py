"""Drift-aware baselines, driven by two weeks of synthetic history through the engine's injected clocks.

One history is made once per module (``history``): for 14 days (twice the baselines' window, so
the first week slides out) two services stall steadily, ``api`` with 60 ms GC pauses (always over
prod's 50 ms threshold) and ``worker`` with 30 ms lock waits (always under it), both 3 a minute. Each test then opens a new engine on a copy of that
spool directory, which is also what a restart of lgf does.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import statistics
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lgf import config as cfg
from lgf.alerts import AlertEngine
from lgf.baselines import BaselineOptions, BaselineStore, median_mad
from lgf.event import Event, write_events
from lgf.http import HttpServer
from lgf.stats import Stats
from support.cli import lgf, write

pytestmark = pytest.mark.slow  # two weeks of history: about 30-50 s on a busy 2-core VM

MS = 1_000_000
S = 1000 * MS
DAY_MIN = 24 * 60
DAYS = 14
RATE = 3
"""Stalls a minute of each steady service."""
START = (time.time() // 60 - DAYS * DAY_MIN - 60) * 60  # history ends an hour ago: `lgf baseline` reads it as recent


class Time:
    """One timeline for the engine's monotonic clock (ns) and the baselines' wall clock (s)."""

    def __init__(self, wall: float = START):
        self.wall = wall

    def now(self) -> float:
        return self.wall

    def mono(self) -> int:
        return int((self.wall - START) * S) + 10 * S


def engine_for(spool, t: Time, env="prod", extra: dict | None = None):
    raw = {"lgf": {"env": env, "spool_dir": str(spool), "threshold": "50ms", "report_interval": "10s"},
           "baselines": {"refresh": "1h"}}
    for k, v in (extra or {}).items():
        raw.setdefault(k, {}).update(v)
    stats = Stats()
    return AlertEngine(cfg.validate(raw, {}), stats, clock=t.mono, wall_clock=t.now), stats


def stall(t: Time, service: str, dur_ms: float) -> Event:
    cause, frame = ("gc_stw", "") if service == "api" else ("lock", "main.(*Queue).Take")
    now = t.mono()
    return Event(pid=hash(service) % 30000 + 100, comm=service, exe=f"/srv/{service}", goid=0 if cause == "gc_stw" else 7,
                 cause=cause, wait_reason="" if cause == "gc_stw" else "sync.Mutex.Lock", build_id="b1",
                 start_ns=now - int(dur_ms * MS), end_ns=now, duration_ns=int(dur_ms * MS),
                 stack_summary=[frame] if frame else [], extra={"stall": "park"})


def run(eng, t: Time, minutes: int, rates: dict[str, int], rng: random.Random, durations=None) -> list[Event]:
    """``minutes`` of stalls: ``rates[service]`` a minute each, evenly spread; ``due`` every 10 s."""
    durations = durations or {"api": (55, 65), "worker": (25, 35)}
    sent = []
    for _ in range(minutes):
        for tick in range(6):  # 10 s each
            t.wall += 10
            for service, per_minute in rates.items():
                due_now = per_minute * (tick + 1) // 6 - per_minute * tick // 6
                for _ in range(due_now):
                    eng.observe(stall(t, service, rng.uniform(*durations[service])))
            sent += eng.due(t.mono())
    return sent


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Two weeks of steady stalls; returns (spool dir, time at its end, alerts sent, grades before closing)."""
    spool = tmp_path_factory.mktemp("history")
    t = Time()
    eng, stats = engine_for(spool, t)
    sent = run(eng, t, DAYS * DAY_MIN, {"api": RATE, "worker": RATE}, random.Random(7))
    grades = {svc: eng.drift.store.grade(svc, cause, 0.8) for svc, cause in (("api", "gc_stw"), ("worker", "lock"))}
    eng.close()
    return spool, t.wall, sent, grades, stats


@pytest.fixture
def restarted(history, tmp_path):
    """A new engine on a copy of the history: what a restart of lgf sees."""
    spool, wall, *_ = history
    copy = tmp_path / "spool"
    shutil.copytree(spool, copy)
    return copy, Time(wall)


def test_learning_alerts_use_the_fixed_thresholds_and_say_so(history):
    _, _, sent, _, stats = history
    assert sent, "the first day, api's 60 ms pauses are over the 50 ms threshold and must alert"
    first = sent[0].extra["baseline"]
    assert first["status"] in ("learning", "unknown") and "fixed thresholds" in first["reason"]
    learning = [a for a in sent if a.extra["baseline"]["status"] != "established"]
    assert learning == sent  # every alert sent in two weeks was sent while learning
    assert all(a.extra["service"] == "api" for a in sent)  # worker's stalls were under the threshold
    assert max(a.extra["baseline"].get("history_minutes", 0) for a in sent) < DAY_MIN
    assert stats.get("lgf_alerts_within_baseline_total", cause="gc_stw") > 0


def test_a_steady_service_raises_nothing_over_a_threshold_it_always_exceeds(restarted):
    spool, t = restarted
    eng, stats = engine_for(spool, t)
    sent = run(eng, t, 12 * 60, {"api": RATE, "worker": RATE}, random.Random(8))
    assert sent == []
    held = stats.get("lgf_alerts_within_baseline_total", cause="gc_stw")
    assert held >= 12 * 60 * 3 - 3  # every 20 s group of api's was judged and held
    last = next(a for a in eng.recent()["alerts"] if a["service"] == "api")
    assert last["held_by"] == "baseline" and last["baseline"]["status"] == "established"
    assert last["worst_ns"] >= 55 * MS and abs(last["baseline"]["z"]) < 2


def test_a_tripled_stall_rate_raises_an_alert_carrying_its_z_score(restarted):
    spool, t = restarted
    eng, stats = engine_for(spool, t)
    assert run(eng, t, 30, {"api": RATE, "worker": RATE}, random.Random(9)) == []
    sent = run(eng, t, 5, {"api": RATE, "worker": 3 * RATE}, random.Random(10))  # worker: 3x, each stall still 25-35 ms
    assert sent and {a.extra["service"] for a in sent} == {"worker"}
    alert = sent[0]
    b = alert.extra["baseline"]
    assert b["status"] == "established" and b["z"] >= 2 and b["k"] == 2
    assert alert.extra["worst_ns"] < 50 * MS  # under the fixed threshold, alerted by drift
    assert alert.severity == "warning"  # prod's drift_severity
    assert b["metrics"]["rate"]["mu"] == RATE and b["metrics"]["rate"]["now"] >= RATE + 2 * b["metrics"]["rate"]["sigma"]
    assert max(a.extra["baseline"]["metrics"]["rate"]["now"] for a in sent) >= 3 * RATE - 1  # once settled
    assert min(a.extra["baseline"]["z"] for a in sent) >= 2
    assert "z = " in alert.extra["summary"]
    assert json.loads(json.dumps(alert.to_dict()))["baseline"]["z"] == b["z"]  # in the event's JSON form


def test_a_restart_keeps_the_baseline(history, restarted):
    _, _, _, before, _ = history
    spool, t = restarted
    eng, _ = engine_for(spool, t)
    for (svc, cause) in (("api", "gc_stw"), ("worker", "lock")):
        after = eng.drift.store.grade(svc, cause, 0.8)
        assert after["status"] == "established"
        assert 7 * DAY_MIN - 60 <= after["history_minutes"] <= 7 * DAY_MIN  # the window slid: one week of two
        assert after["history_minutes"] >= before[svc]["history_minutes"]
        for metric in ("rate", "p99", "share"):
            assert after["metrics"][metric]["mu"] == pytest.approx(before[svc]["metrics"][metric]["mu"], rel=0.02)
            assert after["metrics"][metric]["sigma"] == pytest.approx(before[svc]["metrics"][metric]["sigma"], rel=0.05)


def test_the_first_week_slid_out_of_the_store(history):
    spool, wall, *_ = history
    with sqlite3.connect(spool / "baselines.db") as db:
        (oldest,) = db.execute("SELECT min(minute) FROM minutes").fetchone()
        (covered,) = db.execute("SELECT count(*) FROM coverage").fetchone()
    assert oldest >= wall // 60 - 7 * DAY_MIN - 60  # pruned hourly
    assert covered <= 7 * DAY_MIN + 60


def test_a_new_service_falls_back_to_the_fixed_thresholds(restarted):
    spool, t = restarted
    eng, _ = engine_for(spool, t)
    eng.observe(Event(pid=9, comm="billing", exe="/srv/billing", goid=3, cause="channel", wait_reason="chan receive",
                      start_ns=t.mono(), end_ns=t.mono() + 80 * MS, duration_ns=80 * MS))
    eng.observe(Event(pid=9, comm="billing", exe="/srv/billing", goid=3, cause="channel", wait_reason="chan receive",
                      start_ns=t.mono(), end_ns=t.mono() + 20 * MS, duration_ns=20 * MS))
    (alert,) = eng.due(2**63 - 1)
    b = alert.extra["baseline"]
    assert b["status"] == "learning" and b["reason"].endswith("fixed thresholds")
    assert alert.extra["count"] == 1  # the 20 ms stall is under the threshold and the series is new


def test_sigma_is_scaled_per_environment(restarted):
    spool, t = restarted
    grades = {}
    for env in ("dev", "prod"):
        eng, _ = engine_for(spool, Time(t.wall), env=env)
        grades[env] = eng.drift.store.grade("worker", "lock", eng.policy.sigma_scale)
    for metric in ("rate", "p99", "share"):
        dev, prod = grades["dev"]["metrics"][metric], grades["prod"]["metrics"][metric]
        assert dev["sigma"] / prod["sigma"] == pytest.approx(1.5 / 0.8)


def test_median_and_mad_do_not_learn_an_incident_that_mean_and_stdev_would(tmp_path):
    store = BaselineStore(tmp_path, BaselineOptions(min_history=60 * 60 * S))
    t = START
    for minute in range(3 * DAY_MIN):
        per_minute = 300 if DAY_MIN <= minute < DAY_MIN + 60 else 10  # one bad hour in three days
        for i in range(per_minute):
            store.observe("api", "lock", 40 * MS, now_s=t + i * 60 / per_minute)
        t += 60
        store.tick(t)
    b = store.baseline("api", "lock", now_s=t)
    rates = [300.0] * 60 + [10.0] * (3 * DAY_MIN - 60)
    assert b["rate"]["mu"] == 10 and b["rate"]["sigma"] == pytest.approx(10 ** 0.5)  # the floor: MAD is 0
    assert statistics.mean(rates) > 14 and statistics.stdev(rates) > 30  # what mean/stdev would have learnt
    assert median_mad([1, 2, 3, 4, 1000]) == (3, 1.4826)


def test_the_store_is_bounded_by_window_and_series(tmp_path):
    store = BaselineStore(tmp_path, BaselineOptions(window=2 * 3600 * S, min_history=3600 * S, max_series=2))
    t = START
    for minute in range(5 * 60):
        for svc in ("a", "b") if minute < 4 * 60 else ("a", "b", "c"):
            store.observe(svc, "lock", 60 * MS, now_s=t)
        t += 60
        store.tick(t)
    store.close()
    db = sqlite3.connect(tmp_path / "baselines.db")
    (oldest,) = db.execute("SELECT min(minute) FROM minutes").fetchone()
    assert oldest >= int(t // 60) - 3 * 60  # pruned to the 2 h window (hourly)
    assert {r[0] for r in db.execute("SELECT service FROM series")} <= {"a", "b", "c"}
    assert db.execute("SELECT count(*) FROM series").fetchone()[0] == 2


def test_metrics_export_the_baseline_and_its_z_score(restarted):
    spool, t = restarted
    raw = {"lgf": {"env": "prod", "spool_dir": str(spool)}, "http": {"listen": "127.0.0.1:0"},
           "baselines": {"refresh": "1h"}}
    config = cfg.validate(raw, {})
    stats = Stats()
    eng = AlertEngine(config, stats, clock=t.mono, wall_clock=t.now)
    run(eng, t, 2, {"worker": 3 * RATE}, random.Random(11))
    srv = HttpServer(config, eng, stats, [])
    srv.start()
    try:
        body = urllib.request.urlopen(srv.url + "/metrics", timeout=10).read().decode()
        api = json.loads(urllib.request.urlopen(srv.url + "/api/baselines", timeout=10).read())
    finally:
        srv.stop()
    samples = {(s.name, s.labels.get("service"), s.labels.get("metric")): s.value
               for f in text_string_to_metric_families(body) for s in f.samples}
    assert samples[("lgf_baseline_mu", "worker", "rate")] == RATE
    assert samples[("lgf_baseline_zscore", "worker", "rate")] >= 2
    assert samples[("lgf_baseline_established", "worker", None)] == 1
    assert 0.025 <= samples[("lgf_baseline_mu", "worker", "p99")] <= 0.035  # seconds: stalls were 25-35 ms
    (worker,) = [s for s in api["series"] if s["service"] == "worker"]
    assert worker["z"] >= 2


def test_lgf_baseline_prints_them(history):
    spool = history[0]
    text = lgf("baseline", "worker", "--spool-dir", str(spool))
    assert text.returncode == 0, text.stderr
    assert "worker" in text.stdout and "established" in text.stdout and "3.0/min" in text.stdout
    assert "api" not in text.stdout.split("\n", 2)[2]  # only the service asked for
    js = lgf("baseline", "--spool-dir", str(spool), "--json", "--env", "dev")
    data = json.loads(js.stdout)
    assert data["sigma_scale"] == 1.5 and {s["service"] for s in data["series"]} == {"api", "worker"}
    missing = lgf("baseline", "--spool-dir", str(spool / "nowhere"))
    assert missing.returncode == 1 and "no baselines" in missing.stderr


def test_an_unusable_spool_dir_leaves_the_fixed_thresholds_working(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the spool directory should be")
    t = Time()
    eng, stats = engine_for(blocker, t)
    assert eng.drift.store is None and stats.get("lgf_baseline_errors_total", what="open") == 1
    eng.observe(stall(t, "api", 60))
    (alert,) = eng.due(2**63 - 1)
    assert "baseline" not in alert.extra and alert.extra["count"] == 1


def test_lgf_replay_grades_by_the_baselines_in_the_recordings_time_and_teaches_them_nothing(restarted, tmp_path):
    spool, t = restarted
    rng = random.Random(12)
    events = []
    for second in range(0, 5 * 60, 3):  # five minutes of worker at 20 a minute, recorded after the week
        ev = stall(t, "worker", rng.uniform(25, 35))
        when = t.wall + second
        ev.ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{int(when % 1 * 1e9):09d}Z"
        events.append(ev)
    write_events(tmp_path / "incident.msgpack", events)
    config = write(tmp_path / "plugins.toml", f"""
[lgf]
spool_dir = "{spool}"
threshold = "50ms"
[[classifiers]]
use = "waitreason"
[[sinks]]
use = "file"
path = "{tmp_path / 'out.jsonl'}"
receive = "alerts"
""")

    def rows():
        with sqlite3.connect(spool / "baselines.db") as db:
            return db.execute("SELECT count(*), max(minute) FROM minutes").fetchone(), \
                db.execute("SELECT count(*) FROM coverage").fetchone()

    before = rows()
    out = lgf("replay", str(tmp_path / "incident.msgpack"), "--config", str(config))
    assert out.returncode == 0, out.stderr
    (alert,) = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert alert["service"] == "worker" and alert["count"] == 100
    assert alert["baseline"]["status"] == "established" and alert["baseline"]["z"] >= 2
    assert alert["baseline"]["metrics"]["rate"]["now"] == pytest.approx(20, abs=1)  # the recording's last minute
    assert rows() == before  # nothing learnt from a replay


def test_a_replay_counts_the_series_it_can_grade_and_not_those_it_cannot(tmp_path):
    """In a replay nothing is written, so a series the store has no row for stays ungraded
    whatever it counts: its stalls are not counted; a known series' are, each one."""
    t0 = START + 3600
    live = BaselineStore(tmp_path, clock=lambda: t0)
    live.observe("known", "lock", 60 * MS, now_s=t0)
    live.close()  # the series has its row now
    store = BaselineStore(tmp_path, clock=lambda: t0)
    store.persist = False  # what lgf replay does (Drift.replay_mode)
    for i in range(5):
        assert store.observe_established("new", "lock", 60 * MS, now_s=t0 + 60 + i) is False
        store.observe_established("known", "lock", 60 * MS, now_s=t0 + 60 + i)
    assert store.grade("new", "lock", now_s=t0 + 65)["status"] == "unknown"
    assert store._series[("known", "lock")].cur.count == 5
    assert store._series[("new", "lock")].cur.count == 1  # the stall that opened it; none since
    store.close()


def test_a_replay_keeps_the_time_of_its_last_readable_stall_whichever_series_it_was(tmp_path):
    from lgf.drift import _unix

    t = Time()
    live, _ = engine_for(tmp_path, t)
    live.observe(stall(t, "worker", 30))
    live.close()  # "worker"/"lock" has its row; "other" has none
    eng, _ = engine_for(tmp_path, t)
    eng.drift.replay_mode()

    def at(service, second, ts=None):
        ev = stall(t, service, 30)
        ev.ts = ts if ts is not None else time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t.wall + second)) + ".5Z"
        eng.drift.observe(service, ev)
        return ev.ts

    at("worker", 1)
    for second in range(2, 40):
        last = at("other", second)  # a series no baseline grades: its time is kept, not counted
    at("other", 40, ts="")          # no time: the one before stays
    eng.drift._read_stamps()
    assert eng.drift.event_time == _unix(last)
    assert eng.drift.store._series[("other", "lock")].cur.count == 1
