"""The WeCom sink wired by a user's plugins.toml, through the real `lgf replay` command.

Events go through the host's pipeline into the sink's durable queue and out over HTTP to the fake
robot. With the robot down they stay in the spool, and the next run delivers them.
"""

from __future__ import annotations

import os
import uuid

from lgf import Event
from lgf.event import write_events
from lgf.spool import spool_path
from support.cli import lgf, write
from support.fakewecom import FakeWeCom

EVERY_EVENT = 'receive = "events"\nmsgtype = "markdown"'
"""Sink keys sending every event, not only alerts, as markdown."""


def config(tmp_path, url: str, sink_keys: str = EVERY_EVENT) -> str:
    """A plugins.toml with one WeCom sink named ops at ``url``, plus ``sink_keys`` (TOML lines)."""
    return str(write(tmp_path / "plugins.toml", f"""
[lgf]
spool_dir = "{tmp_path / 'spool'}"
plugins = ["lgf.sinks.wecom"]

[[sinks]]
use = "wecom"
name = "ops"
url = "{url}"
{sink_keys}
"""))


def test_replayed_stalls_reach_the_robot_and_wait_on_disk_while_it_is_down(tmp_path):
    key = "k-" + uuid.uuid4().hex
    fake = FakeWeCom(keys=(key,)).start()
    cfg = config(tmp_path, fake.url)
    env = {**os.environ, "LGF_WECOM_KEY": key}

    fake.stop()
    down = [Event(pid=100 + i, comm="api", cause="channel", duration_ns=(i + 1) * 10**8,
                  end_ns=10**12, start_ns=10**12 - (i + 1) * 10**8, wait_reason="chan receive")
            for i in range(3)]
    write_events(tmp_path / "down.msgpack", down)
    run = lgf("replay", "--config", cfg, str(tmp_path / "down.msgpack"), env=env)
    assert run.returncode == 0, run.stderr
    assert key not in run.stderr + run.stdout
    assert "3 item(s) stay queued" in run.stderr
    assert spool_path(tmp_path / "spool", "ops").exists()

    fake.start()
    up = [Event(pid=200, comm="api", cause="lock", duration_ns=10**9, end_ns=10**12, start_ns=10**12 - 10**9)]
    write_events(tmp_path / "up.msgpack", up)
    run = lgf("replay", "--config", cfg, str(tmp_path / "up.msgpack"), env=env)
    assert run.returncode == 0, run.stderr
    text = "\n".join(m.content for m in fake.accepted())
    assert all(e.id in text for e in down + up)  # the three queued while down came out too
    assert "chan receive" in text
    fake.stop()


def test_a_missing_key_variable_stops_the_run_naming_the_variable(tmp_path):
    cfg = config(tmp_path, "http://127.0.0.1:9/cgi-bin/webhook/send")
    write_events(tmp_path / "one.msgpack", [Event(pid=1, duration_ns=10**9)])
    env = {k: v for k, v in os.environ.items() if k != "LGF_WECOM_KEY"}
    run = lgf("replay", "--config", cfg, str(tmp_path / "one.msgpack"), env=env)
    assert run.returncode != 0
    assert "LGF_WECOM_KEY is not set" in run.stderr


def test_alerts_from_the_alert_policy_arrive_as_markdown_with_their_counts(tmp_path):
    key = "k-" + uuid.uuid4().hex
    fake = FakeWeCom(keys=(key,)).start()
    cfg = config(tmp_path, fake.url, 'mentioned_list = { critical = ["oncall"], warning = ["oncall"] }')
    stalls = [Event(pid=300, comm="billing", cause="lock", wait_reason="sync.Mutex.Lock", goid=7 + i,
                    duration_ns=2 * 10**9, start_ns=10**12 + i * 10**6, end_ns=10**12 + i * 10**6 + 2 * 10**9,
                    stack=[{"func": "main.charge", "file": "/app/charge.go", "line": 12}],
                    stack_summary=["main.charge"]) for i in range(4)]
    write_events(tmp_path / "stalls.msgpack", stalls)
    run = lgf("replay", "--config", cfg, str(tmp_path / "stalls.msgpack"),
              env={**os.environ, "LGF_WECOM_KEY": key})
    assert run.returncode == 0, run.stderr
    (msg,) = fake.accepted()  # the four stalls are one alert, and only alerts go to WeCom by default
    assert msg.msgtype == "markdown"
    assert "lgf alert:" in msg.content and "4 stalls" in msg.content and "main.charge" in msg.content
    assert msg.content.endswith("<@oncall>")
    assert not any(s.id in msg.content for s in stalls)  # the alert has its own id
    fake.stop()
