"""The pipeline: event -> enrichers -> classifiers -> alert policy -> sinks.

One pipeline serves ``lgf run`` (fed by sources through a bounded queue) and ``lgf replay``
(fed from a file), so a replayed incident goes through exactly the code a live one did.

Failure isolation is the point of this module: every sink sits behind its own delivery queue,
and every enricher and classifier implementation is guarded where it is registered
(``lgf.hookcall``), so one plugin that raises is counted (``lgf_plugin_errors_total``) and logged
by name while the rest carry on. The per-event hooks are still called through pluggy, so tracing
and wrappers work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .event import SEVERITIES, Event
from .stats import Stats

log = logging.getLogger("lgf")

SEVERITY_RANK = {"": 0, **{name: rank for rank, name in enumerate(SEVERITIES)}}


@dataclass
class SinkRoute:
    """One configured sink and what it wants to receive."""

    name: str
    sink: Any
    receive: str = "events"
    min_severity: str = "info"
    delivery: Any = None
    """The sink's queue (``lgf.delivery.Delivery``); None means "call the sink directly"."""

    def wants(self, event: Event) -> bool:
        if event.kind == "alert":
            if self.receive == "events":
                return False
            return SEVERITY_RANK.get(event.severity, 0) >= SEVERITY_RANK[self.min_severity]
        return self.receive in ("events", "both")


class Pipeline:
    def __init__(self, hook, stats: Stats, sinks: list[SinkRoute], engine: Any = None):
        """``hook`` is the plugin manager's hook relay (``Manager.pm.hook``); ``engine`` an optional
        alert engine with ``observe(event)`` and ``due(now_ns) -> list[Event]``
        (``lgf.alerts.AlertEngine``). Errors of single implementations are counted by the
        manager's guard (``lgf.hookcall``) in the manager's stats: pass the same ``stats``."""
        self.hook = hook
        self.stats = stats
        self.sinks = sinks
        self.engine = engine
        self.observers: list = []
        """Called with each processed stall after the sinks (e.g. the latency page's history)."""

    def process(self, event: Event) -> Event:
        """Enrich, classify, let the alert policy see it, and deliver it to the sinks that want it."""
        self.process_batch((event,))
        return event

    def process_batch(self, events) -> None:
        """``process`` each event, the alert journal committing the batch's stalls in one
        transaction (``lgf.journal``) after the alert policy took them and before any sink or
        observer sees one: a stall a sink has shown is on disk."""
        taken = [event for event in events if self._judge(event)]
        journal = getattr(self.engine, "journal", None)
        if journal is not None:
            journal.commit()
        for event in taken:
            self.deliver(event)
            for observe in self.observers:
                try:
                    observe(event)
                except Exception:  # a view of the events must never cost an event
                    self.stats.inc("lgf_plugin_errors_total", plugin="observer", hook="process")
                    log.exception("observer failed on event %s", event.id)

    def _judge(self, event: Event) -> bool:
        """Enrich, classify and let the alert policy see ``event``; False if it is held back."""
        event.finish()
        try:
            self.hook.lgf_enrich(event=event)
        except Exception as exc:  # only a wrapper gets here: plain implementations are guarded
            self._wrapper_raised("lgf_enrich", exc)
        if event.extra.pop("held_back", None):  # an idle wait (lgf.idle, plugins/scope.py): counted only
            self.stats.inc("lgf_idle_waits_total", source=event.source, site=event.extra.get("decided_by", ""))
            return False
        try:
            cause = self.hook.lgf_classify(event=event)
        except Exception as exc:
            self._wrapper_raised("lgf_classify", exc)
            cause = None
        event.cause = cause or "unknown"
        self.stats.inc("lgf_events_total", cause=event.cause)
        if self.engine is not None and event.extra.get("verdict") != "idle":  # report_idle: never alerts
            try:
                self.engine.observe(event)
            except Exception:  # the policy's bug must not lose the event itself
                self.stats.inc("lgf_plugin_errors_total", plugin="alerts", hook="observe")
                log.exception("alert policy failed on event %s", event.id)
        return True

    def _wrapper_raised(self, hook_name: str, exc: Exception) -> None:
        self.stats.inc("lgf_plugin_errors_total", plugin="(wrapper)", hook=hook_name)
        log.error("a wrapper of %s raised: %s: %s", hook_name, type(exc).__name__, exc)

    def tick(self, now_ns: int) -> list[Event]:
        """Send the alerts whose report interval has closed; returns them."""
        if self.engine is None:
            return []
        alerts = self.engine.due(now_ns)
        for alert in alerts:
            self.stats.inc("lgf_alerts_total", cause=alert.cause, severity=alert.severity)
            self.deliver(alert)
        journal = getattr(self.engine, "journal", None)
        if journal is not None and alerts:  # handed to every sink: no longer the journal's to keep
            journal.delivered(a.id for a in alerts)
        return alerts

    def deliver(self, event: Event) -> None:
        for route in self.sinks:
            if not route.wants(event):
                continue
            if route.delivery is not None:
                route.delivery.put(event)
                continue
            try:
                route.sink.send(event)
                self.stats.inc("lgf_sink_delivered_total", sink=route.name)
            except Exception as exc:  # one sink failing never stops the others
                self.stats.inc("lgf_sink_failed_total", sink=route.name)
                log.error("sink %r failed: %s: %s", route.name, type(exc).__name__, exc)
