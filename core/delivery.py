"""Durable delivery: each sink behind its own on-disk queue and worker thread, so no alert is lost.

Why: an endpoint goes down, rate-limits, or lgf itself is killed. An alert that lived only in
memory is then gone (what users of Alertmanager, PrometheusAlert and falcosidekick report). Here
every item is written to the sink's spool (``lgf.spool``, SQLite in WAL mode) before ``put``
returns and deleted only after the sink confirmed it: at-least-once across crashes. An item is
sent twice only if lgf died between the sink's send and the acknowledgement (at most what was in
flight: one message for WeCom). This module decides when to call the sink and what its answer
means; the spool stores, ``lgf.clock`` tells the time, ``lgf.cli.spool`` is ``lgf spool``.

Shape the host wires, one per ``[[sinks]]`` table::

    d = Delivery(sink, name, spool_dir, stats, clock=SystemClock(), limit=100_000)
    d.start()                 # the worker thread; items left by an earlier run go first
    d.put(event)              # durable before it returns
    d.put_batch(events)       # the same, in one transaction
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

Every wait goes through the clock (``lgf.clock``), so tests run minutes of outage in seconds.

Cost (bench/bench_wecom.py): a ``put`` is one spool transaction, under 0.1 ms here for a stall
event, an fsync (0.3-1.5 ms) for an alert by default (see ``lgf.spool``). The worker reads,
decodes and acknowledges about 8,000 items a second to a sink that does nothing (~120 µs each).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Iterable
from typing import Any

from .clock import SystemClock
from .components import member
from .errors import DeliveryError
from .event import Event, from_msgpack, to_msgpack
from .spool import Spool, spool_path
from .stats import Stats

log = logging.getLogger("lgf.delivery")

DEFAULT_LIMIT = 100_000
"""Rows (pending + failed) one sink's spool holds before ``put`` evicts the oldest."""


# --- retries --------------------------------------------------------------------------------------

class Backoff:
    """Capped exponential backoff with jitter: attempt n waits min(cap, base*2^(n-1)) * U(0.5, 1)."""

    def __init__(self, base: float = 1.0, cap: float = 300.0, rng: random.Random | None = None):
        self.base, self.cap = base, cap
        self.rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        full = min(self.cap, self.base * 2 ** min(max(attempt - 1, 0), 62))
        return full * (0.5 + self.rng.random() / 2)


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
                 backoff: Backoff | None = None, fsync: bool | str = "alerts", use: str | None = None):
        if limit < 1:
            raise ValueError("limit: must be at least 1")
        self.sink, self.name = sink, name
        self.stats = stats or Stats()
        self.clock = clock or SystemClock()
        self.limit, self.batch_max = limit, batch_max
        self.backoff = backoff or Backoff()
        self.spool = Spool(spool_path(spool_dir, name), fsync=fsync, use=use)  # refuses another use's queue
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
        self.put_batch((event,))

    def put_batch(self, events) -> None:
        """Queue ``events`` on disk in one transaction (durable when this returns: a batch of the
        pipeline's costs one commit, not one per event) and wake the worker. Each event's bytes are
        its one encoding (``Event.freeze``), shared with the alert journal and the file sink."""
        added, evicted = self.spool.add_many(
            [(event.id, event.kind == "alert", to_msgpack(event)) for event in events], self.limit)
        if evicted:
            self._dropped += evicted
            self.stats.inc("lgf_sink_dropped_total", evicted, sink=self.name, reason="limit")
            if self._dropped == evicted or self._dropped // 1000 != (self._dropped - evicted) // 1000:
                log.warning("sink %r: spool full (%d items): dropped the oldest, %d so far; raise the "
                            "limit or fix the sink", self.name, self.limit, self._dropped)
            self._recount()
        elif added:
            self._count(pending=+added)
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
            if (send_pending := member(sink, "sink", "send_pending")) is not None:
                send_pending(events, receipt)
            elif (send_batch := member(sink, "sink", "send_batch")) is not None:
                send_batch(events)
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
