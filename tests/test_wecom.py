"""The WeCom sink over real HTTP against the fake robot, behind the real durable queue.

Sink and fake share one ManualClock: every wait (backoff, the rate window) advances it at once,
so minutes of outage and rate limiting run in well under a second of real time.
"""

from __future__ import annotations

import logging
import sqlite3
import uuid

import pytest

from lgf import Event, RunContext
from lgf.clock import ManualClock
from lgf.delivery import Backoff, Delivery
from lgf.errors import ConfigError
from lgf.options import Duration, build
from lgf.sinks.wecom import WeComOptions, WeComSink
from lgf.stats import Stats
from support.fakewecom import FakeWeCom
from support.wait import wait_until
from support.wecom import deliver_all, ids_in, max_in_any_minute


class Rig:
    """A fake robot, a WeCom sink pointed at it and the sink's durable queue, on one clock."""

    def __init__(self, tmp_path, monkeypatch, key_known: bool = True, fake_kw: dict | None = None,
                 **options):
        self.key = "k-" + uuid.uuid4().hex
        self.clock = ManualClock(10_000.0)
        self.fake = FakeWeCom(keys=(self.key,) if key_known else ("someone-else",), clock=self.clock,
                              **(fake_kw or {})).start()
        monkeypatch.setenv("LGF_WECOM_KEY", self.key)
        self.stats = Stats()
        self.tmp_path = tmp_path / uuid.uuid4().hex[:8]  # two rigs in one test get two spools
        self.sink = WeComSink(WeComOptions(url=self.fake.url, **options),
                              RunContext(config=None, stats=self.stats, name="ops"), clock=self.clock)
        self.queue = self.open_queue(self.sink)

    def open_queue(self, sink) -> Delivery:
        return Delivery(sink, "ops", self.tmp_path, self.stats, clock=self.clock,
                        backoff=Backoff(base=1.0, cap=300.0))

    def close(self):
        self.queue.stop(5)
        self.fake.stop()


@pytest.fixture
def rig(tmp_path, monkeypatch):
    made = []

    def make(**kw) -> Rig:
        made.append(Rig(tmp_path, monkeypatch, **kw))
        return made[-1]

    yield make
    for r in made:
        r.close()


def alert(i: int, severity: str = "warning", **kw) -> Event:
    return Event(kind="alert", pid=3000 + i % 5, comm="api", cause="lock", duration_ns=(i + 1) * 10**6,
                 severity=severity, tags={"service": "checkout"}, extra={"count": 2, "worst_ns": 10**8},
                 **kw)


def test_a_storm_of_2000_alerts_gets_at_most_20_messages_a_minute_and_every_id_through(rig):
    r = rig()
    sent = [alert(i, severity=("critical", "warning", "info")[i % 3]) for i in range(2000)]
    for ev in sent:  # all within the same (virtual) instant: the clock moves only when the worker waits
        r.queue.put(ev)
    r.queue.start()
    wait_until(lambda: r.queue.depth() == 0)
    got = r.fake.snapshot()
    assert max_in_any_minute([m.t for m in got]) <= 20
    assert {m.errcode for m in got} == {0}  # the sink never even earned a 45009
    assert set(ids_in(got)) >= {e.id for e in sent}
    assert r.stats.get("lgf_wecom_messages_total", sink="ops", kind="digest") >= 1
    assert r.stats.get("lgf_sink_delivered_total", sink="ops") == 2000
    assert len(got) < 200  # merged into digests, not one message per alert


def test_alerts_trickling_in_while_sending_still_get_at_most_20_messages_a_minute(rig):
    r = rig()
    r.queue.start()
    sent = [alert(i) for i in range(600)]
    for ev in sent:  # each wait of the worker jumps the clock, so these spread over many minutes
        r.queue.put(ev)
    wait_until(lambda: r.queue.depth() == 0)
    got = r.fake.snapshot()
    assert max_in_any_minute([m.t for m in got]) <= 20
    assert {m.errcode for m in got} == {0}
    assert set(ids_in(got)) >= {e.id for e in sent}


@pytest.mark.parametrize("msgtype", ["markdown", "text", "markdown_v2"])
def test_long_stacks_and_chinese_text_arrive_within_the_byte_limits_as_valid_utf8(rig, msgtype):
    r = rig(msgtype=msgtype, stack_frames=120)
    stack = [{"func": f"订单服务/库存.(*仓库).扣减库存第{i}层", "file": f"/代码/仓库_{i}.go", "line": i}
             for i in range(300)]
    sent = [Event(kind="alert", severity="critical", comm="订单服务", cause="lock", duration_ns=5 * 10**8,
                  stack=stack, tags={"service": "订单服务", "负责人": "张三" * 500}) for _ in range(2)]
    deliver_all(r.queue, sent)
    got = r.fake.snapshot()
    assert {m.errcode for m in got} == {0}
    assert not any(m.broken_utf8 for m in got)
    assert all(m.content_bytes <= {"text": 2048}.get(msgtype, 4096) for m in got)
    assert max(m.content_bytes for m in got) > 1000  # the limit was actually approached
    assert r.stats.get("lgf_wecom_messages_total", sink="ops", kind="part") == 2  # split, not digested
    assert set(ids_in(got)) >= {e.id for e in sent}


def test_busy_5xx_and_a_stalled_answer_are_retried_until_delivered(rig):
    r = rig(timeout=Duration(300_000_000), fake_kw={"stall_seconds": 1.0})
    for kind in ("busy", "http500", "http502", "stall"):
        r.fake.fail_next(kind)
    sent = [alert(i) for i in range(3)]
    deliver_all(r.queue, sent)
    got = r.fake.snapshot()
    assert [m.errcode for m in got[:3]] == [-1, None, None]
    assert set(ids_in(r.fake.accepted())) >= {e.id for e in sent}
    assert r.stats.get("lgf_wecom_errcode_total", sink="ops", errcode=-1) == 1
    assert r.stats.get("lgf_wecom_http_errors_total", sink="ops", status=500) == 1
    assert r.stats.get("lgf_sink_retried_total", sink="ops") >= 4
    assert r.stats.get("lgf_sink_failed_total", sink="ops") == 0


def test_minutes_of_outage_are_ridden_out_with_capped_backoff(rig):
    r = rig()
    r.fake.stop()  # connection refused
    sent = [alert(i) for i in range(5)]
    for ev in sent:
        r.queue.put(ev)
    start = r.clock.now()
    r.queue.start()
    wait_until(lambda: r.stats.get("lgf_sink_retried_total", sink="ops") >= 5 * 12)
    assert r.clock.now() - start > 10 * 60  # at least ten (virtual) minutes down
    r.fake.start()
    wait_until(lambda: r.queue.depth() == 0)
    assert set(ids_in(r.fake.accepted())) >= {e.id for e in sent}
    assert r.stats.get("lgf_sink_failed_total", sink="ops") == 0


def test_a_wrong_key_keeps_every_alert_on_disk_says_so_and_does_not_hammer(rig, caplog):
    r = rig(key_known=False)
    sent = [alert(i) for i in range(50)]
    for ev in sent:
        r.queue.put(ev)
    with caplog.at_level(logging.ERROR):
        r.queue.start()
        wait_until(lambda: r.queue.failed_kept() == 50)
    assert len(r.fake.snapshot()) == 1  # one 93000, then nothing more
    assert r.stats.get("lgf_wecom_errcode_total", sink="ops", errcode=93000) == 1
    assert "93000" in caplog.text and "invalid webhook key" in caplog.text
    assert "lgf spool retry ops" in caplog.text
    assert r.key not in caplog.text
    db = sqlite3.connect(r.queue.spool.path)
    errors = [row[0] for row in db.execute("SELECT last_error FROM items")]
    db.close()
    assert len(errors) == 50 and all("93000" in e and r.key not in e for e in errors)

    # The operator fixes the key and requeues: everything kept arrives.
    r.queue.stop(5)
    r.fake.keys = (r.key,)
    fixed = WeComSink(WeComOptions(url=r.fake.url), RunContext(config=None, stats=r.stats, name="ops"),
                      clock=r.clock)
    r.queue = r.open_queue(fixed)
    r.queue.start()
    assert r.queue.requeue_failed() == 50
    wait_until(lambda: r.queue.depth() == 0 and r.queue.failed_kept() == 0)
    assert set(ids_in(r.fake.accepted())) >= {e.id for e in sent}


def test_a_message_type_the_endpoint_does_not_know_is_kept_as_failed(rig, caplog):
    r = rig(msgtype="markdown_v2", fake_kw={"limits": {"text": 2048, "markdown": 4096}})
    r.queue.put(alert(1))
    with caplog.at_level(logging.ERROR):
        r.queue.start()
        wait_until(lambda: r.queue.failed_kept() == 1)
    assert [m.errcode for m in r.fake.snapshot()] == [40008]
    assert "40008" in caplog.text


def test_40058_halves_the_message_size_and_resends_everything(rig, caplog):
    r = rig(stack_frames=40, fake_kw={"limits": {"text": 2048, "markdown": 900, "markdown_v2": 4096}})
    stack = [{"func": f"main.handler{i}", "file": "/src/main.go", "line": i} for i in range(40)]
    sent = [alert(i, stack=stack) for i in range(4)]
    for ev in sent:
        r.queue.put(ev)
    with caplog.at_level(logging.WARNING):
        r.queue.start()
        wait_until(lambda: r.queue.depth() == 0)
    got = r.fake.snapshot()
    assert 40058 in {m.errcode for m in got}
    assert all(m.content_bytes <= 900 for m in r.fake.accepted())
    assert set(ids_in(r.fake.accepted())) >= {e.id for e in sent}
    assert r.queue.failed_kept() == 0
    assert "40058" in caplog.text


def test_a_45009_from_another_sender_on_the_key_waits_out_the_minute(rig):
    r = rig()
    r.fake.fail_next("rate")
    r.queue.put(alert(1))
    r.queue.start()
    wait_until(lambda: r.queue.depth() == 0)
    refused, delivered = r.fake.snapshot()
    assert (refused.errcode, delivered.errcode) == (45009, 0)
    assert delivered.t - refused.t >= 60.0
    assert r.stats.get("lgf_sink_failed_total", sink="ops") == 0


def test_mentions_follow_the_severity_and_the_message_type(rig):
    md = rig(mentioned_list={"critical": ["zhangsan", "@all"], "warning": ["lisi"]})
    md.queue.put(alert(1, severity="critical"))
    md.queue.put(alert(2, severity="info"))
    md.queue.start()
    wait_until(lambda: md.queue.depth() == 0)
    crit, info = md.fake.snapshot()
    assert crit.content.endswith("<@zhangsan>") and "<@@all>" not in crit.content
    assert "<@" not in info.content

    text = rig(msgtype="text", mentioned_list={"critical": ["@all"]},
               mentioned_mobile_list={"critical": ["13800000000"]})
    text.queue.put(alert(3, severity="critical"))
    text.queue.start()
    wait_until(lambda: text.queue.depth() == 0)
    (msg,) = text.fake.snapshot()
    assert msg.body["text"]["mentioned_list"] == ["@all"]
    assert msg.body["text"]["mentioned_mobile_list"] == ["13800000000"]


def test_a_missing_key_variable_is_a_clear_error_naming_the_variable(monkeypatch):
    monkeypatch.delenv("LGF_TEST_ROBOT", raising=False)
    with pytest.raises(ConfigError, match="LGF_TEST_ROBOT is not set") as err:
        WeComSink(WeComOptions(key_env="LGF_TEST_ROBOT"), RunContext(config=None, stats=Stats(), name="w"))
    assert err.value.path == "w.key_env"


def test_the_key_is_never_shown_not_in_repr_nor_in_a_config_error(monkeypatch):
    monkeypatch.setenv("LGF_WECOM_KEY", "s3cr3t-robot-key")
    sink = WeComSink(WeComOptions(), RunContext(config=None, stats=Stats(), name="w"))
    assert "s3cr3t" not in repr(sink) and "key=***" in sink.shown_url
    errors = []
    assert build(WeComOptions, {"url": "https://relay.example/send?key=s3cr3t-robot-key"},
                 "sinks[0]", errors) is None
    assert errors and "key_env" in str(errors[0]) and "s3cr3t" not in str(errors[0])


def test_a_refused_connection_error_does_not_carry_the_key(rig):
    r = rig()
    r.fake.stop()
    with pytest.raises(Exception) as err:
        r.sink.send(alert(1))
    assert r.key not in str(err.value) and "key=***" in str(err.value)
