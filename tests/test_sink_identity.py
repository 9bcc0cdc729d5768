"""A sink's durable queue belongs to the sink by name, not by the position of its table.

Through the real ``lgf replay`` command and the fake WeCom robot: two durable sinks queue while
the robot is down; their tables are reordered (a new one could as well be added above); each
sink then sends only what it queued itself. A queue written for a sink of another ``use`` is
refused with its key path and kept; a queue an older lgf named by position is refused until
``lgf spool adopt`` gives it to a sink.
"""

from __future__ import annotations

import os
import uuid

import pytest

from lgf import Event
from lgf import config as cfg
from lgf.errors import ConfigErrors, DeliveryError
from lgf.event import to_msgpack, write_events
from lgf.spool import Spool, SpoolView, recorded_use, spool_path
from support.cli import lgf, write
from support.fakewecom import FakeWeCom

SINK_A = '[[sinks]]\nuse = "wecom"\nname = "a"\nurl = "{url}"\nkey_env = "KEY_A"\nreceive = "events"\n'
SINK_B = '[[sinks]]\nuse = "wecom"\nname = "b"\nurl = "{url}"\nkey_env = "KEY_B"\nreceive = "alerts"\n'


def plugins_toml(tmp_path, *sinks: str, url: str = "http://127.0.0.1:9/cgi-bin/webhook/send") -> str:
    head = f'[lgf]\nspool_dir = "{tmp_path / "spool"}"\nplugins = ["lgf.sinks.wecom"]\n\n'
    return str(write(tmp_path / "plugins.toml", head + "\n".join(s.format(url=url) for s in sinks)))


def stalls(n: int, pid: int) -> list[Event]:
    return [Event(pid=pid, comm="api", cause="lock", wait_reason="sync.Mutex.Lock", goid=10 + i,
                  duration_ns=2 * 10**9, start_ns=10**12 + i, end_ns=10**12 + i + 2 * 10**9,
                  stack_summary=["main.charge"]) for i in range(n)]


def ids_by_key(fake: FakeWeCom) -> dict[str, str]:
    out: dict[str, str] = {}
    for m in fake.accepted():
        out[m.key] = out.get(m.key, "") + m.content + "\n"
    return out


def registry():
    from lgf.manager import make_manager
    return make_manager(entry_points=False, extra=["lgf.sinks.wecom"]).components()


# --- names --------------------------------------------------------------------------------------

def test_a_sink_is_named_after_its_use_and_its_queue_after_its_name(tmp_path):
    config = cfg.validate({"sinks": [{"use": "stdout"}, {"use": "file", "path": str(tmp_path / "x")}]},
                          registry())
    assert [c.name for c in config.of_kind("sink")] == ["stdout", "file"]
    assert spool_path(tmp_path, "wecom").name == "wecom.db"


def test_a_second_unnamed_sink_of_one_use_must_be_named(tmp_path):
    with pytest.raises(ConfigErrors) as err:
        cfg.validate({"sinks": [{"use": "file", "path": "/tmp/a"}, {"use": "file", "path": "/tmp/b"}]},
                     registry())
    (problem,) = err.value.errors
    assert problem.path == "sinks[1].name"
    assert "required" in str(problem) and "sinks[0]" in str(problem)
    cfg.validate({"sinks": [{"use": "file", "path": "/tmp/a"}, {"use": "file", "path": "/tmp/b", "name": "b"}]},
                 registry())


def test_two_sinks_given_one_name_is_an_error_naming_both_tables():
    with pytest.raises(ConfigErrors) as err:
        cfg.validate({"sinks": [{"use": "stdout", "name": "x"}, {"use": "file", "path": "/tmp/a"},
                                {"use": "file", "path": "/tmp/b", "name": "x"}]}, registry())
    assert [str(e) for e in err.value.errors] == ["sinks[2].name: 'x' is already the name of sinks[0]"]


# --- the spool's owner --------------------------------------------------------------------------

def test_a_queue_refuses_a_sink_of_another_use_while_it_holds_items_and_keeps_them(tmp_path):
    path = spool_path(tmp_path, "ops")
    spool = Spool(path, use="wecom")
    spool.add("e1", True, b"\x80", 10)
    spool.close()
    with pytest.raises(DeliveryError, match="holds 1 item.*'wecom' sink.*'pager' sink will not send"):
        Spool(path, use="pager")
    assert recorded_use(path) == "wecom"
    with SpoolView(path) as view:
        assert view.counts()["pending"] == 1
    Spool(path, use="wecom").close()  # its own sink still opens it


def test_an_alert_the_spool_delivered_is_not_queued_again(tmp_path):
    spool = Spool(spool_path(tmp_path, "ops"), use="wecom")
    assert spool.add("alert-1", True, b"\x80", 10) == (True, 0)
    assert spool.ack(["alert-1"]) == 1
    assert spool.add("alert-1", True, b"\x80", 10) == (False, 0)  # handed over again after a crash
    assert spool.counts() == {"pending": 0, "failed": 0}
    spool.close()


# --- through `lgf replay` -----------------------------------------------------------------------

def test_reordered_durable_sinks_each_send_only_their_own_queue(tmp_path):
    ka, kb = "ka-" + uuid.uuid4().hex, "kb-" + uuid.uuid4().hex
    env = {**os.environ, "KEY_A": ka, "KEY_B": kb}
    fake = FakeWeCom(keys=(ka, kb)).start()
    fake.stop()  # down: both sinks keep what they got
    queued = stalls(3, pid=4242)
    write_events(tmp_path / "stalls.msgpack", queued)
    run = lgf("replay", "--config", plugins_toml(tmp_path, SINK_A, SINK_B, url=fake.url),
              str(tmp_path / "stalls.msgpack"), env=env)
    assert run.returncode == 0, run.stderr
    with SpoolView(spool_path(tmp_path / "spool", "a")) as a, SpoolView(spool_path(tmp_path / "spool", "b")) as b:
        assert (a.counts()["pending"], b.counts()["pending"]) == (3, 1)  # three stalls; one alert of them

    fake.start()
    write_events(tmp_path / "nothing.msgpack", [])
    run = lgf("replay", "--config", plugins_toml(tmp_path, SINK_B, SINK_A, url=fake.url),
              str(tmp_path / "nothing.msgpack"), env=env)
    assert run.returncode == 0, run.stderr
    got = ids_by_key(fake)
    assert all(e.id in got[ka] for e in queued)  # a's stall events, through a's robot key
    assert not any(e.id in got.get(kb, "") for e in queued)
    assert "3 stalls" in got[kb] and "3 stalls" not in got[ka]  # b's alert, through b's key only
    fake.stop()


def test_a_queue_left_by_a_sink_of_another_use_stops_the_run_and_is_kept(tmp_path):
    ka = "ka-" + uuid.uuid4().hex
    write_events(tmp_path / "stalls.msgpack", stalls(2, pid=7))
    run = lgf("replay", "--config", plugins_toml(tmp_path, SINK_A),  # no robot listens there
              str(tmp_path / "stalls.msgpack"), env={**os.environ, "KEY_A": ka})
    assert run.returncode == 0, run.stderr
    now_a_file = f'[[sinks]]\nuse = "file"\nname = "a"\npath = "{tmp_path / "a.jsonl"}"\n'
    run = lgf("replay", "--config", plugins_toml(tmp_path, now_a_file), str(tmp_path / "stalls.msgpack"))
    assert run.returncode == 2
    assert "sinks[0].name: the queue" in run.stderr and "of a 'wecom' sink" in run.stderr
    assert not (tmp_path / "a.jsonl").exists()  # refused before anything ran
    with SpoolView(spool_path(tmp_path / "spool", "a")) as view:
        assert view.counts()["pending"] == 2  # nothing deleted


def test_a_position_named_queue_of_an_older_lgf_is_refused_until_adopted(tmp_path):
    ka = "ka-" + uuid.uuid4().hex
    env = {**os.environ, "KEY_A": ka}
    fake = FakeWeCom(keys=(ka,)).start()
    legacy = Spool(spool_path(tmp_path / "spool", "sinks[1]"))  # what lgf wrote before names: no use
    old = stalls(1, pid=9)[0]
    legacy.add(old.id, False, to_msgpack(old), 100)
    legacy.close()
    config = plugins_toml(tmp_path, SINK_A, url=fake.url)
    write_events(tmp_path / "nothing.msgpack", [])
    run = lgf("replay", "--config", config, str(tmp_path / "nothing.msgpack"), env=env)
    assert run.returncode == 2
    assert "sinks[1]:" in run.stderr and "sinks_1_.db holds 1 item(s) queued by an older lgf" in run.stderr
    assert "lgf spool adopt 'sinks[1]' NAME" in run.stderr

    adopt = lgf("spool", "adopt", "sinks[1]", "a", "-c", config)
    assert adopt.returncode == 0, adopt.stderr
    assert recorded_use(spool_path(tmp_path / "spool", "a")) == "wecom"
    run = lgf("replay", "--config", config, str(tmp_path / "nothing.msgpack"), env=env)
    assert run.returncode == 0, run.stderr
    assert old.id in ids_by_key(fake)[ka]
    fake.stop()
