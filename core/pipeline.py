"""The pipeline: event -> enrichers -> classifiers -> alert policy -> sinks.

One pipeline serves ``lgf run`` (fed by sources through a bounded queue) and ``lgf replay``
(fed from a file), so a replayed incident goes through exactly the code a live one did.

Failure isolation is the point of this module: every sink sits behind its own delivery queue,
and every enricher and classifier implementation is guarded where it is registered
(``lgf.hookcall``), so one plugin that raises is counted (``lgf_plugin_errors_total``) and logged
by name while the rest carry on. The hooks are still called through pluggy, so tracing and
wrappers work: once per batch (``lgf_enrich_batch``, ``lgf_classify_batch``) when every plugin of
the per-event hook has the batch hook too, as the built-ins do, else once per event, for every
plugin, as before (``lgf.hookspecs``). The stages run over the whole batch one after the other:
every event is enriched, then classified, then seen by the alert policy.

Idle waits (``lgf.idle``): after the enrichers, an event whose ``extra["verdict"]`` is
``"idle"`` (judged by its source, or by the built-in ``scope`` enricher, which judges every event
that came without a verdict) is held back: counted in ``lgf_idle_waits_total{source,site}`` and
sent nowhere, neither classified nor seen by the alert policy. With ``[idle] report_idle =
true`` (``report_idle=True`` here) it goes on to the sinks with its verdict, and still never
joins an alert. This is the pipeline's own rule, decided from the event's verdict and the
config, not a flag a plugin sets.
"""

from __future__ import annotations

import logging
import operator
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .components import member
from .event import SEVERITIES, Event, finish_all, freeze_all
from .stats import Stats

log = logging.getLogger("lgf")

SEVERITY_RANK = {"": 0, **{name: rank for rank, name in enumerate(SEVERITIES)}}
_cause_of = operator.attrgetter("cause")


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

    def wanted(self, events) -> list[Event]:
        """Those of ``events`` this sink :meth:`wants`: a batch of stalls is taken or left whole,
        without a call per stall."""
        if self.receive in ("events", "both"):
            return [e for e in events if e.kind != "alert" or self.wants(e)]
        return [e for e in events if e.kind == "alert" and self.wants(e)]


class Pipeline:
    def __init__(self, hook, stats: Stats, sinks: list[SinkRoute], engine: Any = None,
                 report_idle: bool = False, identities: Any = None):
        """``hook`` is the plugin manager's hook relay (``Manager.pm.hook``); ``engine`` an optional
        alert engine with ``observe_batch(events)``, ``due(now_ns) -> list[Event]``, ``commit()`` and
        ``delivered(alert_ids)`` (``lgf.alerts.AlertEngine``). ``report_idle``: ``[idle]
        report_idle``, whether idle waits reach the sinks (see the module docstring). Errors of
        single implementations are counted by the manager's guard (``lgf.hookcall``) in the
        manager's stats: pass the same ``stats``. ``identities``: a
        :class:`lgf.identity.ProcessIdentities` that puts each stall's process identity on it
        before the enrichers (a live host's; None when replaying recorded events)."""
        self.hook = hook
        self.identities = identities
        self.stats = stats
        self.sinks = sinks
        self.engine = engine
        self.report_idle = report_idle
        self.observers: list = []
        """Called with each processed stall after the sinks (e.g. the latency page's history)."""

    def process(self, event: Event) -> Event:
        """Enrich, classify, let the alert policy see it, and deliver it to the sinks that want it."""
        self.process_batch((event,))
        return event

    def process_batch(self, events) -> None:
        """``process`` each event, the alert journal committing the batch's stalls in one
        transaction (``lgf.journal``) after the alert policy took them and before any sink or
        observer sees one: a stall a sink has shown is on disk.

        Each event is frozen once judged (``Event.freeze``): the journal, the spools and the file
        sink share one encoding of it. Sinks take the batch one after the other, a sink that is
        its own record (``durable = False``) in one ``send_batch`` call when it has one."""
        taken = self._judge(events)
        if self.engine is not None:
            self.engine.commit()
        for cause, n in Counter(map(_cause_of, taken)).items():  # counted per batch: a label set is sorted once, not per event
            self.stats.inc("lgf_events_total", n, cause=cause)
        self.deliver_batch(taken)
        for observe in self.observers:
            for event in taken:
                try:
                    observe(event)
                except Exception:  # a view of the events must never cost an event
                    self.stats.inc("lgf_plugin_errors_total", plugin="observer", hook="process")
                    log.exception("observer failed on event %s", event.id)

    def _judge(self, events) -> list[Event]:
        """Enrich, classify and let the alert policy see each of ``events``, stage by stage over
        the batch; returns those not held back (idle waits are, see the module docstring)."""
        events = list(events)
        finish_all(events)
        if self.identities is not None:
            for event in events:
                if event.kind != "stall":
                    continue
                try:
                    self.identities.apply(event)
                except Exception:  # /proc read in a way not foreseen: the event goes on without it
                    self.stats.inc("lgf_plugin_errors_total", plugin="identity", hook="process")
                    log.exception("reading the identity of pid %d failed", event.pid)
        self._enrich(events)
        taken = events
        if not self.report_idle:
            taken = [e for e in events if e.extra.get("verdict") != "idle" or e.kind != "stall"]
            if len(taken) < len(events):
                for event in events:
                    if event.kind == "stall" and event.extra.get("verdict") == "idle":
                        # an idle wait (lgf.idle): counted, sent nowhere
                        self.stats.inc("lgf_idle_waits_total", source=event.source,
                                       site=event.extra.get("decided_by", ""))
        self._classify(taken)
        if self.engine is not None:
            # Idle waits reach here only with report_idle, and never alert.
            judged = [e for e in taken if e.extra.get("verdict") != "idle"] if self.report_idle else taken
            for event, exc in self.engine.observe_batch(judged):  # the policy's bug must not lose the event itself
                self.stats.inc("lgf_plugin_errors_total", plugin="alerts", hook="observe")
                log.error("alert policy failed on event %s", event.id, exc_info=exc)
        freeze_all(taken)  # judged: what the journal keeps is what every sink gets
        return taken

    def _enrich(self, events: list[Event]) -> None:
        """``lgf_enrich_batch`` once, or ``lgf_enrich`` per event while a plugin has only that
        (see :meth:`_batch_hook`)."""
        if not events:
            return
        batch_hook = self._batch_hook("lgf_enrich")
        if batch_hook is not None:
            try:
                batch_hook(events=events)
            except Exception as exc:  # only a wrapper gets here: plain implementations are guarded
                self._wrapper_raised("lgf_enrich_batch", exc)
            return
        for event in events:
            try:
                self.hook.lgf_enrich(event=event)
            except Exception as exc:
                self._wrapper_raised("lgf_enrich", exc)

    def _classify(self, events: list[Event]) -> None:
        """Set each event's ``cause``: ``lgf_classify_batch`` once, or ``lgf_classify`` per event
        while a plugin has only that (see :meth:`_batch_hook`); "unknown" when nobody answers."""
        if not events:
            return
        batch_hook = self._batch_hook("lgf_classify")
        if batch_hook is not None:
            for event in events:
                event.cause = ""  # undecided: what the batch hook's classifiers look for
            try:
                batch_hook(events=events)
            except Exception as exc:
                self._wrapper_raised("lgf_classify_batch", exc)
            for event in events:
                if not event.cause:
                    event.cause = "unknown"
            return
        for event in events:
            try:
                cause = self.hook.lgf_classify(event=event)
            except Exception as exc:
                self._wrapper_raised("lgf_classify", exc)
                cause = None
            event.cause = cause or "unknown"

    def _batch_hook(self, per_event: str):
        """The ``<per_event>_batch`` hook caller when every plugin implementing ``per_event``
        implements it too (lgf.hookspecs, ``lgf_enrich_batch``); None when one does not, so that
        plugin, and every other, is called per event as before. Asked per batch: a reload may
        register or drop a plugin between two batches (a few microseconds per batch)."""
        batch = getattr(self.hook, per_event + "_batch", None)
        if batch is None:
            return None
        batched = {id(impl.plugin) for impl in batch.get_hookimpls()}
        if all(id(impl.plugin) in batched for impl in getattr(self.hook, per_event).get_hookimpls()):
            return batch
        return None

    def _wrapper_raised(self, hook_name: str, exc: Exception) -> None:
        self.stats.inc("lgf_plugin_errors_total", plugin="(wrapper)", hook=hook_name)
        log.error("a wrapper of %s raised: %s: %s", hook_name, type(exc).__name__, exc)

    def tick(self, now_ns: int) -> list[Event]:
        """Send the alerts whose report interval has closed; returns them."""
        if self.engine is None:
            return []
        alerts = self.engine.due(now_ns)
        for alert in alerts:
            alert.freeze()  # final: every sink and spool gets the same bytes (the outbox's, if journaled)
            self.stats.inc("lgf_alerts_total", cause=alert.cause, severity=alert.severity)
            self.deliver(alert)
        if alerts:  # handed to every sink: no longer the journal's to keep
            self.engine.delivered(a.id for a in alerts)
        return alerts

    def deliver(self, event: Event, relayed: bool = False) -> None:
        """``event`` to every sink that wants it: a durable one through its queue (returns once it
        is on disk), any other called here, where a failure is counted and logged and never stops
        the others. ``relayed``: an alert the relay received from Alertmanager (``lgf.relay``),
        kept from sinks that say ``relayed = False`` (an alertmanager sink: no loop)."""
        self.deliver_batch((event,), relayed)

    def deliver_batch(self, events, relayed: bool = False) -> None:
        """:meth:`deliver` of each of ``events``, sink by sink: a durable sink's queue takes them
        in one transaction; a sink that is its own record gets them in one ``send_batch`` call
        when it has one (the file sink: one write), else one ``send`` each."""
        for route in self.sinks:
            if relayed and member(route.sink, "sink", "relayed") is False:
                continue
            wanted = route.wanted(events)
            if not wanted:
                continue
            if route.delivery is not None:
                route.delivery.put_batch(wanted)  # one transaction for the batch
                continue
            send_batch = member(route.sink, "sink", "send_batch") if len(wanted) > 1 else None
            if send_batch is not None:
                self._call_sink(route, send_batch, wanted, len(wanted))
            else:
                for event in wanted:
                    self._call_sink(route, route.sink.send, event, 1)

    def _call_sink(self, route: SinkRoute, call, arg, n: int) -> None:
        try:
            call(arg)
            self.stats.inc("lgf_sink_delivered_total", n, sink=route.name)
        except Exception as exc:  # one sink failing never stops the others
            self.stats.inc("lgf_sink_failed_total", n, sink=route.name)
            log.error("sink %r failed: %s: %s", route.name, type(exc).__name__, exc)

    def relay(self, event: Event) -> None:
        """An alert the relay received from Alertmanager: :meth:`deliver` with ``relayed``."""
        self.deliver(event, relayed=True)
