"""Durable delivery: one on-disk queue and one worker thread per sink, so no alert is lost.

Why: an endpoint goes down, rate-limits, or lgf itself is killed. An alert that lived only in
memory is then gone (what users of Alertmanager, PrometheusAlert and falcosidekick report). Here
every item is written to SQLite (WAL) before ``put`` returns and deleted only after the sink
confirmed it: at-least-once across crashes. An item is sent twice only if lgf died between the
sink's send and the acknowledgement (at most what was in flight: one message for WeCom).

Shape the host wires, one per ``[[sinks]]`` table::

    d = Delivery(sink, name, spool_dir, stats, clock=SystemClock(), limit=100_000)
    d.start()                 # the worker thread; items left by an earlier run go first
    d.put(event)              # durable before it returns
    d.depth()                 # items waiting (failed ones kept on disk are not counted)
    d.stop(timeout=5.0)       # deliver what can go now, within timeout; the rest stays on disk

How the worker calls the sink, by what it offers (first match wins):

* ``send_pending(events, receipt)``: the rich protocol. The sink sees every pending item (up to
  ``batch_max``, oldest first) and answers per id: ``receipt.delivered(ids)`` (acknowledged on
  disk at once), ``receipt.failed(ids, DeliveryError)``, ``receipt.retry_after(seconds)``. Ids it
  does not mention stay pending. WeCom uses it to merge what its 20-a-minute budget cannot carry
  into digest messages instead of dropping anything.
* ``send_batch(events)``: all or nothing; returning means every event was delivered.
* ``send(event)``: one at a time, in order.

Failures: ``DeliveryError(retryable=True)`` or ``OSError`` (connection refused, timeouts) keep the
items pending and the worker waits a capped exponential backoff with jitter before trying again.
``DeliveryError(retryable=False)`` or any other exception marks the items *failed*: they stay on
disk, are logged at ERROR with the fix, counted, and the worker backs off too, so a wrong key is
not hammered. ``requeue_failed()`` (and ``lgf spool retry NAME``, with lgf stopped) puts them
back in line; ``lgf spool list`` shows every spool and its failed items.

At the limit (``limit`` rows on disk, pending plus failed), ``put`` evicts the oldest stall event,
or when there is none the oldest alert, so the newest alerts are always kept. Each eviction is
counted in ``lgf_sink_dropped_total{reason="limit"}`` and logged (the first, then every 1000th).

Metrics (label ``sink``): ``lgf_sink_delivered_total``, ``lgf_sink_failed_total`` (items marked
failed), ``lgf_sink_retried_total`` (item attempts that will be retried),
``lgf_sink_dropped_total{reason}``, gauges ``lgf_sink_queue_depth`` and ``lgf_sink_failed_kept``.

Clocks: every wait goes through a clock (``now()``, ``wait(event, seconds)``): ``SystemClock`` in
production, ``ScaledClock`` (N times faster; processes sharing its origin agree on the time) and
``ManualClock`` (waits advance virtual time at once) in tests, so minutes of outage and rate
limiting run in seconds.

Durability and cost (bench/bench_wecom.py): every ``put`` is one SQLite transaction in WAL mode,
which survives a crash of lgf (``kill -9``) as soon as it returns: about 70 µs here. Surviving a
power cut as well needs an fsync per transaction, about 1.4 ms here. ``fsync="alerts"`` (the
default) pays it for alerts only, which are few (grouped per report interval), and not for stall
events, which can come by the thousand per second; ``fsync=True`` / ``False`` for all or none.
Acknowledgements never fsync: one lost to a power cut only means the item is sent again.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import DeliveryError
from .event import Event, from_msgpack, to_msgpack
from .stats import Stats

log = logging.getLogger("lgf.delivery")

DEFAULT_LIMIT = 100_000
"""Rows (pending + failed) one sink's spool holds before ``put`` evicts the oldest."""


# --- clocks ---------------------------------------------------------------------------------------

class SystemClock:
    """Real time: ``time.monotonic`` and ``Event.wait``."""

    def now(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, seconds: float | None) -> bool:
        """Wait ``seconds`` (None: until set) or until ``event`` is set; True if it was set."""
        return event.wait(seconds)


class ScaledClock:
    """Time running ``speed`` times faster than the wall clock.

    ``now()`` is seconds since ``origin`` (a ``time.time()`` value) times ``speed``, so two
    processes given the same origin and speed agree on it: a test's fake server and a child lgf.
    """

    def __init__(self, speed: float, origin: float | None = None):
        self.speed = speed
        self.origin = time.time() if origin is None else origin

    def now(self) -> float:
        return (time.time() - self.origin) * self.speed

    def wait(self, event: threading.Event, seconds: float | None) -> bool:
        return event.wait(None if seconds is None else max(0.0, seconds) / self.speed)


class ManualClock:
    """Virtual time: ``wait`` with a timeout advances it at once (unless the event is already set)."""

    def __init__(self, start: float = 0.0):
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += max(0.0, seconds)

    def wait(self, event: threading.Event, seconds: float | None) -> bool:
        if seconds is None:
            return event.wait()
        if event.is_set():
            return True
        self.advance(seconds)
        time.sleep(0)  # let other threads run, as a real wait would
        return event.is_set()


class Backoff:
    """Capped exponential backoff with jitter: attempt n waits min(cap, base*2^(n-1)) * U(0.5, 1)."""

    def __init__(self, base: float = 1.0, cap: float = 300.0, rng: random.Random | None = None):
        self.base, self.cap = base, cap
        self.rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        full = min(self.cap, self.base * 2 ** min(max(attempt - 1, 0), 62))
        return full * (0.5 + self.rng.random() / 2)


# --- the spool: one SQLite file per sink ---------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL UNIQUE,
    is_alert    INTEGER NOT NULL,
    body        BLOB NOT NULL,              -- the event, msgpack (lgf.event codec)
    state       TEXT NOT NULL DEFAULT 'pending',   -- 'pending' | 'failed'
    attempts    INTEGER NOT NULL DEFAULT 0,
    enqueued_at REAL NOT NULL,              -- wall clock, for operators
    last_error  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS items_by_state ON items (state, seq);
CREATE INDEX IF NOT EXISTS items_eviction ON items (is_alert, seq);
"""


def spool_path(spool_dir: str | os.PathLike, name: str) -> Path:
    """``<spool_dir>/<name>.db`` with the name made safe for a file name (``sinks[1]`` -> ``sinks_1_``)."""
    return Path(spool_dir) / (re.sub(r"[^A-Za-z0-9._-]", "_", name) + ".db")


class Spool:
    """The on-disk queue of one sink. Thread-safe: one connection behind a lock.

    A lock file beside it (``flock``) refuses a second process on the same spool; the kernel
    releases it when the holder dies, even by ``kill -9``.
    """

    def __init__(self, path: str | os.PathLike, fsync: bool | str = "alerts"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lockfile = open(self.path.with_suffix(".lock"), "a+")  # noqa: SIM115 (held for life)
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lockfile.close()
            raise DeliveryError(f"spool {self.path} is in use by another lgf process",
                                retryable=False) from None
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self.fsync = fsync
        self._full = True  # SQLite's default; set per transaction by _sync
        self._sync(False)
        self._db.executescript(_SCHEMA)
        self.rows = self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def add(self, event_id: str, is_alert: bool, body: bytes, limit: int) -> tuple[bool, int]:
        """Insert one item; returns (added, evicted). An id already queued is not added twice."""
        with self._lock:
            evicted = 0
            self._sync(self.fsync is True or (self.fsync == "alerts" and is_alert))
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self.rows >= limit:
                    over = self.rows - limit + 1
                    cur = self._db.execute(
                        "DELETE FROM items WHERE seq IN "
                        "(SELECT seq FROM items ORDER BY is_alert, seq LIMIT ?)", (over,))
                    evicted = cur.rowcount
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO items (event_id, is_alert, body, enqueued_at) VALUES (?,?,?,?)",
                    (event_id, int(is_alert), body, time.time()))
                added = cur.rowcount == 1
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self.rows += int(added) - evicted
            return added, evicted

    def pending(self, n: int) -> list[tuple[str, bytes]]:
        with self._lock:
            return self._db.execute("SELECT event_id, body FROM items WHERE state='pending' "
                                    "ORDER BY seq LIMIT ?", (n,)).fetchall()

    def ack(self, ids: list[str]) -> int:
        """Delete delivered items; returns how many were still there."""
        return self._update(ids, "DELETE FROM items WHERE event_id IN ({})", (), count_rows=True)

    def fail(self, ids: list[str], error: str) -> int:
        return self._update(ids, "UPDATE items SET state='failed', attempts=attempts+1, last_error=? "
                                 "WHERE event_id IN ({}) AND state='pending'", (error[:2000],))

    def attempted(self, ids: list[str], error: str) -> int:
        return self._update(ids, "UPDATE items SET attempts=attempts+1, last_error=? "
                                 "WHERE event_id IN ({})", (error[:2000],))

    def _update(self, ids: list[str], sql: str, params: tuple, count_rows: bool = False) -> int:
        done = 0
        with self._lock:
            self._sync(False)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for i in range(0, len(ids), 500):  # SQLite's bound-parameter limit
                    chunk = ids[i:i + 500]
                    cur = self._db.execute(sql.format(",".join("?" * len(chunk))), (*params, *chunk))
                    done += cur.rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            if count_rows:
                self.rows -= done
        return done

    def _sync(self, full: bool) -> None:
        """FULL: the commit fsyncs the WAL (survives a power cut); NORMAL: survives a crash of lgf."""
        if full != self._full:
            self._db.execute(f"PRAGMA synchronous={'FULL' if full else 'NORMAL'}")
            self._full = full

    def counts(self) -> dict[str, int]:
        with self._lock:
            got = dict(self._db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())
        return {"pending": got.get("pending", 0), "failed": got.get("failed", 0)}

    def failed_items(self, n: int = 1000) -> list[tuple[str, int, str]]:
        """``(event_id, attempts, last_error)`` of items marked failed, oldest first."""
        with self._lock:
            return self._db.execute("SELECT event_id, attempts, last_error FROM items "
                                    "WHERE state='failed' ORDER BY seq LIMIT ?", (n,)).fetchall()

    def requeue_failed(self) -> int:
        with self._lock:
            return self._db.execute("UPDATE items SET state='pending' WHERE state='failed'").rowcount

    def drop_failed(self) -> int:
        with self._lock:
            n = self._db.execute("DELETE FROM items WHERE state='failed'").rowcount
            self.rows -= n
            return n

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._lockfile.close()


# --- what a sink answers -------------------------------------------------------------------------

class Receipt:
    """What the sink reports about one call of ``send_pending``. Acks reach the disk at once."""

    def __init__(self, delivery: Delivery, events: list[Event]):
        self._delivery = delivery
        self._open = {e.id for e in events}
        self.wait = 0.0
        """Seconds the sink asked the worker to wait before calling again (e.g. rate budget)."""
        self.retryable: DeliveryError | Exception | None = None
        self.permanent: DeliveryError | Exception | None = None
        self.delivered_count = 0

    def delivered(self, ids: Iterable[str]) -> None:
        ids = self._take(ids)
        if ids:
            self.delivered_count += len(ids)
            self._delivery._acknowledge(ids)

    def failed(self, ids: Iterable[str], error: Exception) -> None:
        """Items the sink could not deliver; retryable ones stay pending, the others are kept as failed."""
        ids = self._take(ids)
        if is_retryable(error):
            self.retryable = error
            self._delivery._retry_later(ids, error)
        else:
            self.permanent = error
            self._delivery._mark_failed(ids, error)

    def retry_after(self, seconds: float) -> None:
        self.wait = max(self.wait, float(seconds))

    def _take(self, ids: Iterable[str]) -> list[str]:
        out = [i for i in dict.fromkeys(ids) if i in self._open]
        self._open.difference_update(out)
        return out

    @property
    def untouched(self) -> set[str]:
        return set(self._open)


def is_retryable(error: BaseException) -> bool:
    """DeliveryError says itself; OSError (refused, reset, timeout) is retryable; anything else is a bug."""
    if isinstance(error, DeliveryError):
        return error.retryable
    return isinstance(error, OSError)


# --- the queue and its worker --------------------------------------------------------------------

class Delivery:
    """A sink behind a durable queue and its own worker thread (see the module docstring)."""

    def __init__(self, sink: Any, name: str, spool_dir: str | os.PathLike, stats: Stats | None = None,
                 clock: Any = None, limit: int = DEFAULT_LIMIT, batch_max: int = 10_000,
                 backoff: Backoff | None = None, fsync: bool | str = "alerts"):
        if limit < 1:
            raise ValueError("limit: must be at least 1")
        self.sink, self.name = sink, name
        self.stats = stats or Stats()
        self.clock = clock or SystemClock()
        self.limit, self.batch_max = limit, batch_max
        self.backoff = backoff or Backoff()
        self.spool = Spool(spool_path(spool_dir, name), fsync=fsync)
        self._work = threading.Event()   # set by put(): something new to deliver
        self._halt = threading.Event()   # set by stop(): cuts any wait short
        self._stopping = False
        self._deadline = 0.0
        self._thread: threading.Thread | None = None
        self._failures = 0               # consecutive calls that ended in a failure
        self._dropped = 0
        self._counts_lock = threading.Lock()  # put() runs on the pipeline thread, acks on the worker
        self._pending = self._failed_kept = 0
        self._recount()
        if self._failed_kept:
            log.error("sink %r: %d item(s) failed earlier and are kept in %s; fix the cause, stop lgf, run "
                      "`lgf spool retry %s`, start lgf", name, self._failed_kept, self.spool.path, name)

    # -- the host's side ------------------------------------------------------------------------

    def put(self, event: Event) -> None:
        """Queue ``event`` on disk (durable when this returns) and wake the worker."""
        added, evicted = self.spool.add(event.id, event.kind == "alert", to_msgpack(event), self.limit)
        if evicted:
            self._dropped += evicted
            self.stats.inc("lgf_sink_dropped_total", evicted, sink=self.name, reason="limit")
            if self._dropped == evicted or self._dropped // 1000 != (self._dropped - evicted) // 1000:
                log.warning("sink %r: spool full (%d items): dropped the oldest, %d so far; raise the "
                            "limit or fix the sink", self.name, self.limit, self._dropped)
            self._recount()
        elif added:
            self._count(pending=+1)
        self._work.set()

    def depth(self) -> int:
        """Items waiting for delivery (failed ones kept on disk are not counted)."""
        return self._pending

    def failed_kept(self) -> int:
        return self._failed_kept

    def requeue_failed(self) -> int:
        n = self.spool.requeue_failed()
        self._recount()
        self._work.set()
        return n

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"lgf-delivery-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what can go without waiting, for at most ``timeout`` seconds; leave the rest on disk."""
        self._deadline = time.monotonic() + timeout
        self._stopping = True
        self._halt.set()
        self._work.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():  # stuck in the sink: the daemon thread dies with lgf
                log.warning("sink %r: still sending after %.1fs; %d item(s) stay queued on disk",
                            self.name, timeout, self._pending)
                return
        if self._pending:
            log.warning("sink %r: %d item(s) stay queued in %s; they go out when lgf starts again",
                        self.name, self._pending, self.spool.path)
        self.spool.close()

    # -- the worker -----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            if self._stopping and time.monotonic() >= self._deadline:
                return
            self._work.clear()
            try:
                delay = self._step()
            except Exception:  # the spool itself failed (disk full, I/O error): never die silently
                log.exception("sink %r: delivery worker error; items stay in %s", self.name, self.spool.path)
                self._failures += 1
                delay = self.backoff.delay(self._failures)
            if delay is None:  # nothing pending
                if self._stopping:
                    return
                self.clock.wait(self._work, None)
            elif delay > 0:
                if self._stopping:
                    return
                self.clock.wait(self._halt, delay)

    def _step(self) -> float | None:
        """One call of the sink with what is pending; returns how long to wait (None: nothing to do)."""
        rows = self.spool.pending(self.batch_max)
        if not rows:
            return None
        events = self._decode(rows)
        if not events:
            return 0.0
        receipt = Receipt(self, events)
        self._call_sink(events, receipt)
        if receipt.retryable is not None or receipt.permanent is not None:
            self._failures += 1
            return max(receipt.wait, self.backoff.delay(self._failures))
        if receipt.delivered_count:
            self._failures = 0
            return receipt.wait
        return max(receipt.wait, self.backoff.base)  # nothing moved and no reason given: do not spin

    def _decode(self, rows: list[tuple[str, bytes]]) -> list[Event]:
        events, broken = [], []
        for event_id, body in rows:
            try:
                events.append(from_msgpack(body))
            except Exception:  # a corrupt row must not block the queue
                broken.append(event_id)
        if broken:
            self._mark_failed(broken, DeliveryError("undecodable item in the spool", retryable=False))
        return events

    def _call_sink(self, events: list[Event], receipt: Receipt) -> None:
        sink = self.sink
        try:
            if hasattr(sink, "send_pending"):
                sink.send_pending(events, receipt)
            elif hasattr(sink, "send_batch"):
                sink.send_batch(events)
                receipt.delivered(e.id for e in events)
            else:
                for ev in events:
                    if self._stopping and time.monotonic() >= self._deadline:
                        return
                    try:
                        sink.send(ev)
                    except Exception as exc:
                        receipt.failed([ev.id], exc)
                        if is_retryable(exc):
                            return  # keep order: retry this one first, after the backoff
                    else:
                        receipt.delivered([ev.id])
        except Exception as exc:  # the sink raised for the whole call: every item it did not settle
            receipt.failed(receipt.untouched, exc)

    def _acknowledge(self, ids: list[str]) -> None:
        n = self.spool.ack(ids)
        self._count(pending=-n)
        self.stats.inc("lgf_sink_delivered_total", n, sink=self.name)

    def _retry_later(self, ids: list[str], error: Exception) -> None:
        self.spool.attempted(ids, _describe(error))
        self.stats.inc("lgf_sink_retried_total", len(ids), sink=self.name)
        log.warning("sink %r: %d item(s) not delivered, will retry: %s", self.name, len(ids), _describe(error))

    def _mark_failed(self, ids: list[str], error: Exception) -> None:
        n = self.spool.fail(ids, _describe(error))
        self._count(pending=-n, failed=+n)
        self.stats.inc("lgf_sink_failed_total", n, sink=self.name)
        log.error("sink %r: %d item(s) FAILED permanently and are kept in %s: %s. Fix the cause, stop lgf, "
                  "run `lgf spool retry %s`, start lgf", self.name, n, self.spool.path, _describe(error),
                  self.name)

    def _recount(self) -> None:
        with self._counts_lock:
            counts = self.spool.counts()
            self._pending, self._failed_kept = counts["pending"], counts["failed"]
            self._gauges()

    def _count(self, pending: int = 0, failed: int = 0) -> None:
        with self._counts_lock:
            self._pending = max(0, self._pending + pending)
            self._failed_kept = max(0, self._failed_kept + failed)
            self._gauges()

    def _gauges(self) -> None:
        self.stats.set("lgf_sink_queue_depth", self._pending, sink=self.name)
        self.stats.set("lgf_sink_failed_kept", self._failed_kept, sink=self.name)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


# --- `lgf spool`: what the operator does about failed items --------------------------------------

def main(argv: list[str]) -> int:
    """``lgf spool list|retry|drop``: see and act on what sinks could not deliver. Returns the exit code."""
    import argparse

    p = argparse.ArgumentParser(
        prog="lgf spool", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="List the durable sink queues, or requeue / drop the items a sink failed to "
                    "deliver permanently (wrong key, refused body). retry and drop need lgf stopped.",
        epilog="examples:\n  lgf spool list -c plugins.toml\n  lgf spool list ops --spool-dir /var/lib/lgf\n"
               "  lgf spool retry ops -c plugins.toml     # after fixing the cause, before starting lgf")
    p.add_argument("action", choices=("list", "retry", "drop"))
    p.add_argument("name", nargs="?", help="the sink's name (its [[sinks]] name, or sinks[N])")
    p.add_argument("-c", "--config", help="plugins.toml, for its [lgf] spool_dir")
    p.add_argument("--spool-dir", help="the spool directory (default: the config's, else /var/lib/lgf)")
    args = p.parse_args(argv)
    spool_dir = Path(args.spool_dir or _configured_spool_dir(args.config))
    if args.action != "list" and not args.name:
        p.error(f"{args.action} needs the sink's name")
    if args.action == "list":
        return _list(spool_dir, args.name)
    path = spool_path(spool_dir, args.name)
    if not path.exists():
        print(f"lgf spool: no spool for sink {args.name!r} in {spool_dir}", file=sys.stderr)
        return 1
    try:
        spool = Spool(path)
    except DeliveryError as exc:
        print(f"lgf spool: {exc}; stop lgf first", file=sys.stderr)
        return 1
    if args.action == "retry":
        print(f"{spool.requeue_failed()} item(s) of sink {args.name!r} requeued; lgf delivers them "
              "when it starts")
    else:
        print(f"{spool.drop_failed()} failed item(s) of sink {args.name!r} dropped")
    spool.close()
    return 0


def _configured_spool_dir(config: str | None) -> str:
    if config:
        from .config import parse_toml  # only the raw table: `lgf spool` must work with a broken config
        return str(parse_toml(config).get("lgf", {}).get("spool_dir", "/var/lib/lgf"))
    return "/var/lib/lgf"


def _list(spool_dir: Path, name: str | None) -> int:
    paths = [spool_path(spool_dir, name)] if name else sorted(spool_dir.glob("*.db"))
    if not paths or not paths[0].exists():
        print(f"lgf spool: no spool {'for ' + repr(name) + ' ' if name else ''}in {spool_dir}", file=sys.stderr)
        return 1
    print(f"{'spool':<30} {'pending':>8} {'failed':>8}  oldest queued (UTC)")
    for path in paths:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)  # no lock: lgf may be running
        try:
            got = dict(db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())
            oldest = db.execute("SELECT MIN(enqueued_at) FROM items").fetchone()[0]
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(oldest)) if oldest else "-"
            print(f"{path.stem:<30} {got.get('pending', 0):>8} {got.get('failed', 0):>8}  {when}")
            if name:
                for event_id, attempts, error in db.execute(
                        "SELECT event_id, attempts, last_error FROM items WHERE state='failed' ORDER BY seq"):
                    print(f"  failed {event_id} after {attempts} attempt(s): {error}")
        finally:
            db.close()
    return 0
