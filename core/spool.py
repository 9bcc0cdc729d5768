"""The spool: one sink's on-disk queue, a SQLite file that outlives lgf.

Why: an alert that lives only in memory is lost when the endpoint is down and lgf is restarted
or killed. ``lgf.delivery`` writes every item here before ``put`` returns and deletes it only
once the sink confirmed it. This module is only the storage: what a row is, how it is added,
acknowledged, marked failed, evicted at the limit, and read by ``lgf spool``; when to send and
how to retry is ``lgf.delivery``'s job.

One file per sink, ``<spool_dir>/<name>.db`` (``spool_path``; the name is the sink's ``name``,
which defaults to its ``use``), in WAL mode, with three tables::

    items(seq, event_id UNIQUE, is_alert, body msgpack, state 'pending'|'failed',
          attempts, enqueued_at wall clock, last_error)
    meta(key, value)          'use': the ``use`` of the sink that owns the queue. A queue opened
                              for a sink of another ``use`` is refused while it holds items
                              (nothing goes to the wrong place, nothing is deleted); a queue
                              written before this was recorded takes the ``use`` of the sink
                              that opens it (``lgf.sinkqueues`` refuses position-named ones first)
    sent(seq, event_id UNIQUE) ids of the last ``SENT_KEPT`` alerts delivered: ``add`` ignores
                              them, so an alert handed over again after a crash (``lgf.journal``)
                              is not sent twice

``Spool`` is the writer: one per file, enforced by an ``flock`` on ``<name>.lock`` that the
kernel drops when its holder dies, even by ``kill -9``. ``SpoolView`` reads a spool without that
lock (``lgf spool list`` while lgf runs).

Cost (bench/bench_wecom.py): an ``add`` is one transaction, 70-100 µs here with
``synchronous=NORMAL`` (survives a crash of lgf); with ``FULL`` it fsyncs (survives a power cut),
0.3-1.5 ms here as the shared disk's load varies, 0.5-1.3x a file append with an fsync in the same
run. ``fsync="alerts"`` (the default) pays the fsync for alerts only, which are few, and not for
stall events, which can come by the thousand per second; ``True`` / ``False`` for all or none.
Acknowledgements never fsync: one lost to a power cut only means the item is sent again.
``add_many`` takes a batch of the pipeline's in one transaction: one commit for the batch.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import time
from pathlib import Path

from . import sqlitefile
from .errors import DeliveryError

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
CREATE TABLE IF NOT EXISTS meta (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sent (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL UNIQUE
);
"""

SENT_KEPT = 10_000
"""Ids of delivered alerts remembered per spool (a few hundred KiB), far more than one restart
can hand over again."""

_IDS_PER_STATEMENT = 500
"""SQLite's bound-parameter limit is 999 on older builds: ids go in chunks below it."""


def spool_path(spool_dir: str | os.PathLike, name: str) -> Path:
    """``<spool_dir>/<name>.db`` with the name made safe for a file name (``sinks[1]`` -> ``sinks_1_``)."""
    return Path(spool_dir) / (re.sub(r"[^A-Za-z0-9._-]", "_", name) + ".db")


def recorded_use(path: str | os.PathLike) -> str | None:
    """The ``use`` recorded in the queue at ``path`` (read-only, no lock), or None when none is."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        row = db.execute("SELECT value FROM meta WHERE key='use'").fetchone()
        return row[0] if row else None
    except sqlite3.Error:  # no meta table: written before uses were recorded
        return None
    finally:
        db.close()


# --- queries shared by the writer and the read-only view ----------------------------------------

def _counts(db: sqlite3.Connection) -> dict[str, int]:
    got = dict(db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())
    return {"pending": got.get("pending", 0), "failed": got.get("failed", 0)}


def _failed_items(db: sqlite3.Connection, n: int) -> list[tuple[str, int, str]]:
    return db.execute("SELECT event_id, attempts, last_error FROM items "
                      "WHERE state='failed' ORDER BY seq LIMIT ?", (n,)).fetchall()


# --- the writer ----------------------------------------------------------------------------------

class Spool:
    """The on-disk queue of one sink. Thread-safe: one connection behind a lock.

    A lock file beside it (``flock``) refuses a second process on the same spool; the kernel
    releases it when the holder dies, even by ``kill -9``.
    """

    def __init__(self, path: str | os.PathLike, fsync: bool | str = "alerts", use: str | None = None):
        """``use``: the sink's ``use``; the queue records it, and refuses a sink of another
        ``use`` while it holds items (DeliveryError). None opens any queue (``lgf spool``)."""
        self.path = Path(path)
        self._lockfile, self._db = sqlitefile.open_owned(
            self.path, f"spool {self.path} is in use by another lgf process")
        self._lock = threading.Lock()
        self.fsync = fsync
        self._full = True  # SQLite's default; set per transaction by _sync
        self._sync(False)
        self._db.executescript(_SCHEMA)
        self.rows = self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        """Rows on disk, pending plus failed: what ``add`` compares with its limit."""
        if use is not None:
            self._claim(use)

    def _claim(self, use: str) -> None:
        """Record ``use`` as the queue's owner, or refuse when another ``use`` left items here."""
        row = self._db.execute("SELECT value FROM meta WHERE key='use'").fetchone()
        if row is not None and row[0] != use and self.rows:
            self._db.close()
            self._lockfile.close()
            raise DeliveryError(f"spool {self.path} holds {self.rows} item(s) of a {row[0]!r} sink; "
                                f"a {use!r} sink will not send them (they are kept)", retryable=False)
        if row is None or row[0] != use:
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('use', ?)", (use,))

    @property
    def use(self) -> str | None:
        """The ``use`` recorded for this queue (None: not recorded yet)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key='use'").fetchone()
            return row[0] if row else None

    def add(self, event_id: str, is_alert: bool, body: bytes, limit: int) -> tuple[bool, int]:
        """Insert one item; returns (added, evicted). An id already queued is not added twice,
        nor an alert this spool delivered (``sent``).

        At ``limit`` rows the oldest stall events are evicted first, then the oldest alerts, so
        the newest alerts are always kept.
        """
        added, evicted = self.add_many([(event_id, is_alert, body)], limit)
        return added == 1, evicted

    def add_many(self, items: list[tuple[str, bool, bytes]], limit: int) -> tuple[int, int]:
        """:meth:`add` of each ``(event_id, is_alert, body)``, in order, in one transaction (a
        batch of the pipeline's: one commit, not one per item); returns (added, evicted)."""
        with self._lock:
            added = evicted = 0
            rows = self.rows
            self._sync(self.fsync is True or (self.fsync == "alerts" and any(a for _, a, _ in items)))
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for event_id, is_alert, body in items:
                    if is_alert and self._db.execute("SELECT 1 FROM sent WHERE event_id=?",
                                                     (event_id,)).fetchone():
                        continue
                    if rows >= limit:
                        over = rows - limit + 1
                        cur = self._db.execute(
                            "DELETE FROM items WHERE seq IN "
                            "(SELECT seq FROM items ORDER BY is_alert, seq LIMIT ?)", (over,))
                        evicted += cur.rowcount
                        rows -= cur.rowcount
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO items (event_id, is_alert, body, enqueued_at) VALUES (?,?,?,?)",
                        (event_id, int(is_alert), body, time.time()))
                    added += cur.rowcount
                    rows += cur.rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self.rows = rows
            return added, evicted

    def pending(self, n: int) -> list[tuple[str, bytes]]:
        """``(event_id, body)`` of the oldest ``n`` pending items."""
        with self._lock:
            return self._db.execute("SELECT event_id, body FROM items WHERE state='pending' "
                                    "ORDER BY seq LIMIT ?", (n,)).fetchall()

    def ack(self, ids: list[str]) -> int:
        """Delete delivered items, remembering the alerts' ids (``sent``); returns how many were there."""
        done = 0
        with self._lock:
            with self._transaction():
                for chunk, marks in _chunks(ids):
                    self._db.execute("INSERT OR IGNORE INTO sent (event_id) SELECT event_id FROM items "
                                     f"WHERE is_alert=1 AND event_id IN ({marks})", chunk)
                    done += self._db.execute(f"DELETE FROM items WHERE event_id IN ({marks})", chunk).rowcount
                self._db.execute("DELETE FROM sent WHERE seq <= (SELECT MAX(seq) FROM sent) - ?", (SENT_KEPT,))
            self.rows -= done
        return done

    def fail(self, ids: list[str], error: str) -> int:
        """Mark pending items failed (kept, no longer sent); returns how many changed."""
        return self._update(ids, "UPDATE items SET state='failed', attempts=attempts+1, last_error=? "
                                 "WHERE event_id IN ({}) AND state='pending'", (error[:2000],))

    def attempted(self, ids: list[str], error: str) -> int:
        """Record a failed attempt that will be retried (the items stay pending)."""
        return self._update(ids, "UPDATE items SET attempts=attempts+1, last_error=? "
                                 "WHERE event_id IN ({})", (error[:2000],))

    def _update(self, ids: list[str], sql: str, params: tuple) -> int:
        done = 0
        with self._lock, self._transaction():
            for chunk, marks in _chunks(ids):
                done += self._db.execute(sql.format(marks), (*params, *chunk)).rowcount
        return done

    @contextlib.contextmanager
    def _transaction(self):
        """One write transaction, not fsynced (NORMAL): committed, or rolled back on any error.
        The caller holds ``self._lock``."""
        self._sync(False)
        with sqlitefile.transaction(self._db):
            yield

    def _sync(self, full: bool) -> None:
        """FULL: the commit fsyncs the WAL (survives a power cut); NORMAL: survives a crash of lgf."""
        if full != self._full:
            self._db.execute(f"PRAGMA synchronous={'FULL' if full else 'NORMAL'}")
            self._full = full

    def counts(self) -> dict[str, int]:
        """``{"pending": n, "failed": m}``."""
        with self._lock:
            return _counts(self._db)

    def failed_items(self, n: int = 1000) -> list[tuple[str, int, str]]:
        """``(event_id, attempts, last_error)`` of items marked failed, oldest first."""
        with self._lock:
            return _failed_items(self._db, n)

    def requeue_failed(self) -> int:
        """Put every failed item back in line; returns how many."""
        with self._lock:
            return self._db.execute("UPDATE items SET state='pending' WHERE state='failed'").rowcount

    def drop_failed(self) -> int:
        """Delete every failed item; returns how many."""
        with self._lock:
            n = self._db.execute("DELETE FROM items WHERE state='failed'").rowcount
            self.rows -= n
            return n

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._lockfile.close()


# --- the read-only view --------------------------------------------------------------------------

class SpoolView:
    """A spool opened read-only and without its lock, so it can be looked at while lgf runs."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)

    def counts(self) -> dict[str, int]:
        """``{"pending": n, "failed": m}``."""
        return _counts(self._db)

    def oldest_enqueued(self) -> float | None:
        """Wall-clock time (``time.time()``) the oldest item was queued; None when empty."""
        return self._db.execute("SELECT MIN(enqueued_at) FROM items").fetchone()[0]

    def failed_items(self, n: int = -1) -> list[tuple[str, int, str]]:
        """``(event_id, attempts, last_error)`` of items marked failed, oldest first (-1: all)."""
        return _failed_items(self._db, n)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SpoolView:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _chunks(ids: list[str]):
    """``(chunk, "?,?,...")`` pairs of at most _IDS_PER_STATEMENT ids (SQLite's variable limit)."""
    for i in range(0, len(ids), _IDS_PER_STATEMENT):
        chunk = ids[i:i + _IDS_PER_STATEMENT]
        yield chunk, ",".join("?" * len(chunk))
