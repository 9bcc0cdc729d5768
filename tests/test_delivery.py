"""The durable queue behind every sink: on disk before put() returns, acknowledged only on success.

The sinks here are small third-party-style sinks written for the test (the boundary the queue
talks to); the queue, its SQLite spool and its worker thread are the real ones. A ManualClock
makes every backoff wait pass at once while recording how long it would have been.
"""

from __future__ import annotations

import logging
import random
import threading

import pytest

from lgf import Event
from lgf.cli import main as lgf_main
from lgf.clock import ManualClock
from lgf.delivery import Backoff, Delivery, Receipt
from lgf.errors import DeliveryError
from lgf.spool import spool_path
from lgf.stats import Stats
from support.cli import lgf
from support.wait import wait_until
from support.wecom import deliver_all


class RecordingClock(ManualClock):
    """Virtual time that also remembers every timed wait the worker asked for."""

    def __init__(self):
        super().__init__(0.0)
        self.waits: list[float] = []

    def wait(self, event, seconds):
        if seconds is not None:
            self.waits.append(seconds)
        return super().wait(event, seconds)


class ListSink:
    """Delivers into a list; ``failures`` maps an event id to the errors its next sends raise."""

    def __init__(self):
        self.got: list[str] = []
        self.failures: dict[str, list[Exception]] = {}
        self.calls = 0
        self.lock = threading.Lock()

    def send(self, event: Event) -> None:
        with self.lock:
            self.calls += 1
            pending = self.failures.get(event.id)
            if pending:
                raise pending.pop(0)
            self.got.append(event.id)


def alert(i: int = 0, **kw) -> Event:
    return Event(kind="alert", pid=1000 + i, comm="api", cause="lock", duration_ns=10**8, **kw)


def stall(i: int = 0) -> Event:
    return Event(kind="stall", pid=2000 + i, comm="api", cause="channel", duration_ns=10**8)


def test_put_is_on_disk_before_the_worker_starts_and_survives_a_reopen(tmp_path):
    sink = ListSink()
    first = Delivery(sink, "sinks[0]", tmp_path, Stats())
    events = [alert(i) for i in range(5)]
    for ev in events:
        first.put(ev)
    assert first.depth() == 5
    first.stop(0)  # never started: nothing was sent
    assert spool_path(tmp_path, "sinks[0]").name == "sinks_0_.db"

    stats = Stats()
    again = Delivery(sink, "sinks[0]", tmp_path, stats, clock=ManualClock())
    assert again.depth() == 5
    assert stats.get("lgf_sink_queue_depth", sink="sinks[0]") == 5
    again.start()
    wait_until(lambda: again.depth() == 0)
    again.stop(5)
    assert sink.got == [e.id for e in events]  # in order, each once
    assert stats.get("lgf_sink_delivered_total", sink="sinks[0]") == 5
    assert stats.get("lgf_sink_queue_depth", sink="sinks[0]") == 0


def test_retryable_failures_back_off_exponentially_capped_with_jitter_and_keep_order(tmp_path):
    sink, clock, stats = ListSink(), RecordingClock(), Stats()
    events = [alert(i) for i in range(3)]
    sink.failures[events[0].id] = [DeliveryError("down", retryable=True)] * 6 + [ConnectionRefusedError()] * 2
    d = Delivery(sink, "s", tmp_path, stats, clock=clock,
                 backoff=Backoff(base=1.0, cap=10.0, rng=random.Random(7)))
    deliver_all(d, events)
    d.stop(5)
    assert sink.got == [e.id for e in events]
    assert len(clock.waits) == 8
    for attempt, waited in enumerate(clock.waits, 1):
        full = min(10.0, 2.0 ** (attempt - 1))
        assert full / 2 <= waited <= full, (attempt, waited)
    assert len(set(clock.waits)) > 1
    assert stats.get("lgf_sink_retried_total", sink="s") == 8
    assert stats.get("lgf_sink_failed_total", sink="s") == 0


def test_permanent_failure_is_kept_on_disk_marked_failed_and_said_loudly(tmp_path, caplog):
    sink, stats = ListSink(), Stats()
    events = [alert(i) for i in range(3)]
    sink.failures[events[1].id] = [DeliveryError("HTTP 400: bad body", retryable=False)]
    d = Delivery(sink, "pager", tmp_path, stats, clock=ManualClock())
    for ev in events:
        d.put(ev)
    with caplog.at_level(logging.ERROR, logger="lgf.delivery"):
        d.start()
        wait_until(lambda: d.depth() == 0)
        d.stop(5)
    assert sink.got == [events[0].id, events[2].id]
    assert d.failed_kept() == 1
    assert stats.get("lgf_sink_failed_total", sink="pager") == 1
    assert "FAILED permanently" in caplog.text and "lgf spool retry pager" in caplog.text
    assert "bad body" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="lgf.delivery"):
        again = Delivery(sink, "pager", tmp_path, stats, clock=ManualClock())
    assert "failed earlier" in caplog.text  # said again at every start until someone acts
    again.start()
    assert again.requeue_failed() == 1
    wait_until(lambda: again.depth() == 0 and again.failed_kept() == 0)
    again.stop(5)
    assert sink.got == [events[0].id, events[2].id, events[1].id]


def test_an_exception_that_is_not_a_delivery_error_is_a_bug_and_is_not_retried_forever(tmp_path):
    sink = ListSink()
    ev = alert()
    sink.failures[ev.id] = [ValueError("sink bug")]
    d = Delivery(sink, "s", tmp_path, Stats(), clock=ManualClock())
    d.put(ev)
    d.start()
    wait_until(lambda: d.failed_kept() == 1)
    d.stop(5)
    assert sink.calls == 1 and sink.got == []


def test_at_the_limit_the_oldest_stall_events_go_before_any_alert(tmp_path, caplog):
    stats = Stats()
    d = Delivery(ListSink(), "s", tmp_path, stats, limit=5)
    alerts = [alert(i) for i in range(3)]
    stalls = [stall(i) for i in range(4)]
    with caplog.at_level(logging.WARNING, logger="lgf.delivery"):
        for ev in alerts[:1] + stalls + alerts[1:]:
            d.put(ev)
    assert d.depth() == 5
    assert stats.get("lgf_sink_dropped_total", sink="s", reason="limit") == 2
    assert "spool full" in caplog.text
    kept = [row[0] for row in d.spool.pending(100)]
    assert kept == [alerts[0].id, stalls[2].id, stalls[3].id, alerts[1].id, alerts[2].id]
    more = [alert(10 + i) for i in range(3)]
    for ev in more:
        d.put(ev)
    kept = [row[0] for row in d.spool.pending(100)]
    assert kept == [alerts[1].id, alerts[2].id] + [e.id for e in more]
    assert stats.get("lgf_sink_dropped_total", sink="s", reason="limit") == 5
    d.stop(0)


def test_a_batch_is_queued_in_one_transaction_as_its_events_one_by_one_would_be(tmp_path):
    """``put_batch`` (the pipeline's, once per batch) keeps what ``put`` of each event keeps:
    the same items in the same order, the same evictions at the limit, a repeated id once."""
    alerts = [alert(i) for i in range(3)]
    stalls = [stall(i) for i in range(4)]
    plain = alerts[:1] + stalls + alerts[1:]
    for batch in (plain, plain + [alerts[0]]):
        kept = {}
        for how in ("one by one", "batch"):
            stats = Stats()
            d = Delivery(ListSink(), "s", tmp_path / f"{how}-{len(batch)}", stats, limit=5)
            if how == "batch":
                d.put_batch(batch)
            else:
                for ev in batch:
                    d.put(ev)
            kept[how] = ([row[0] for row in d.spool.pending(100)], d.depth(),
                         stats.get("lgf_sink_dropped_total", sink="s", reason="limit"))
            d.stop(0)
        assert kept["batch"] == kept["one by one"]
        if batch is plain:
            assert kept["batch"] == ([alerts[0].id, stalls[2].id, stalls[3].id, alerts[1].id, alerts[2].id], 5, 2)


def test_the_same_event_id_queued_twice_is_delivered_once(tmp_path):
    sink = ListSink()
    d = Delivery(sink, "s", tmp_path, Stats(), clock=ManualClock())
    ev = alert()
    d.put(ev)
    d.put(ev)
    assert d.depth() == 1
    d.start()
    wait_until(lambda: d.depth() == 0)
    d.stop(5)
    assert sink.got == [ev.id]


def test_stop_does_not_wait_out_a_backoff_and_leaves_the_rest_on_disk(tmp_path):
    class Down:
        calls = 0

        def send(self, event):
            Down.calls += 1
            raise DeliveryError("connection refused", retryable=True)

    d = Delivery(Down(), "s", tmp_path, Stats(), backoff=Backoff(base=3600.0, cap=3600.0))
    for i in range(4):
        d.put(alert(i))
    d.start()
    wait_until(lambda: Down.calls >= 1)
    d.stop(timeout=30.0)  # the worker is inside an hour-long backoff: stop must cut it short
    assert not d._thread.is_alive()
    assert Down.calls <= 2  # at most one last try at stop, then it leaves rather than wait again
    again = Delivery(ListSink(), "s", tmp_path, Stats())
    assert again.depth() == 4
    again.stop(0)


def test_a_second_queue_on_the_same_spool_is_refused(tmp_path):
    d = Delivery(ListSink(), "s", tmp_path, Stats())
    with pytest.raises(DeliveryError, match="in use by another lgf"):
        Delivery(ListSink(), "s", tmp_path, Stats())
    d.stop(0)
    Delivery(ListSink(), "s", tmp_path, Stats()).stop(0)  # free again once closed


def test_send_pending_sees_every_pending_item_and_may_defer_some(tmp_path):
    class HalfAMinute:
        """Takes at most 3 per call and asks to be called again in 30 s, like a rate-limited API."""

        def __init__(self):
            self.seen: list[int] = []
            self.got: list[str] = []

        def send_pending(self, events, receipt: Receipt):
            self.seen.append(len(events))
            take = events[:3]
            self.got += [e.id for e in take]
            receipt.delivered(e.id for e in take)
            if len(events) > 3:
                receipt.retry_after(30.0)

    sink, clock, stats = HalfAMinute(), RecordingClock(), Stats()
    d = Delivery(sink, "s", tmp_path, stats, clock=clock)
    events = [alert(i) for i in range(8)]
    deliver_all(d, events)
    d.stop(5)
    assert sink.seen == [8, 5, 2]
    assert sink.got == [e.id for e in events]
    assert clock.waits == [30.0, 30.0]
    assert stats.get("lgf_sink_retried_total", sink="s") == 0  # a deferral is not a failure


def test_send_batch_is_all_or_nothing(tmp_path):
    class Batch:
        def __init__(self):
            self.batches: list[list[str]] = []
            self.fail_first = True

        def send_batch(self, events):
            if self.fail_first:
                self.fail_first = False
                raise TimeoutError("timed out")
            self.batches.append([e.id for e in events])

    sink, stats = Batch(), Stats()
    d = Delivery(sink, "s", tmp_path, stats, clock=ManualClock())
    events = [alert(i) for i in range(4)]
    deliver_all(d, events)
    d.stop(5)
    assert sink.batches == [[e.id for e in events]]
    assert stats.get("lgf_sink_retried_total", sink="s") == 4


def test_backoff_delays_stay_within_the_cap_and_jitter_band():
    b = Backoff(base=0.5, cap=60.0, rng=random.Random(3))
    for attempt in range(1, 200):
        full = min(60.0, 0.5 * 2 ** (attempt - 1))
        assert full / 2 <= b.delay(attempt) <= full


def test_lgf_spool_lists_and_requeues_failed_items_once_lgf_is_stopped(tmp_path, capsys):
    sink = ListSink()
    events = [alert(i) for i in range(3)]
    sink.failures[events[0].id] = [DeliveryError("errcode 93000", retryable=False)]
    d = Delivery(sink, "ops", tmp_path, Stats(), clock=ManualClock())
    deliver_all(d, events)

    assert lgf_main(["spool", "list", "--spool-dir", str(tmp_path)]) == 0  # works while lgf runs
    out = capsys.readouterr().out
    assert "ops" in out and " 1  " in out
    assert lgf_main(["spool", "list", "ops", "--spool-dir", str(tmp_path)]) == 0
    assert f"failed {events[0].id} after 1 attempt(s): DeliveryError: errcode 93000" in capsys.readouterr().out
    assert lgf_main(["spool", "retry", "ops", "--spool-dir", str(tmp_path)]) == 1
    assert "stop lgf first" in capsys.readouterr().err

    d.stop(5)
    config = tmp_path / "plugins.toml"
    config.write_text(f'[lgf]\nspool_dir = "{tmp_path}"\n')
    assert lgf_main(["spool", "retry", "ops", "-c", str(config)]) == 0
    assert "1 item(s) of sink 'ops' requeued" in capsys.readouterr().out
    again = Delivery(sink, "ops", tmp_path, Stats(), clock=ManualClock())
    assert again.depth() == 1 and again.failed_kept() == 0
    again.start()
    wait_until(lambda: again.depth() == 0)
    again.stop(5)
    assert sink.got == [events[1].id, events[2].id, events[0].id]


def test_a_corrupt_row_is_set_aside_as_failed_and_the_rest_still_goes(tmp_path):
    import sqlite3

    first = Delivery(ListSink(), "s", tmp_path, Stats())
    good = [alert(i) for i in range(2)]
    first.put(good[0])
    first.stop(0)
    db = sqlite3.connect(spool_path(tmp_path, "s"))
    db.execute("INSERT INTO items (event_id, is_alert, body, enqueued_at) VALUES ('bad', 1, x'c1c1', 0)")
    db.commit()
    db.close()
    sink = ListSink()
    d = Delivery(sink, "s", tmp_path, Stats(), clock=ManualClock())
    d.put(good[1])
    d.start()
    wait_until(lambda: d.depth() == 0)
    d.stop(5)
    assert sink.got == [e.id for e in good]
    assert d.failed_kept() == 1
    again = Delivery(ListSink(), "s", tmp_path, Stats())
    assert [row[0] for row in again.spool.failed_items()] == ["bad"]
    again.stop(0)


def test_lgf_spool_drop_through_the_lgf_command_deletes_the_failed_items_only(tmp_path):
    sink = ListSink()
    failing, waiting = alert(1), alert(2)
    sink.failures[failing.id] = [DeliveryError("HTTP 400: bad body", retryable=False)]
    d = Delivery(sink, "ops", tmp_path, Stats(), clock=ManualClock())
    deliver_all(d, [failing])
    d.stop(5)
    d = Delivery(sink, "ops", tmp_path, Stats())
    d.put(waiting)  # never started: stays pending
    d.stop(0)

    run = lgf("spool", "drop", "ops", "--spool-dir", str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert "1 failed item(s) of sink 'ops' dropped" in run.stdout
    again = Delivery(sink, "ops", tmp_path, Stats())
    assert again.depth() == 1 and again.failed_kept() == 0
    assert [row[0] for row in again.spool.pending(10)] == [waiting.id]
    again.stop(0)
    assert lgf("spool", "drop", "nosuch", "--spool-dir", str(tmp_path)).returncode == 1
