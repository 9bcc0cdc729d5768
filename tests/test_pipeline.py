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


# --- per batch: lgf_enrich_batch / lgf_classify_batch, and the per-event fallback ---------------

class CountingEnricher:
    """Both hooks, as a batch-aware plugin ships them; counts which one the pipeline called."""

    def __init__(self):
        self.batches: list[int] = []
        self.singles = 0

    @hookimpl
    def lgf_enrich(self, event):
        self.singles += 1
        event.tags["counted"] = True

    @hookimpl
    def lgf_enrich_batch(self, events):
        self.batches.append(len(events))
        for event in events:
            event.tags["counted"] = True


class ChannelBatchClassifier:
    """Both classify hooks: "select" for a select wait, no answer otherwise."""

    @hookimpl
    def lgf_classify(self, event):
        return "select" if event.wait_reason == "select" else None

    @hookimpl
    def lgf_classify_batch(self, events):
        for event in events:
            if not event.cause and event.wait_reason == "select":
                event.cause = "select"


class SilentClassifier:
    """Only the per-event hook, and never an answer (a plugin written before the batch hooks)."""

    @hookimpl
    def lgf_classify(self, event):
        return None


def make_judging(*plugins):
    """``make`` with the host's built-in steps registered as a host registers them: the scope
    enricher (always on) and the waitreason classifier of a ``[[classifiers]]`` table."""
    from lgf.plugins.scope import ScopeEnricher
    from lgf.plugins.waitreason import WaitReasonClassifier
    from lgf.testing import make_context

    m = make_manager()
    m.register(ScopeEnricher(None, make_context()), "lgf.plugins.scope:scope", "built-in (per host)")
    m.register(WaitReasonClassifier(None, None), "classifiers[0]", "config")
    for i, p in enumerate(plugins):
        m.register(p, f"p{i}", "test")
    return Pipeline(m.pm.hook, m.stats, []), m.stats


def stalls(n=5):
    reasons = ["chan receive", "select", "made-up reason", "sync.Mutex.Lock", "select"]
    return [Event(goid=i + 1, pcs=[0x401000], wait_reason=reasons[i % 5], end_ns=10**8, extra={"stall": "park"})
            for i in range(n)]


def test_with_every_plugin_batch_aware_a_batch_is_one_hook_call():
    counting = CountingEnricher()
    pipe, _ = make_judging(counting)
    events = stalls()
    pipe.process_batch(events)
    assert counting.batches == [5] and counting.singles == 0
    assert all(e.tags["counted"] and e.extra["verdict"] == "stall" for e in events)  # the built-in scope ran


def test_a_plugin_with_only_the_per_event_hook_makes_every_plugin_run_per_event():
    counting = CountingEnricher()
    pipe, _ = make_judging(counting, TagEnricher())
    events = stalls()
    pipe.process_batch(events)
    assert counting.batches == [] and counting.singles == 5
    assert all(e.tags == {"counted": True, "seen": True} and e.extra["verdict"] == "stall" for e in events)


def test_batch_classification_decides_as_the_per_event_hook_does():
    batched, _ = make_judging(ChannelBatchClassifier())
    per_event, _ = make_judging(ChannelBatchClassifier(), SilentClassifier())
    a, b = stalls(), stalls()
    batched.process_batch(a)
    per_event.process_batch(b)
    causes = [e.cause for e in a]
    assert causes == ["channel", "select", "unknown", "lock", "select"]  # waitreason, then unknown, decide the rest
    assert [e.cause for e in b] == causes


def test_a_raising_batch_enricher_is_counted_and_the_others_still_get_the_batch():
    class Broken:
        @hookimpl
        def lgf_enrich(self, event):
            raise KeyError("nope")

        @hookimpl
        def lgf_enrich_batch(self, events):
            raise KeyError("nope")

    counting = CountingEnricher()
    pipe, stats = make_judging(counting, Broken())
    events = stalls()
    pipe.process_batch(events)
    assert counting.batches == [5] and all(e.extra["verdict"] == "stall" for e in events)
    assert stats.get("lgf_plugin_errors_total", plugin="p1", hook="lgf_enrich_batch") == 1


def test_every_built_in_enricher_and_classifier_has_the_batch_hook_with_the_same_order():
    """Any config of built-in plugins keeps the pipeline's batch path (one pluggy call per batch,
    see Pipeline._batch_hook): each class with ``lgf_enrich`` / ``lgf_classify`` has the batch
    hook too, called in the same place among the others (the same tryfirst / trylast)."""
    import importlib
    import inspect

    from lgf.manager import BUILTIN_PLUGINS

    checked = []
    for ref in sorted({*BUILTIN_PLUGINS, "lgf.plugins.scope", "lgf.plugins.waitreason"}):
        module = importlib.import_module(ref)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__:
                continue
            for hook in ("lgf_enrich", "lgf_classify"):
                single = getattr(cls, hook, None)
                marks = getattr(single, "lgf_impl", None)
                if marks is None:
                    continue
                batch = getattr(cls, hook + "_batch", None)
                assert batch is not None, f"{ref}:{name} has {hook} but not {hook}_batch"
                assert batch.lgf_impl == marks, f"{ref}:{name}: {hook}_batch is ordered unlike {hook}"
                checked.append(f"{module.__name__.rsplit('.', 1)[-1]}.{hook}")
    assert sorted(checked) == ["gc_phase.lgf_enrich", "peer.lgf_enrich", "poller.lgf_enrich", "sched.lgf_enrich",
                               "scope.lgf_enrich", "symbolizer.lgf_enrich", "trace_context.lgf_enrich",
                               "waitreason.lgf_classify"]
