"""The pipeline isolates failures: a raising sink, enricher or classifier never stops the rest."""

from __future__ import annotations

import pluggy

from lgf import hookimpl
from lgf.event import Event
from lgf.pipeline import Pipeline, SinkRoute
from lgf.testing import EventCollector, make_manager


class BrokenSink:
    def send(self, event):
        raise ConnectionError("down")


class BrokenEnricher:
    @hookimpl
    def lgf_enrich(self, event):
        raise KeyError("nope")


class TagEnricher:
    @hookimpl
    def lgf_enrich(self, event):
        event.tags["seen"] = True


class BrokenClassifier:
    @hookimpl(tryfirst=True)
    def lgf_classify(self, event):
        raise ValueError("bad")


class LockClassifier:
    @hookimpl
    def lgf_classify(self, event):
        return "lock"


def make(*plugins, sinks):
    m = make_manager()  # lgf.testing: built-ins only, no installed entry points
    for i, p in enumerate(plugins):
        m.register(p, f"p{i}", "test")
    return Pipeline(m.pm.hook, m.stats, sinks), m.stats


def test_a_failing_sink_does_not_stop_the_others():
    good_before, good_after = EventCollector(), EventCollector()
    pipe, stats = make(sinks=[SinkRoute("a", good_before), SinkRoute("bad", BrokenSink()),
                              SinkRoute("b", good_after)])
    for _ in range(3):
        pipe.process(Event(end_ns=10**8))
    assert len(good_before.events) == 3 and len(good_after.events) == 3
    assert stats.get("lgf_sink_failed_total", sink="bad") == 3


def test_a_failing_enricher_or_classifier_is_counted_and_skipped():
    sink = EventCollector()
    pipe, stats = make(TagEnricher(), BrokenEnricher(), LockClassifier(), BrokenClassifier(),
                       sinks=[SinkRoute("s", sink)])
    ev = pipe.process(Event(end_ns=10**8))
    assert ev.tags == {"seen": True}
    assert ev.cause == "lock"
    assert stats.get("lgf_plugin_errors_total", plugin="p1", hook="lgf_enrich") == 1
    assert stats.get("lgf_plugin_errors_total", plugin="p3", hook="lgf_classify") == 1


def test_sink_routing_by_kind_and_severity():
    r = SinkRoute("w", None, receive="alerts", min_severity="warning")
    assert not r.wants(Event(kind="stall"))
    assert not r.wants(Event(kind="alert", severity="info"))
    assert r.wants(Event(kind="alert", severity="critical"))
    assert SinkRoute("s", None, receive="events").wants(Event()) is True


def test_pluggy_order_is_respected():
    # Later-registered classifiers speak first (pluggy LIFO), as the hookspec documents.
    class A:
        @hookimpl
        def lgf_classify(self, event):
            return "channel"
    pipe, _ = make(LockClassifier(), A(), sinks=[])
    assert pipe.process(Event()).cause == "channel"
    assert isinstance(pipe.hook, pluggy.HookRelay)
