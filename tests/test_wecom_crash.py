"""kill -9 and restarts of a real process delivering alerts through the durable queue and WeCom sink.

The child is a separate Python process running ``Delivery`` + ``WeComSink`` against the fake
robot in this test. Both use a ScaledClock with one origin (60x: a second is a minute), so the
child's backoff and rate window and the fake's minute agree across the two processes.

1. The robot is down; the child queues alerts and keeps retrying; it is killed with SIGKILL.
2. The robot is up but answers slowly; a new child delivers; it is killed mid-send.
3. A third child drains the spool. Every alert arrived; an alert arrived twice only if it was
   in the one message in flight at the second kill.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid

from lgf import Event
from lgf.clock import ScaledClock
from lgf.spool import spool_path
from support.fakewecom import FakeWeCom
from support.wait import wait_until
from support.wecom import ids_in, max_in_any_minute

CHILD = r"""
import json, sys, time
from lgf import Event, RunContext
from lgf.clock import ScaledClock
from lgf.delivery import Backoff, Delivery
from lgf.sinks.wecom import WeComOptions, WeComSink
from lgf.stats import Stats

spool, url, speed, origin, events_file = sys.argv[1:6]
clock = ScaledClock(float(speed), float(origin))
stats = Stats()
sink = WeComSink(WeComOptions(url=url), RunContext(config=None, stats=stats, name="ops"), clock=clock,
                 state_dir=spool)
queue = Delivery(sink, "ops", spool, stats, clock=clock, backoff=Backoff(base=1.0, cap=120.0))
if events_file != "-":
    with open(events_file) as fh:
        for line in fh:
            queue.put(Event.from_dict(json.loads(line)))
print("queued", queue.depth(), flush=True)
queue.start()
while queue.depth():
    time.sleep(0.02)
print("drained", flush=True)
queue.stop(5)
"""

def spawn(spool_dir, fake: FakeWeCom, clock: ScaledClock, key: str, events_file: str = "-"):
    env = {**os.environ, "LGF_WECOM_KEY": key}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(spool_dir), fake.url, str(clock.speed),
                             repr(clock.origin), events_file],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("queued"), (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, int(line.split()[1])


def max_attempts(spool_dir) -> int:
    db = sqlite3.connect(spool_path(spool_dir, "ops"))
    try:
        return db.execute("SELECT COALESCE(MAX(attempts), 0) FROM items").fetchone()[0]
    finally:
        db.close()


def reap(proc) -> None:
    """Wait for a child that exits (or was killed) and close its pipes."""
    proc.wait(30)
    proc.stdout.close()
    proc.stderr.close()


def kill9(proc) -> None:
    proc.send_signal(signal.SIGKILL)
    reap(proc)


def test_kill_9_with_alerts_queued_loses_none_and_repeats_only_what_was_in_flight(tmp_path):
    key = "k-" + uuid.uuid4().hex
    clock = ScaledClock(60.0)  # a second is a minute
    fake = FakeWeCom(keys=(key,), clock=clock, stall_seconds=0.4).start()
    fake.stop()  # phase 1: the robot is down (connections refused) but its port is known
    alerts = [Event(kind="alert", severity="critical", pid=7000 + i, comm="api", cause="lock",
                    duration_ns=10**9, tags={"service": "checkout"}) for i in range(12)]
    events_file = tmp_path / "alerts.jsonl"
    events_file.write_text("".join(json.dumps(e.to_dict()) + "\n" for e in alerts))
    spool = tmp_path / "spool"

    first, queued = spawn(spool, fake, clock, key, str(events_file))
    assert queued == 12
    wait_until(lambda: max_attempts(spool) >= 3)  # it is retrying against the dead robot
    kill9(first)

    # Phase 2: the robot is back but slow; kill the sender while a message is in flight.
    fake.fail_next("stall", 1000)
    fake.start()
    second, queued = spawn(spool, fake, clock, key)
    assert queued == 12  # nothing was lost to the first kill
    wait_until(lambda: len(fake.snapshot()) >= 3)
    answered_before_kill = len(fake.snapshot())
    kill9(second)
    time.sleep(fake.stall_seconds + 0.2)  # let a request caught in the stall be recorded
    in_flight = set(ids_in(fake.snapshot()[answered_before_kill - 1:]))
    fake.clear_failures()

    # Phase 3: a fresh process drains what is left.
    third, left = spawn(spool, fake, clock, key)
    assert 0 < left < 12
    assert third.stdout.readline().strip() == "drained"
    reap(third)

    got = ids_in(fake.accepted())
    assert set(got) >= {e.id for e in alerts}  # none lost
    duplicates = {i for i in got if got.count(i) > 1}
    assert duplicates <= in_flight
    assert len(duplicates) <= 1  # one alert per message here, and one message in flight at a time
    fake.stop()


def test_a_restarted_sender_does_not_spend_the_minute_twice(tmp_path):
    key = "k-" + uuid.uuid4().hex
    clock = ScaledClock(20.0)  # 3 s is a minute: a restart takes a small part of it
    fake = FakeWeCom(keys=(key,), clock=clock).start()
    spool = tmp_path / "spool"
    batches = []
    for n in (20, 5):  # the first run spends the whole minute's budget, one alert per message
        alerts = [Event(kind="alert", severity="warning", pid=8000 + i, comm="api", duration_ns=10**9)
                  for i in range(n)]
        batches.append(alerts)
        path = tmp_path / f"batch{n}.jsonl"
        path.write_text("".join(json.dumps(e.to_dict()) + "\n" for e in alerts))
        proc, queued = spawn(spool, fake, clock, key, str(path))
        assert queued == n
        assert proc.stdout.readline().strip() == "drained"
        reap(proc)
    got = fake.snapshot()
    assert {m.errcode for m in got} == {0}  # the second run waited instead of earning a 45009
    assert max_in_any_minute([m.t for m in got]) <= 20
    assert set(ids_in(got)) >= {e.id for b in batches for e in b}
    fake.stop()
