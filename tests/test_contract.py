"""The plugin contract: lgf's public names, the protocols, classifier order, per-event hooks
through pluggy (traced, wrappers work, one raising implementation isolated), and the plugin
example of docs/plugins.md run through ``lgf.testing``."""

from __future__ import annotations

import json
import logging
import re
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import lgf
from lgf import Classifier, Enricher, Event, Sink, Source, components, hookimpl
from lgf.testing import PipelineRun, make_manager

ROOT = Path(__file__).resolve().parent.parent
THIRDPARTY = Path(__file__).resolve().parent / "thirdparty"


def test_all_is_sorted_and_exactly_the_public_api():
    for name in lgf.__all__:  # each resolves (Event, CAUSES and Receipt are imported on first use)
        getattr(lgf, name)
    public = {name for name, value in vars(lgf).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)
              and name != "pluggy"}
    assert lgf.__all__ == sorted(lgf.__all__)
    assert set(lgf.__all__) == public


def test_what_a_sink_author_needs_is_exported():
    from lgf import DeliveryError, Receipt
    from lgf.delivery import Receipt as DeliveryReceipt
    from lgf.errors import DeliveryError as Raised
    assert Receipt is DeliveryReceipt and DeliveryError is Raised
    assert DeliveryError("busy", retryable=True).retryable


def test_duration_and_size_are_exported_and_parse_in_a_plugin_table():
    from lgf import Duration, Size
    from lgf.options import coerce
    assert coerce("5s", Duration, "x") == 5_000_000_000
    assert coerce("64MiB", Size, "x") == 64 * 1024**2


def test_builtins_satisfy_the_protocols_and_every_optional_member_is_documented():
    from lgf.plugins import gc_phase, poller, sched, symbolizer, waitreason
    from lgf.sinks import file, stdout, wecom
    from lgf.sources import tracepoint, uprobe
    for cls in (stdout.StdoutSink, file.FileSink, wecom.WeComSink):
        assert issubclass(cls, Sink), cls
    for cls in (uprobe.UprobeSource, tracepoint.TracepointSource):
        assert issubclass(cls, Source), cls
    assert issubclass(waitreason.WaitReasonClassifier, Classifier)
    for cls in (gc_phase.GcPhaseEnricher, poller.PollerEnricher, sched.SchedEnricher,
                symbolizer.SymbolizerEnricher):
        assert issubclass(cls, Enricher), cls
    for kind, protocol in (("sink", Sink), ("source", Source)):
        for name in components.OPTIONAL_MEMBERS[kind]:
            assert f"``{name}" in protocol.__doc__, f"{kind} member {name} is not documented"


def test_a_sink_without_default_receive_gets_events_not_alerts():
    class Plain:
        def send(self, event): ...
    assert components.member(Plain, "sink", "default_receive") == "events"
    assert components.member(Plain(), "sink", "durable") is True
    with pytest.raises(KeyError):
        components.member(Plain(), "sink", "not_a_member")


def _module_classifier(name: str, answer) -> types.ModuleType:
    """A plugin module as a third party ships it: a module-level ``lgf_classify``."""
    mod = types.ModuleType(name)

    @hookimpl
    def lgf_classify(event):
        return answer(event)
    mod.lgf_classify = lgf_classify
    return mod


def test_a_third_party_module_classifier_speaks_before_waitreason():
    team = _module_classifier("team_classifier",
                              lambda e: "db_pool" if "pgx.(*Pool).Acquire" in e.stack_summary else None)
    with PipelineRun('[[classifiers]]\nuse = "waitreason"\n', plugins=[team]) as run:
        pooled, plain, unmapped = run.feed(
            Event(wait_reason="chan receive", stack_summary=["pgx.(*Pool).Acquire"], extra={"stall": "park"}),
            Event(wait_reason="chan receive", stack_summary=["main.worker"], extra={"stall": "park"}),
            Event(wait_reason="a reason no Go has", extra={"stall": "park"}))
    assert pooled.cause == "db_pool"    # the third party first,
    assert plain.cause == "channel"     # then waitreason,
    assert unmapped.cause == "unknown"  # then the fallback


def test_a_raising_classifier_is_counted_and_the_next_one_decides():
    broken = _module_classifier("broken_classifier", lambda e: 1 / 0)
    with PipelineRun('[[classifiers]]\nuse = "waitreason"\n', plugins=[broken]) as run:
        [ev] = run.feed(Event(wait_reason="chan receive", extra={"stall": "park"}))
        assert ev.cause == "channel"
        assert run.stats.get("lgf_plugin_errors_total", plugin="broken_classifier",
                             hook="lgf_classify") == 1


def test_a_wrapper_hookimpl_wraps_the_guarded_calls():
    seen = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def lgf_classify(self, event):
            result = yield
            seen.append(result)
            return result.upper() if result else result

    broken = _module_classifier("broken_classifier", lambda e: 1 / 0)
    with PipelineRun('[[classifiers]]\nuse = "waitreason"\n', plugins=[broken, Wrapper()]) as run:
        [ev] = run.feed(Event(wait_reason="chan receive", extra={"stall": "park"}))
    assert seen == ["channel"] and ev.cause == "CHANNEL"


def test_a_raising_wrapper_loses_only_that_call():
    class BadWrapper:
        @hookimpl(wrapper=True)
        def lgf_enrich(self, event):
            yield
            raise RuntimeError("wrapper bug")

    with PipelineRun(plugins=[BadWrapper()]) as run:
        [ev] = run.feed(Event(wait_reason="chan receive", extra={"stall": "park"}))
        assert ev.cause == "unknown"  # classification still ran
        assert run.stats.get("lgf_plugin_errors_total", plugin="(wrapper)", hook="lgf_enrich") == 1
        assert run.collected.stalls == [ev]


def test_lgf_trace_plugins_traces_the_per_event_hooks(monkeypatch, caplog):
    monkeypatch.setenv("LGF_TRACE_PLUGINS", "1")
    manager = make_manager()
    with caplog.at_level(logging.WARNING, logger="lgf"):
        manager.pm.hook.lgf_classify(event=Event(wait_reason="chan receive"))
    traced = [r.getMessage() for r in caplog.records if r.getMessage().startswith("trace:")]
    assert any("lgf_classify" in line for line in traced), traced


# --- docs/plugins.md's plugin example is tests/thirdparty/mypkg, run here -----------------------


def docs_python_block(heading: str = "## A plugin in one file", page: str = "docs/plugins.md") -> str:
    text = (ROOT / page).read_text()
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_docs_plugin_example_is_the_tested_file():
    assert docs_python_block() == (THIRDPARTY / "mypkg" / "__init__.py").read_text()


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        self.server.got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_docs_plugin_example_classifies_and_delivers_alerts(monkeypatch):
    monkeypatch.syspath_prepend(str(THIRDPARTY))
    import mypkg

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.got = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = f"""
[[classifiers]]
use = "db"
[[classifiers]]
use = "waitreason"
[[sinks]]
use = "webhook"
name = "pager"
url = "http://127.0.0.1:{server.server_port}/hook"
timeout = "2s"
"""
        with PipelineRun(config, plugins=[mypkg]) as run:
            assert run.sink("pager").timeout_s == 2.0
            db, chan = run.feed(
                Event(pid=7, comm="api", wait_reason="chan receive", start_ns=0, end_ns=300_000_000,
                      stack_summary=["database/sql.(*DB).conn"], extra={"stall": "park"}),
                Event(pid=7, comm="api", wait_reason="chan receive", start_ns=0, end_ns=300_000_000,
                      stack_summary=["main.worker"], extra={"stall": "park"}))
            assert (db.cause, chan.cause) == ("db_wait", "channel")
            alerts = run.flush_alerts()
        # Closing drained the sink's durable queue: every alert reached the webhook, no stall event.
        assert {a["cause"] for a in server.got} == {a.cause for a in alerts} == {"db_wait", "channel"}
        assert all(a["kind"] == "alert" for a in server.got)
    finally:
        server.shutdown()
