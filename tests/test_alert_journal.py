"""Stalls waiting in open alert groups survive ``kill -9`` of lgf: the alert journal.

The end-to-end test runs the real ``lgf run`` with the uprobe source on the stalls fixture, the
fake WeCom robot down and a report interval of an hour, kills lgf with SIGKILL once the stalls
are in its open groups, and starts it again with the robot up: every stall arrives in an alert,
and no alert arrives twice. The smaller tests take the crash windows one by one, in process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import msgpack
import pytest

from lgf import Event, hookimpl
from lgf import config as cfg
from lgf.alerts import AlertEngine
from lgf.delivery import Delivery
from lgf.journal import AlertJournal, attach
from lgf.manager import make_manager
from lgf.pipeline import Pipeline, SinkRoute
from lgf.run import BATCH_EVENTS
from lgf.stats import Stats
from support.cli import write
from support.fakewecom import FakeWeCom
from support.gobuild import GO_VERSIONS, build_go
from support.stallfixture import STALLS_SRC, StallFixture
from support.wait import wait_until
from support.wecom import ids_in


class CauseKept:
    """A classifier that keeps the cause each test stall was made with (in ``extra["want"]``)."""

    @hookimpl
    def lgf_classify(self, event):
        return event.extra.get("want")


def hook():
    manager = make_manager(entry_points=False)
    manager.register(CauseKept(), "cause_kept", "test")
    return manager.pm.hook


class Recorder:
    """A durable sink (no ``durable = False``) that records what it was given."""

    def __init__(self):
        self.got: list[Event] = []

    def send(self, event: Event) -> None:
        self.got.append(event)


def stalls(n: int, cause: str = "lock", pid: int = 42) -> list[Event]:
    return [Event(pid=pid, comm="api", extra={"want": cause}, goid=100 + i, duration_ns=200_000_000,
                  start_ns=10**12 + i, end_ns=10**12 + i + 200_000_000) for i in range(n)]


def host_parts(spool_dir, sink=None, interval="1h"):
    """Engine, pipeline and the sink's durable queue, as the host wires them (no sources)."""
    config = cfg.validate({"lgf": {"spool_dir": str(spool_dir), "report_interval": interval}}, {})
    stats = Stats()
    engine = AlertEngine(config, stats)
    sink = sink or Recorder()
    queue = Delivery(sink, "rec", spool_dir, stats, use="recorder")
    pipeline = Pipeline(hook(), stats, [SinkRoute("rec", sink, receive="alerts", delivery=queue)], engine)
    return engine, pipeline, queue, sink


def alerts_in(queue: Delivery) -> list[Event]:
    from lgf.event import from_msgpack
    return [from_msgpack(body) for _, body in queue.spool.pending(1000)]


def test_stalls_of_open_groups_come_back_as_alerts_after_a_crash(tmp_path):
    engine, pipeline, queue, _ = host_parts(tmp_path)
    attach(engine, pipeline, tmp_path)
    for ev in stalls(5) + stalls(2, cause="channel"):
        pipeline.process(ev)
    assert pipeline.tick(time.monotonic_ns()) == []  # the hour has not passed: all still open
    # lgf dies here: nothing is closed or flushed. The kernel drops its locks (a new process's).
    engine.journal._db.close()
    engine.journal._lockfile.close()
    queue.spool.close()

    engine, pipeline, queue, _ = host_parts(tmp_path)
    journal = attach(engine, pipeline, tmp_path)
    counts = sorted((a.cause, a.extra["count"]) for a in alerts_in(queue))
    assert counts == [("channel", 2), ("lock", 5)]
    assert journal.counts() == {"stalls": 0, "outbox": 0}
    journal.close()
    queue.spool.close()


def test_an_alert_made_but_not_handed_over_is_sent_again_with_its_id_and_only_once(tmp_path):
    engine, pipeline, queue, sink = host_parts(tmp_path)
    journal = attach(engine, pipeline, tmp_path)
    for ev in stalls(3):
        pipeline.process(ev)
    (alert,) = engine.due(2**63 - 1)  # the group closed and its alert is in the outbox...
    assert journal.counts() == {"stalls": 0, "outbox": 1}
    queue.put(alert)                   # ...one sink got it, and was even delivered...
    queue.start()
    wait_until(lambda: queue.depth() == 0)
    queue.stop()                       # ...then lgf died before the journal heard of it.
    journal.close()

    engine, pipeline, queue, _ = host_parts(tmp_path)
    journal = attach(engine, pipeline, tmp_path)
    assert journal.counts() == {"stalls": 0, "outbox": 0}
    assert alerts_in(queue) == []      # the spool remembered delivering that id: not again
    assert [e.id for e in sink.got] == [alert.id]
    journal.close()
    queue.spool.close()


def test_a_stall_no_group_takes_any_more_is_dropped_from_the_journal_not_replayed_forever(tmp_path):
    engine, pipeline, queue, _ = host_parts(tmp_path)
    journal = attach(engine, pipeline, tmp_path)
    pipeline.process(stalls(1)[0])
    journal.close()
    queue.spool.close()
    engine, pipeline, queue, _ = host_parts(tmp_path)
    engine.threshold_ns = 10**12  # the policy changed: that stall is under the alert threshold now
    journal = attach(engine, pipeline, tmp_path)
    assert journal.counts() == {"stalls": 0, "outbox": 0} and alerts_in(queue) == []
    journal.close()
    queue.spool.close()


def test_a_batch_the_disk_cannot_take_is_counted_not_raised_and_the_groups_keep_it(tmp_path):
    engine, pipeline, queue, _ = host_parts(tmp_path)
    journal = attach(engine, pipeline, tmp_path, stats=pipeline.stats)
    pipeline.process_batch(stalls(2))
    (pages,) = journal._db.execute("PRAGMA page_count").fetchone()
    journal._db.execute(f"PRAGMA max_page_count={pages}")  # the disk is full from now on
    # A batch bigger than what is left of the last page: a stall takes a few ints in a row
    pipeline.process_batch(stalls(4000, pid=43))
    assert pipeline.stats.total("lgf_journal_errors_total") == 1
    assert journal.counts()["stalls"] == 2                    # nothing of the failed batch half-written
    assert sum(g.count for g in engine.groups.values()) == 4002  # the policy still holds every stall
    journal._db.execute("PRAGMA max_page_count=1073741823")
    pipeline.process_batch(stalls(1, pid=44))                 # room again: the journal goes on
    assert journal.counts()["stalls"] == 3
    alerts = pipeline.tick(2**63 - 1)                         # one transaction for every group
    assert [a.extra["count"] for a in alerts] == [4003]       # one group: service, cause, frame
    assert journal.counts() == {"stalls": 0, "outbox": 0}
    journal.close()
    queue.spool.close()


def test_a_second_lgf_on_the_same_spool_dir_does_not_replay_the_same_stalls(tmp_path):
    first = AlertJournal(tmp_path)
    engine, pipeline, queue, _ = host_parts(tmp_path / "other")
    assert attach(engine, pipeline, tmp_path) is None and engine.journal is None
    first.close()
    queue.spool.close()


def test_a_batch_shared_by_a_closed_and_an_open_group_brings_back_only_the_open_one(tmp_path):
    """One journal row holds a batch's stalls of several groups: when one closes its stalls are
    marked done, the row stays for the other, and a crash then brings back that other alone."""
    engine, pipeline, queue, _ = host_parts(tmp_path)
    journal = attach(engine, pipeline, tmp_path)
    pipeline.process_batch(stalls(3) + stalls(2, cause="channel"))  # one batch, two groups
    lock_key = next(k for k in engine.groups if "lock" in k)
    lock_group = engine.groups.pop(lock_key)                       # the lock group closes alone
    (alert,) = [a for a in [engine._alert_of(lock_group)] if a is not None]
    journal.close_groups([(lock_key, alert)])
    pipeline.deliver(alert)
    journal.delivered([alert.id])
    assert journal.counts() == {"stalls": 2, "outbox": 0}
    assert journal._db.execute("SELECT COUNT(*) FROM batches").fetchone()[0] == 1  # kept for the open group
    engine.journal._db.close()  # lgf dies here
    engine.journal._lockfile.close()
    queue.spool.close()

    engine, pipeline, queue, _ = host_parts(tmp_path)
    journal = attach(engine, pipeline, tmp_path)
    again = alerts_in(queue)
    assert sorted((a.cause, a.extra["count"]) for a in again) == [("channel", 2), ("lock", 3)]
    assert [a.id for a in again if a.cause == "lock"] == [alert.id]  # the one delivered before, not a new one
    assert journal.counts() == {"stalls": 0, "outbox": 0}
    assert journal._db.execute("SELECT COUNT(*) FROM batches").fetchone()[0] == 0
    assert journal._db.execute("SELECT COUNT(*) FROM closed").fetchone()[0] == 0
    journal.close()
    queue.spool.close()


def test_batches_are_deleted_once_every_group_they_hold_closed(tmp_path):
    engine, pipeline, queue, _ = host_parts(tmp_path)
    journal = attach(engine, pipeline, tmp_path)
    for cause in ("lock", "channel", "lock"):
        pipeline.process_batch(stalls(BATCH_EVENTS // 2, cause=cause))
    rows = journal._db.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
    assert rows == 3 and journal.written == 3 * (BATCH_EVENTS // 2)
    pipeline.tick(2**63 - 1)
    assert journal._db.execute("SELECT COUNT(*) FROM batches").fetchone()[0] == 0
    assert journal._db.execute("SELECT COUNT(*) FROM closed").fetchone()[0] == 0
    journal.close()
    queue.spool.close()


def test_a_journal_of_one_row_per_stall_left_by_an_older_lgf_is_recovered(tmp_path):
    """lgf before the batched rows kept a ``stalls`` table, a row per stall: its stalls come back."""
    import sqlite3

    from lgf.event import to_msgpack
    db = sqlite3.connect(tmp_path / "alert-journal.sqlite")
    db.executescript("""
        CREATE TABLE stalls (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,
                             group_key TEXT NOT NULL, body BLOB NOT NULL);
        CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, alert_id TEXT NOT NULL UNIQUE,
                             body BLOB NOT NULL);""")
    for ev in stalls(4):
        ev.cause = "lock"  # journaled stalls were classified
        db.execute("INSERT INTO stalls (event_id, group_key, body) VALUES (?,?,?)",
                   (ev.id, '["api","lock",""]', to_msgpack(ev)))
    db.commit()
    db.close()
    engine, pipeline, queue, _ = host_parts(tmp_path)
    journal = attach(engine, pipeline, tmp_path)
    assert [(a.cause, a.extra["count"]) for a in alerts_in(queue)] == [("lock", 4)]
    assert journal.counts() == {"stalls": 0, "outbox": 0}
    journal.close()
    queue.spool.close()


def test_an_alert_made_again_after_a_crash_is_the_alert_the_same_stalls_make_without_one(tmp_path):
    """The journal keeps each stall's counters, and in full only a stall that became its group's
    worst: the group made again from them gives the alert an uninterrupted lgf makes, field for
    field but its id, the worst stall's stack, trace and process included."""
    def burst() -> list[list[Event]]:
        batches = []
        for b, durations in enumerate([(60, 70, 65), (90, 55), (80, 85, 51)]):  # the worst in the middle
            batches.append([Event(id=f"stall-{b}-{i}", pid=40 + i, comm="api", goid=b * 10 + i, extra={"want": "lock"},
                                  start_ns=10**12 + b * 10**9 + i, end_ns=10**12 + b * 10**9 + i + ms * 10**6,
                                  duration_ns=ms * 10**6, trace_id=f"{b}{i}" * 16,
                                  stack=[{"func": f"runtime.park{b}{i}", "file": "proc.go", "line": i},
                                         {"func": "main.wait", "file": "m.go", "line": 7}])
                            for i, ms in enumerate(durations)])
        return batches

    def made(alert: Event) -> dict:
        out = alert.to_dict()
        for k in ("id", "ts"):
            out.pop(k)
        return out

    engine, pipeline, queue, _ = host_parts(tmp_path / "uninterrupted")
    attach(engine, pipeline, tmp_path / "uninterrupted")
    for batch in burst():
        pipeline.process_batch(batch)
    (expected,) = pipeline.tick(2**63 - 1)
    engine.journal.close()
    queue.spool.close()

    engine, pipeline, queue, _ = host_parts(tmp_path)
    journal = attach(engine, pipeline, tmp_path)
    for batch in burst():
        pipeline.process_batch(batch)
    rows = [msgpack.unpackb(blob) for (blob,) in journal._db.execute("SELECT stalls FROM batches ORDER BY seq")]
    in_full = [json.loads(worst)["duration_ns"] // 10**6 for row in rows for _, _, worst in row["groups"] if worst]
    assert in_full == [70, 90]  # the worst so far of each batch that had a new one; 8 stalls as ints
    engine.journal._db.close()  # lgf dies here
    engine.journal._lockfile.close()
    queue.spool.close()

    engine, pipeline, queue, _ = host_parts(tmp_path)
    journal = attach(engine, pipeline, tmp_path)
    (again,) = alerts_in(queue)
    assert made(again) == made(expected)
    assert again.extra["count"] == 8 and again.duration_ns == 90 * 10**6 and again.trace_id == "10" * 16
    assert journal.counts() == {"stalls": 0, "outbox": 0}
    journal.close()
    queue.spool.close()


def test_a_journal_of_full_stalls_left_by_an_older_lgf_is_recovered(tmp_path):
    """lgf before the counters kept every stall of a batch row in full (``[group key, JSON line]``
    pairs): those stalls go through the alert policy again."""
    from lgf.event import json_bytes

    journal = AlertJournal(tmp_path)
    older = []
    for ev in stalls(3):
        ev.cause, ev.extra["service"] = "lock", "api"  # journaled stalls were labelled
        older.append(('["api","lock",""]', json_bytes(ev)))
    journal._db.execute("INSERT INTO batches (stalls) VALUES (?)", (msgpack.packb(older, use_bin_type=True),))
    assert [s.goid for s in journal.stalls()] == [100, 101, 102]
    journal.close()
    engine, pipeline, queue, _ = host_parts(tmp_path)
    journal = attach(engine, pipeline, tmp_path)
    assert [(a.cause, a.extra["count"]) for a in alerts_in(queue)] == [("lock", 3)]
    assert journal.counts() == {"stalls": 0, "outbox": 0}
    journal.close()
    queue.spool.close()


def test_a_corrupt_batch_row_is_left_in_place_and_the_other_groups_come_back(tmp_path, caplog):
    engine, pipeline, queue, _ = host_parts(tmp_path)
    journal = attach(engine, pipeline, tmp_path)
    pipeline.process_batch(stalls(3))
    for blob in (b"\xc1 not msgpack", msgpack.packb({"groups": [["only a key"]]})):
        journal._db.execute("INSERT INTO batches (stalls) VALUES (?)", (blob,))
    engine.journal._db.close()  # lgf dies here
    engine.journal._lockfile.close()
    queue.spool.close()

    engine, pipeline, queue, _ = host_parts(tmp_path)
    journal = attach(engine, pipeline, tmp_path)
    assert [(a.cause, a.extra["count"]) for a in alerts_in(queue)] == [("lock", 3)]
    assert sum("cannot be decoded" in r.getMessage() for r in caplog.records) == 2
    journal.close()
    queue.spool.close()


# --- end to end: kill -9 of the real lgf --------------------------------------------------------

class LgfProcess:
    """``lgf run CONFIG`` in a child process, its stderr lines collected."""

    def __init__(self, config: str, env: dict):
        self.proc = subprocess.Popen([sys.executable, "-m", "lgf.cli", "run", config], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for(self, text: str) -> None:
        try:
            wait_until(lambda: any(text in line for line in self.lines) or self.proc.poll() is not None)
        except AssertionError:
            raise AssertionError(f"lgf never said {text!r}:\n{''.join(self.lines)}") from None
        assert self.proc.poll() is None, "".join(self.lines)

    def stop(self, sig=signal.SIGTERM) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(60)
        self._reader.join(10)


@pytest.mark.bpf
def test_kill_9_with_stalls_in_open_groups_and_the_robot_down_loses_none(tmp_path, bpf_ok, go_toolchains):
    exe = build_go(STALLS_SRC, GO_VERSIONS[-1])
    key = "k-" + uuid.uuid4().hex
    fake = FakeWeCom(keys=(key,)).start()
    fake.stop()  # the robot is down for the first run
    events_file = tmp_path / "events.jsonl"
    config = str(write(tmp_path / "plugins.toml", f"""
[lgf]
spool_dir = "{tmp_path / 'spool'}"
report_interval = "1h"
plugins = ["lgf.sinks.wecom"]

[targets]
exe = ["{exe}"]

[http]
enabled = false

[[sources]]
use = "uprobe"
goroutine_tier = "always"

[[classifiers]]
use = "waitreason"

[[sinks]]
use = "file"
path = "{events_file}"

[[sinks]]
use = "wecom"
name = "robot"
url = "{fake.url}"
msgtype = "text"
"""))
    env = {**os.environ, "LGF_WECOM_KEY": key}
    n = 4
    with StallFixture(exe, "chanrecv", "-d", "80ms", "-n", str(n)) as fx:
        first = LgfProcess(config, env)
        first.wait_for(f"tracing pid {fx.pid}")
        results = fx.go()
        goids = {r["goid"] for r in results}

        def seen() -> list[dict]:
            if not events_file.exists():
                return []
            rows = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
            return [r for r in rows if r["pid"] == fx.pid]
        # The file sink writes a stall after the alert policy took it (into the journal too).
        wait_until(lambda: sum(r["goid"] in goids and r["cause"] == "channel" for r in seen()) >= n)
        first.stop(signal.SIGKILL)
    stalls_seen = seen()
    assert not any(ids_in(fake.snapshot()))  # nothing went out before the kill

    fake.start()
    second = LgfProcess(config, env)
    second.wait_for("alert journal:")
    wait_until(lambda: ids_in(fake.accepted()))
    time.sleep(0.5)  # a second copy, if any were coming, would come right behind the first
    second.stop()
    text = "\n".join(m.content for m in fake.accepted())
    got = re.findall(r"^id: ([0-9a-f]{32})$", text, re.M)  # the alert ids (trace ids are 32 hex too)
    fake.stop()
    # One alert per group (the stalled goroutines' channel waits, the main goroutine's sleeps), each
    # sent once, and together they hold every stall the first lgf accepted.
    assert len(got) == len(set(got)) == len({r["cause"] for r in stalls_seen}), text
    assert sum(int(c) for c in re.findall(r"(\d+) stalls", text)) == len(stalls_seen), text
    journal = AlertJournal(tmp_path / "spool")
    assert journal.counts() == {"stalls": 0, "outbox": 0}
    journal.close()


# --- the batch boundary: what a kill -9 in the middle of a burst loses ---------------------------

BURST_PLUGIN = """
import os, time
from pathlib import Path
from lgf import Component, Event, hookimpl

class Burst:
    \"\"\"Queues BURST_N stalls at once, before the host's loop takes the first: a burst.\"\"\"
    def __init__(self, options, ctx):
        pass
    def start(self, emit):
        for i in range(int(os.environ["BURST_N"])):
            emit(Event(pid=77, comm="api", goid=i, duration_ns=200_000_000,
                       start_ns=10**12 + i, end_ns=10**12 + i + 200_000_000))
    def stop(self):
        pass

def block_if_marked(event, where):
    # The pipeline thread stops for good at the stall BURST_BLOCK_AT, in an enricher (its batch
    # judged in part and not committed) or in a sink (its batch delivered in part): lgf is then
    # killed with that batch in hand.
    if where == os.environ["BURST_BLOCK_IN"] and event.kind == "stall" \\
            and event.goid == int(os.environ["BURST_BLOCK_AT"]):
        Path(os.environ["BURST_MARK"]).write_text("blocked")
        while True:
            time.sleep(1)

@hookimpl
def lgf_enrich(event):
    block_if_marked(event, "enricher")

class Blocking:
    durable = False  # called on the pipeline thread, as the file sink is
    def __init__(self, options, ctx):
        pass
    def send(self, event):
        block_if_marked(event, "sink")

@hookimpl
def lgf_components():
    return [Component("source", "burst", Burst), Component("sink", "blocking", Blocking)]
"""


@pytest.mark.parametrize("block_in", ["enricher", "sink"])
def test_kill_9_mid_burst_loses_only_the_batch_in_hand_and_every_committed_stall_comes_back(
        tmp_path, block_in):
    """A real ``lgf run`` takes a burst from its queue in batches of ``BATCH_EVENTS``. Killed with
    SIGKILL while its alert policy judges a batch, it loses that batch (and the queue) and nothing
    before it; killed while its sinks take a batch, it loses nothing of it: the journal committed
    the batch before any sink saw a stall of it. Every stall a sink had shown is in the journal,
    and after the restart in exactly one alert."""
    (tmp_path / "burstplug.py").write_text(textwrap.dedent(BURST_PLUGIN))
    events_file = tmp_path / "out.jsonl"
    config = str(write(tmp_path / "burst.toml", f"""
[lgf]
spool_dir = "{tmp_path / 'spool'}"
report_interval = "1h"
plugins = ["burstplug"]

[http]
enabled = false

[[sources]]
use = "burst"

[[sinks]]
use = "file"
path = "{events_file}"
receive = "both"

[[sinks]]
use = "blocking"
"""))
    block_at = 3 * BATCH_EVENTS + BATCH_EVENTS // 2  # in the middle of the fourth batch
    mark = tmp_path / "blocked"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "BURST_N": str(5 * BATCH_EVENTS),
           "BURST_BLOCK_AT": str(block_at), "BURST_BLOCK_IN": block_in, "BURST_MARK": str(mark)}
    first = LgfProcess(config, env)
    wait_until(lambda: mark.exists() or first.proc.poll() is not None)
    assert first.proc.poll() is None, "".join(first.lines)
    first.stop(signal.SIGKILL)

    def rows(kind: str) -> list[dict]:
        return [r for r in map(json.loads, events_file.read_text().splitlines()) if r["kind"] == kind]
    shown = {r["goid"] for r in rows("stall")}
    journal = AlertJournal(tmp_path / "spool")
    journaled = {e.goid for e in journal.stalls()}
    journal.close()
    # Every stall a sink showed was committed first; the batches before the one in hand were
    # committed whole; the batch in hand is lost only if its commit had not happened yet.
    assert shown <= journaled
    committed = set(range((3 if block_in == "enricher" else 4) * BATCH_EVENTS))
    assert journaled == committed, sorted(committed ^ journaled)[:10]
    assert block_at in shown if block_in == "sink" else max(shown) < 3 * BATCH_EVENTS

    second = LgfProcess(config, {**env, "BURST_N": "0"})
    second.wait_for("alert journal:")
    second.stop()
    assert second.proc.returncode == 0, "".join(second.lines)
    alerts = rows("alert")
    assert sum(a["count"] for a in alerts) == len(journaled), alerts  # each stall once, in one alert
    assert len({a["id"] for a in alerts}) == len(alerts)
    journal = AlertJournal(tmp_path / "spool")
    assert journal.counts() == {"stalls": 0, "outbox": 0}
    journal.close()
