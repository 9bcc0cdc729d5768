"""The relay: Alertmanager's webhook in, lgf's alert sinks out (``POST /api/alertmanager``).

Many lgf instances send their alerts to one Alertmanager cluster (the ``alertmanager`` sink);
Alertmanager groups, de-duplicates, silences and inhibits them across hosts and notifies a
webhook receiver: an lgf started with no ``[[sources]]`` and its ``[http]`` listener on. Each
notification becomes one lgf alert (``kind = "alert"``) handed to every sink that takes alerts
(``receive``, ``min_severity``), except sinks that say ``relayed = False`` (the ``alertmanager``
sink: no loop). So WeCom keeps its 20-a-minute limit, digests, mentions and durable spool for
the whole fleet, and one message says that one incident spans several hosts.

Exactly once, across restarts (docs/many-hosts.md): a notification's identity is Alertmanager's
``groupKey``, its ``status`` and every alert's ``fingerprint``, ``status`` and ``startsAt``
(:func:`notification_key`). The alert made from it takes that key as its ``id``, so each
durable sink's spool refuses it a second time (``lgf.spool``: queued ids and the last delivered
alerts' ids), and the key is recorded in ``<spool_dir>/relay.sqlite`` once every sink has it
on disk; only then is Alertmanager answered 200. A relay killed with ``kill -9`` before
answering gets the notification again (Alertmanager retries) and sends it once; one that
answered has it on disk. The same notification sent again (a second Alertmanager of the
cluster, a ``repeat_interval`` reminder whose alerts did not change) is answered 200 and sent
nowhere: counted in ``lgf_relay_notifications_total{result="duplicate"}``. Keys are kept for
``KEEP_SECONDS``.

Cost: per notification, one SQLite look-up and one insert, plus each sink's ``put``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from . import sqlitefile
from .event import SEVERITIES, Event, wallclock_of

log = logging.getLogger("lgf.relay")

RELAY_FILE = "relay.sqlite"
KEEP_SECONDS = 7 * 86400.0
"""How long a notification's key is remembered (a week: far longer than any repeat_interval
one would set for a relay, and a few KiB per thousand notifications)."""
MAX_ALERTS_LISTED = 50
"""Alerts of one notification described one by one in the alert made from it; the rest counted."""

_SCHEMA = "CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, at REAL NOT NULL)"


class BadNotification(ValueError):
    """The body is not an Alertmanager webhook notification (the message says what is wrong)."""


def _alerts_of(payload: object) -> list[dict]:
    if not isinstance(payload, dict):
        raise BadNotification("expected an Alertmanager webhook notification (a JSON object)")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise BadNotification("alerts: required, a non-empty list (Alertmanager webhook, version 4)")
    for i, a in enumerate(alerts):
        if not isinstance(a, dict) or not isinstance(a.get("labels"), dict):
            raise BadNotification(f"alerts[{i}]: expected an object with labels")
    if payload.get("status") not in ("firing", "resolved"):
        raise BadNotification("status: must be \"firing\" or \"resolved\"")
    return alerts


def notification_key(payload: dict) -> str:
    """The identity of one notification (see the module docstring), a hex digest."""
    alerts = _alerts_of(payload)
    parts = sorted((str(a.get("fingerprint") or json.dumps(a["labels"], sort_keys=True)),
                    str(a.get("status", "")), str(a.get("startsAt", ""))) for a in alerts)
    blob = json.dumps([str(payload.get("groupKey", "")), payload["status"], parts], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def _worst_severity(alerts: list[dict]) -> str:
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    found = [a["labels"].get("severity", "") for a in alerts]
    known = [s for s in found if s in rank]
    return max(known, key=rank.__getitem__) if known else "warning"


def _int(v) -> int:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return 0


def alert_of(payload: dict, key: str | None = None) -> Event:
    """The lgf alert made from one notification: its id is :func:`notification_key`."""
    alerts = _alerts_of(payload)
    key = key or notification_key(payload)
    common = payload.get("commonLabels") if isinstance(payload.get("commonLabels"), dict) else {}
    status = payload["status"]
    hosts = sorted({str(a["labels"].get("host", "")) for a in alerts} - {""})
    services = sorted({str(a["labels"].get("service", "")) for a in alerts} - {""})
    causes = sorted({str(a["labels"].get("cause", "")) for a in alerts} - {""})
    ann = [a.get("annotations") if isinstance(a.get("annotations"), dict) else {} for a in alerts]
    worst_i = max(range(len(alerts)), key=lambda i: _int(ann[i].get("worst_ns")))
    worst_ann = ann[worst_i]
    items = [{"host": a["labels"].get("host", ""), "status": a.get("status", status),
              "summary": ann[i].get("summary", ""), "fingerprint": a.get("fingerprint", ""),
              "labels": a["labels"], "startsAt": a.get("startsAt", ""), "endsAt": a.get("endsAt", "")}
             for i, a in enumerate(alerts[:MAX_ALERTS_LISTED])]
    where = f"{len(hosts)} host(s): {', '.join(hosts)}" if hosts else "no host named"
    summary = (f"[{status.upper()}] {', '.join(services) or '?'} {', '.join(causes) or '?'}: "
               f"{len(alerts)} alert(s) on {where}")
    reserved = {"alertname", "service", "cause", "severity", "env", "host"}
    return Event(
        kind="alert", id=key, cause=common.get("cause") or (causes[0] if len(causes) == 1 else "unknown"),
        severity=_worst_severity(alerts), env=str(common.get("env", "")),
        duration_ns=_int(worst_ann.get("worst_ns")), ts=wallclock_of(time.monotonic_ns()),
        stack_summary=[s for s in str(worst_ann.get("stack", "")).splitlines() if s],
        trace_id=str(worst_ann.get("trace_id", "")),
        tags={k: v for k, v in common.items() if k not in reserved},
        topology={"host": ", ".join(hosts)} if hosts else {},
        source="alertmanager",
        extra={"service": ", ".join(services), "summary": summary, "hosts": hosts,
               "count": sum(_int(a.get("count")) for a in ann),
               "worst_ns": _int(worst_ann.get("worst_ns")),
               "top_frame": str(worst_ann.get("top_frame", "")),
               "alertmanager": {"status": status, "group_key": str(payload.get("groupKey", "")),
                                "receiver": str(payload.get("receiver", "")),
                                "external_url": str(payload.get("externalURL", "")),
                                "alerts": len(alerts), "listed": items}})


class Relay:
    """Takes notifications for one host: ``receive(payload)`` -> ``(http status, answer)``.

    ``deliver(event)`` puts the alert in every relayed sink's queue (``Pipeline.relay``) and
    returns once each durable one has it on disk."""

    def __init__(self, spool_dir: str, deliver: Callable[[Event], None], stats, clock=time.time):
        self.deliver, self.stats, self.clock = deliver, stats, clock
        self._lock = threading.Lock()
        self._file, self._db = sqlitefile.open_owned(
            Path(spool_dir) / RELAY_FILE, f"{Path(spool_dir) / RELAY_FILE} is in use by another lgf")
        self._db.execute(_SCHEMA)
        self._received = 0

    def receive(self, payload: object) -> tuple[int, dict]:
        try:
            key = notification_key(payload)  # type: ignore[arg-type]
            alert = alert_of(payload, key)  # type: ignore[arg-type]
        except BadNotification as exc:
            self.stats.inc("lgf_relay_notifications_total", result="bad")
            return 400, {"error": str(exc)}
        with self._lock:  # one notification at a time: a duplicate arriving meanwhile waits, then is seen
            if self._db.execute("SELECT 1 FROM seen WHERE key=?", (key,)).fetchone():
                self.stats.inc("lgf_relay_notifications_total", result="duplicate")
                log.info("relay: notification %s (%s) already sent; not again", key, payload.get("groupKey"))
                return 200, {"status": "duplicate", "id": key}
            self.deliver(alert)
            now = self.clock()
            with sqlitefile.transaction(self._db):
                self._db.execute("INSERT OR IGNORE INTO seen (key, at) VALUES (?, ?)", (key, now))
                self._received += 1
                if self._received % 1000 == 1:
                    self._db.execute("DELETE FROM seen WHERE at < ?", (now - KEEP_SECONDS,))
        self.stats.inc("lgf_relay_notifications_total", result="accepted")
        log.info("relay: %s", alert.extra["summary"])
        return 200, {"status": "accepted", "id": key}

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._file.close()
