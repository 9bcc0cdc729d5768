"""The alert journal: stalls waiting in open alert groups, on disk, so ``kill -9`` loses none.

Why: a stall becomes an alert only when its group's ``report_interval`` closes (``lgf.alerts``);
until then it lived only in memory, and a crash or ``kill -9`` of lgf lost every stall of every
open group (measured: 54 stalls, killed two seconds after the burst, nothing reached the robot).
Alerts already handed to a sink are safe in that sink's spool (``lgf.delivery``); this module
covers the time before.

One SQLite file, ``<spool_dir>/alert-journal.sqlite`` (WAL, ``synchronous=NORMAL``: it survives a
crash of lgf, not a power cut; 4 kB pages, ``PAGE_SIZE``), with three tables::

    batches(seq, stalls msgpack)       one row per committed batch: per group its stalls entered,
                                       [group key JSON, stalls' ints, worst stall JSON or nil]
    closed(group_key JSON, seq)        a group that closed: its stalls in batches up to seq are done
    outbox(alert_id UNIQUE, body msgpack)  an alert made from a closed group, until the pipeline
                                       has handed it to every sink

What a stall is kept as: what its group's alert is made of, no more. An alert carries its group's
count, total and span, its processes and goroutines, and one stall in full, the worst
(``lgf.alerts``). So each stall is five integers (pid, goid, start, end, duration:
``JournaledStall``), and a stall in full (its JSON line, the bytes a JSON-lines file sink then
writes, made once) only when it became its group's worst: in a storm of alike stalls that is the
group's first, one in hundreds. Keeping every stall in full made a replay of 100,000 stalls write
about 100 MB through SQLite's log; the ints are a few MB.

Why a row per batch and not per stall: a row per stall under a UNIQUE index of random event ids
touched a page of the index per stall, and cost 3-6x the batch row in SQLite alone. A batch row is
deleted, in the transaction that closes its last open group, once none of its stalls is in an
open group; a ``closed`` mark lives as long as a batch it covers.

The host opens the journal once its sinks are up and hands it to its alert engine
(``AlertEngine.use_journal``, through :func:`attach`). The alert engine calls
``add_stall(key, event, worst)`` when it puts a stall in a group (the stall waits in memory) and
``close_groups([(key, alert), ...])`` for the groups a tick closes (``alert`` None when the policy
made no alert: silenced, below ``min_count``, a suppressed repeat). The host takes the events
waiting in its queue in batches (up to ``lgf.run.BATCH_EVENTS``); the pipeline
(``Pipeline.process_batch``) lets the alert policy judge the whole batch, freezes its events
(``Event.freeze``), calls ``commit()`` (through ``AlertEngine.commit``), which writes the batch's
stalls as one row in one transaction, and only then hands the events to the sinks. The
outbox keeps an alert as msgpack, the bytes its spools then take (an alert is frozen when the
outbox takes it). ``close_groups`` is one transaction too: the stalls still
pending, the closed groups' marks, the batch rows they leave with no open stall, and the alerts
into the outbox. The pipeline calls ``delivered(alert_ids)`` once it put the alerts in every
sink's queue (through ``AlertEngine.delivered``). At start (``recover``), before any source runs:
alerts left in the outbox are handed to the sinks again (same ids), then each group not marked
closed is made again from its journaled stalls and worst stall (``AlertEngine.restore_group``,
judged by the alert threshold of now) and every group is closed at once, so they go out as alerts
now rather than one more report interval later: the alert an uninterrupted lgf would have made,
but for its id. A journal left by an older lgf is taken over: stalls it kept in full (a table
``stalls`` of a row per stall, taken over as one batch, or batch rows of [key, stall] pairs) go
through the alert policy again.

What a ``kill -9`` of lgf loses, exactly:

* stalls still in the host's event queue (as before the journal), and the stalls of the batch in
  hand whose ``commit`` had not happened: at most ``BATCH_EVENTS`` events, taken from the queue
  together, judged by the alert policy but in memory only, like the queue;
* nothing that was committed: every stall of an earlier batch, every stall a sink has shown (a
  sink sees a batch only after its commit), every alert in the outbox, come back through
  ``recover``, each stall counted in the alert of its group (tests/test_alert_journal.py kills a
  real ``lgf run`` in the middle of a burst).

A write that fails (disk full, I/O error) is logged and counted in ``lgf_journal_errors_total``,
never raised; the stalls it carried stay in their groups in memory, as before there was a journal.

Nothing is sent twice to a durable sink: an alert keeps its id from the outbox, a spool ignores an
id it holds and remembers the ids of the alerts it delivered (``lgf.spool``). ``stdout`` and
``file`` sinks, which have no queue, may see an alert a second time only if lgf died in the
milliseconds between handing it to the sinks and ``delivered``.

A lock file (``flock``) keeps a second lgf on the same ``spool_dir`` from replaying the same
stalls; ``lgf replay`` opens the journal only when asked (``--journal``), to run a recording at
the cost a live burst has.

Cost (bench/bench_journal.py, 5,000 stalls of 1.7 kB with a 20-frame stack, on this 2-core VM
with other jobs running, so figures move by a third from run to run): committed per batch of 256,
as in a burst, 5.5-8.5 µs per stall that enters a group against 4.6-7.3 µs for the alert policy
alone (1.0-1.2x), 1.1-1.3x when every stall is its group's new worst; keeping every stall in full
measured 23-27 µs over 7-8 µs (2.8-3.8x) in the same minutes. One transaction per stall when
they trickle in one by one: about 40 µs. Nothing per stall under the alert threshold.
bench/bench_pipeline.py replays 100,000 stalls with the journal on.
"""

from __future__ import annotations

import json
import logging
import operator
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import msgpack

from . import sqlitefile
from .errors import DeliveryError
from .event import Event, from_json, from_msgpack, json_bytes, to_msgpack

log = logging.getLogger("lgf.journal")

FILE_NAME = "alert-journal.sqlite"
INFINITY_NS = 2**63 - 1
MAX_PENDING = 4096
"""Stalls ``add_stall`` keeps in memory at most before it commits by itself (a caller that
commits per batch, as the host does, never reaches it)."""

PAGE_SIZE = 4096
"""SQLite's default page, for a journal made now. A batch row is a few kB (256 stalls of five
ints and the few worst in full), and every commit writes each page it touched (the row's, the
sequence's) whole to the log: 64 kB pages, taken when a row held every stall in full (180 kB),
made each commit write 128 kB or more, twice the time of 4 kB pages for the same 100,000 stalls.
A journal made before keeps its page size (SQLite cannot change it in WAL mode)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    stalls    BLOB NOT NULL               -- msgpack array of [group key JSON, stall JSON line]
);
CREATE TABLE IF NOT EXISTS closed (
    group_key TEXT PRIMARY KEY,           -- a group that closed, its key JSON
    seq       INTEGER NOT NULL            -- its stalls in batches up to this seq are done
);
CREATE TABLE IF NOT EXISTS outbox (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id  TEXT NOT NULL UNIQUE,
    body      BLOB NOT NULL
);
"""


def _key_text(key: tuple) -> str:
    return json.dumps(list(key), ensure_ascii=False, separators=(",", ":"), default=str)


class AlertJournal:
    """The journal file of one ``spool_dir`` (see the module docstring). Thread-safe.

    A write that fails (disk full, I/O error) is logged and counted in
    ``lgf_journal_errors_total``, never raised: the alert policy goes on in memory, as it did
    before there was a journal.
    """

    def __init__(self, spool_dir: str | Path, stats=None):
        self.stats = stats
        self._errors = 0
        self.path = Path(spool_dir) / FILE_NAME
        self._lockfile, self._db = sqlitefile.open_owned(
            self.path, f"alert journal {self.path} is in use by another lgf process (two lgf on one [lgf] spool_dir)",
            page_size=PAGE_SIZE)
        self._lock = threading.Lock()
        self._pending: dict[tuple, list] = {}
        """Stalls added since the last commit, by group key: ``[their ints (STALL_INTS a stall),
        the one that became the group's worst last or None]``, written at the commit."""
        self._pending_stalls = 0
        """Stalls in ``_pending``."""
        self.written = 0
        """Stalls committed since this journal was opened (``lgf replay --journal`` says it)."""
        self._key_texts: dict[tuple, str] = {}
        """Open group key -> its JSON text, made once per group (not once per stall)."""
        self._batches_of: dict[str, dict[int, int]] = {}
        """Open group key text -> {batch seq: its stalls in that batch}, for this process's batches."""
        self._open_stalls: dict[int, int] = {}
        """Batch seq -> its stalls whose group is still open; a batch at 0 is deleted."""
        self._db.execute("PRAGMA synchronous=NORMAL")
        # A checkpoint every 4 MB of log, as SQLite's default 1,000 pages of 4 kB: the log of
        # 64 kB pages stays as small as it was.
        self._db.execute(f"PRAGMA wal_autocheckpoint={4 * 1024 * 1024 // PAGE_SIZE}")
        # Debian's SQLite is built with secure_delete on: every deleted row zeroed, freed pages
        # written again. FAST zeroes what is written anyway; freed pages keep old stalls until
        # reused (the file holds stalls anyway).
        self._db.execute("PRAGMA secure_delete=FAST")
        self._db.executescript(_SCHEMA)
        with sqlitefile.transaction(self._db):
            self._adopt_row_per_stall_table()
        self._seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM batches").fetchone()[0]
        """The last batch written (AUTOINCREMENT: seqs only grow, across restarts too)."""

    def _adopt_row_per_stall_table(self) -> None:
        """A journal written by an lgf that kept one row per stall (table ``stalls``): its stalls
        become one batch, so that ``recover`` brings them back like any other."""
        if not self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='stalls'").fetchone():
            return
        rows = self._db.execute("SELECT group_key, body FROM stalls ORDER BY seq").fetchall()
        if rows:
            self._db.execute("INSERT INTO batches (stalls) VALUES (?)", (msgpack.packb(rows, use_bin_type=True),))
        self._db.execute("DROP TABLE stalls")

    # -- what the alert engine and the pipeline call ----------------------------------------------

    def add_stall(self, key: tuple, event: Event, worst: bool = True) -> None:
        """``event`` entered the open group ``key`` (``worst``: and became its worst stall so
        far): :meth:`add_stalls` of that one."""
        self.add_stalls(((key, event, worst),))

    def add_stalls(self, stalls: Iterable[tuple[tuple, Event, bool]]) -> None:
        """These stalls entered open groups, each ``(key, event, worst)`` (``worst``: it became its
        group's worst stall so far): they wait in memory for the next ``commit`` (or
        ``close_groups``), which writes the stalls of the whole batch as one row, in one
        transaction. Past ``MAX_PENDING`` stalls the journal commits by itself, so a caller that
        never commits keeps a bounded number of stalls in memory only."""
        with self._lock:
            pending, n = self._pending, 0
            for key, event, worst in stalls:
                group = pending.get(key)
                if group is None:
                    group = pending[key] = [[], None]
                group[0] += _stall_ints(event)
                if worst:
                    group[1] = event
                n += 1
            self._pending_stalls += n
            full = self._pending_stalls >= MAX_PENDING
        if full:
            self.commit()

    def commit(self) -> None:
        """Write the stalls added since the last commit, as one row in one transaction. The host
        calls this once per batch of events it took from its queue, before any sink sees them."""
        with self._lock:
            if not self._pending_stalls:
                return
            try:
                self._write(())
            except sqlite3.Error as exc:
                self._failed(f"add {self._pending_stalls} stall(s)", exc)
            finally:
                self._clear_pending()  # written, or counted lost: the groups still hold them in memory

    def close_groups(self, closed: Iterable[tuple[tuple, Event | None]]) -> None:
        """These groups closed, each ``(key, alert)`` (``alert`` None when the policy made no
        alert): in one transaction, write the stalls still pending, mark the closed groups' stalls
        done (deleting each batch none of whose stalls is in an open group any more) and keep
        their alerts until ``delivered``."""
        closed = list(closed)
        with self._lock:
            if not closed and not self._pending_stalls:
                return
            for _, alert in closed:
                if alert is not None:
                    alert.freeze()  # what the outbox keeps is what every sink gets
            try:
                self._write(closed)
            except sqlite3.Error as exc:
                self._failed(f"close {len(closed)} group(s)", exc)
            finally:
                self._clear_pending()
                for key, _ in closed:
                    self._batches_of.pop(self._key_texts.pop(key, None) or _key_text(key), None)

    def _text_of(self, key: tuple) -> str:
        """The JSON text of an open group's key, made once per group."""
        text = self._key_texts.get(key)
        if text is None:
            text = self._key_texts[key] = _key_text(key)
        return text

    def _clear_pending(self) -> None:
        self._pending.clear()
        self._pending_stalls = 0

    def close_group(self, key: tuple, alert: Event | None) -> None:
        """Group ``key`` closed: ``close_groups`` of that one group."""
        self.close_groups([(key, alert)])

    def _write(self, closed: list[tuple[tuple, Event | None]]) -> None:
        """One transaction: the pending stalls as one batch row, then the closed groups' marks,
        the batches they leave empty and their alerts. Called with ``_lock`` held; raises
        ``sqlite3.Error`` with nothing written and the bookkeeping untouched."""
        seq = self._seq
        emptied: list[int] = []
        pending = {self._text_of(key): group for key, group in self._pending.items()}  # per group, not per stall
        with sqlitefile.transaction(self._db):
            if self._pending_stalls:
                seq = self._db.execute("INSERT INTO batches (stalls) VALUES (?)", (_batch_row(pending),)).lastrowid
            if closed:
                texts = [self._text_of(key) for key, _ in closed]
                self._db.executemany("INSERT OR REPLACE INTO closed (group_key, seq) VALUES (?,?)",
                                     [(text, seq) for text in texts])
                emptied = self._emptied(texts, seq, pending)
                self._db.executemany("DELETE FROM batches WHERE seq=?", [(s,) for s in emptied])
                # A mark is needed while a batch it covers is kept: none older than the oldest kept.
                self._db.execute("DELETE FROM closed WHERE seq < (SELECT COALESCE(MIN(seq), ?) FROM batches)",
                                 (seq + 1,))
                self._db.executemany("INSERT OR IGNORE INTO outbox (alert_id, body) VALUES (?,?)",
                                     [(a.id, to_msgpack(a)) for _, a in closed if a is not None])
        # Committed: now the bookkeeping.
        self._seq = seq
        self.written += self._pending_stalls
        if self._pending_stalls:
            self._open_stalls[seq] = self._pending_stalls
            for text, (ints, _) in pending.items():
                per_batch = self._batches_of.setdefault(text, {})
                per_batch[seq] = per_batch.get(seq, 0) + len(ints) // STALL_INTS
        for s in emptied:
            self._open_stalls.pop(s, None)

    def _emptied(self, texts: list[str], seq: int, pending_groups: dict[str, list]) -> list[int]:
        """The batches left with no stall of an open group once ``texts`` close (the pending
        batch ``seq``, ``pending_groups``, counted in), without changing the bookkeeping (the
        transaction may fail)."""
        left = dict(self._open_stalls)
        pending = {text: len(ints) // STALL_INTS for text, (ints, _) in pending_groups.items()}
        if self._pending_stalls:
            left[seq] = self._pending_stalls
        for text in set(texts):
            for s, n in self._batches_of.get(text, {}).items():
                left[s] -= n
            if text in pending:
                left[seq] -= pending[text]
        return [s for s, n in left.items() if n <= 0]

    def delivered(self, alert_ids: Iterable[str]) -> None:
        """These alerts are in every sink's queue (or sent): drop them from the outbox."""
        ids = list(alert_ids)
        if not ids:
            return
        try:  # one transaction: each DELETE on its own was a commit, a WAL page written, per alert
            with self._lock, sqlitefile.transaction(self._db):
                self._db.executemany("DELETE FROM outbox WHERE alert_id=?", [(i,) for i in ids])
        except sqlite3.Error as exc:
            self._failed("forget delivered alerts", exc)

    def forget_through(self, seq: int) -> int:
        """Drop every batch up to ``seq`` (``recover``: their stalls are in alerts now, or no group
        takes them any more) and the marks no kept batch needs; returns the stalls dropped."""
        with self._lock:
            dropped = _count(self._read(through=seq))
            with sqlitefile.transaction(self._db):
                self._db.execute("DELETE FROM batches WHERE seq <= ?", (seq,))
                self._db.execute("DELETE FROM closed WHERE seq < (SELECT COALESCE(MIN(seq), ?) FROM batches)",
                                 (self._seq + 1,))
            for s in [s for s in self._open_stalls if s <= seq]:
                del self._open_stalls[s]
            return dropped

    def _failed(self, what: str, exc: Exception) -> None:
        self._errors += 1
        if self.stats is not None:
            self.stats.inc("lgf_journal_errors_total")
        if self._errors == 1 or self._errors % 1000 == 0:
            log.error("alert journal %s: cannot %s (%s; %d error(s) so far): open alert groups may be "
                      "lost if lgf dies now", self.path, what, exc, self._errors)

    # -- reading ----------------------------------------------------------------------------------

    def open_groups(self) -> Journaled:
        """What the journal holds of the groups not closed yet (see :class:`Journaled`)."""
        with self._lock:
            batches = self._read()
        out = Journaled(last_seq=batches[-1][0] if batches else 0)
        for seq, groups, legacy in batches:
            for text, flat, worst in groups:
                group = out.groups.get(text)
                if group is None:
                    group = out.groups[text] = JournaledGroup(text)
                group.stalls.extend(JournaledStall(*flat[i:i + STALL_INTS]) for i in range(0, len(flat), STALL_INTS))
                if worst is not None:  # a later batch's worst beat the earlier ones' (strictly longer)
                    group.worst = worst
            for i, body in legacy:
                try:
                    out.legacy.append(_stall_of(body))
                except Exception as exc:  # a corrupt row must not stop the recovery of the others
                    log.error("alert journal %s: stall %d of batch %d cannot be decoded (%s); left in place",
                              self.path, i, seq, exc)
        return out

    def stalls(self) -> list[JournaledStall]:
        """The journaled stalls of groups not closed yet, oldest first, as the journal keeps them:
        process, goroutine and times (a stall of an older lgf's full rows decoded to the same)."""
        journaled = self.open_groups()
        return [s for g in journaled.groups.values() for s in g.stalls] + [
            JournaledStall(e.pid, e.goid, e.start_ns, e.end_ns, e.duration_ns) for e in journaled.legacy]

    def _read(self, through: int | None = None) -> list[tuple[int, list, list]]:
        """``[(batch seq, [(group key text, stalls' ints, worst JSON or None), ...], [(index, full
        stall body), ...]), ...]``: the groups, and the full stalls of rows an older lgf wrote,
        that have not closed since their batch was written. Called with ``_lock`` held."""
        marks = dict(self._db.execute("SELECT group_key, seq FROM closed").fetchall())
        rows = self._db.execute("SELECT seq, stalls FROM batches WHERE seq <= ? ORDER BY seq",
                                (INFINITY_NS if through is None else through,)).fetchall()
        out = []
        for seq, blob in rows:
            try:
                row = msgpack.unpackb(blob, raw=False)
                if isinstance(row, dict):  # a batch row of this lgf: its groups
                    out.append((seq, [(text, flat, worst) for text, flat, worst in row["groups"]
                                      if marks.get(text, -1) < seq], []))
                else:  # an older lgf's row: [group key, full stall] pairs
                    out.append((seq, [], [(i, body) for i, (key, body) in enumerate(row)
                                          if marks.get(key, -1) < seq]))
            except Exception as exc:  # noqa: BLE001 - a corrupt batch must not stop the others
                log.error("alert journal %s: batch %d cannot be decoded (%s); left in place", self.path, seq, exc)
        return out

    def outbox(self) -> list[Event]:
        """Alerts made but not yet handed to every sink, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT alert_id, body FROM outbox ORDER BY seq").fetchall()
        out = []
        for ident, body in rows:
            try:
                out.append(from_msgpack(body))
            except Exception as exc:  # a corrupt row must not stop the recovery of the others
                log.error("alert journal %s: alert %s cannot be decoded (%s); left in place", self.path, ident, exc)
        return out

    def counts(self) -> dict[str, int]:
        """``{"stalls": journaled stalls of open groups, "outbox": alerts not handed over yet}``."""
        with self._lock:
            stalls = _count(self._read())
            return {"stalls": stalls, "outbox": self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]}

    def close(self) -> None:
        self.commit()
        with self._lock:
            self._db.close()
            self._lockfile.close()


# --- what a batch row holds -------------------------------------------------------------------------

STALL_INTS = 5
"""A stall in a batch row: pid, goid, start_ns, end_ns, duration_ns (:class:`JournaledStall`)."""


class JournaledStall(NamedTuple):
    """A stall as the journal keeps it: what its group's counters take from it."""

    pid: int
    goid: int
    start_ns: int
    end_ns: int
    duration_ns: int


@dataclass
class JournaledGroup:
    """An open group's stalls in the journal, and its worst stall in full (the JSON line the
    file sink wrote), the one its alert is made of."""

    key_text: str
    stalls: list[JournaledStall] = field(default_factory=list)
    worst: bytes | None = None

    @property
    def key(self) -> tuple:
        return tuple(json.loads(self.key_text))


@dataclass
class Journaled:
    """What ``recover`` brings back: the open groups by key text, the full stalls of rows an
    older lgf wrote (``legacy``: their groups are made again by the alert policy), and the last
    batch read."""

    groups: dict[str, JournaledGroup] = field(default_factory=dict)
    legacy: list[Event] = field(default_factory=list)
    last_seq: int = 0

    def __len__(self) -> int:
        return sum(len(g.stalls) for g in self.groups.values()) + len(self.legacy)


_stall_ints = operator.attrgetter("pid", "goid", "start_ns", "end_ns", "duration_ns")
"""A stall's :class:`JournaledStall` ints, in one C call."""


def _batch_row(pending: dict[str, list]) -> bytes:
    """One batch row: per group, its stalls' ints and the stall that became its worst last, in
    full. Encoded here, once the pipeline froze the batch; the worst as the JSON line the file
    sink then writes (the same bytes, made once)."""
    groups = [[text, ints, None if worst is None else json_bytes(worst)] for text, (ints, worst) in pending.items()]
    return msgpack.packb({"groups": groups}, use_bin_type=True)


def _count(batches: list[tuple[int, list, list]]) -> int:
    """Stalls in ``_read``'s batches."""
    return sum(len(flat) // STALL_INTS for _, groups, _ in batches for _, flat, _ in groups) + sum(
        len(legacy) for _, _, legacy in batches)


def _stall_of(body: bytes) -> Event:
    """A stall an older lgf journaled in full: a JSON line, or msgpack."""
    return from_json(body) if body[:1] == b"{" else from_msgpack(body)


def recover(journal: AlertJournal, engine, pipeline) -> tuple[int, int]:
    """Bring back what a crashed lgf left: returns (alerts re-sent from the outbox, stalls replayed).

    Called with the sinks up and no source started. Outbox alerts go to the sinks as they are
    (same ids). Each journaled open group is made again from its stalls' counters and its worst
    stall (``engine.restore_group``; full stalls an older lgf journaled go through
    ``engine.observe``), then every group is closed at once by ``pipeline.tick``, which journals
    and delivers the alerts as a live tick does. The engine must already use ``journal``
    (``engine.use_journal(journal)``).
    """
    pending = journal.outbox()
    for alert in pending:
        pipeline.deliver(alert)
    journal.delivered(a.id for a in pending)
    journaled = journal.open_groups()
    restored = 0
    for event in journaled.legacy:
        engine.observe(event)
        restored += 1
    for group in journaled.groups.values():
        worst = None
        if group.worst is not None:
            try:
                worst = _stall_of(group.worst)
            except Exception as exc:  # noqa: BLE001 - one corrupt group must not stop the others
                log.error("alert journal %s: the worst stall of group %s cannot be decoded (%s)",
                          journal.path, group.key_text, exc)
        if worst is None:
            log.error("alert journal %s: group %s has no readable worst stall: its %d stall(s) are dropped",
                      journal.path, group.key_text, len(group.stalls))
            continue
        restored += engine.restore_group(group.key, worst, group.stalls)
    alerts = pipeline.tick(INFINITY_NS) if restored else []
    # Every group is closed now, its alert in the outbox: what was read is done. A stall no group
    # took (the alert threshold or policy changed since) is not alert material any more.
    dropped = journal.forget_through(journaled.last_seq) if journaled.last_seq else 0
    if pending or len(journaled):
        log.info("alert journal: %d alert(s) re-sent, %d stall(s) of open groups replayed into %d "
                 "alert(s)%s", len(pending), restored, len(alerts),
                 f" ({dropped} below the alert policy now)" if dropped else "")
    return len(pending), restored


def attach(engine, pipeline, spool_dir: str | Path, stats=None) -> AlertJournal | None:
    """Open the journal of ``spool_dir``, give it to ``engine`` (``engine.use_journal``) and recover
    what a crash left.

    Returns the journal (the host closes it at the end), or None when it cannot be opened: lgf
    then runs as before, with open groups in memory only, and says so.
    """
    try:
        journal = AlertJournal(spool_dir, stats)
    except (OSError, sqlite3.Error, DeliveryError) as exc:
        if stats is not None:
            stats.inc("lgf_journal_errors_total")
        log.error("alert journal: cannot open it in %s (%s): stalls in open alert groups are lost if "
                  "lgf dies", spool_dir, exc)
        return None
    engine.use_journal(journal)
    recover(journal, engine, pipeline)
    return journal
