"""Trace context, service names, the program's own stack summary and the topology path: the parts
that need no running program (tests/test_trace_context_bpf.py drives them end to end)."""

from __future__ import annotations

import io

import pytest

from lgf import config as cfg
from lgf.alerts import AlertEngine
from lgf.errors import ConfigErrors
from lgf.event import Event
from lgf.golang.service import default_service, name_of_module
from lgf.golang.symbols import Modules, modules_of_file, short_name, stack_summary
from lgf.sinks.stdout import StdoutOptions, StdoutSink
from lgf.sinks.wecom_format import alert_messages
from lgf.stats import Stats
from lgf.tracecontext import ids_from_labels, parse_traceparent
from support.gobuild import GO_VERSIONS
from support.tracehttp import tracehttp

MS = 1_000_000
TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


# -- traceparent and labels -------------------------------------------------------------------------

def test_a_valid_traceparent_gives_its_trace_and_parent_span():
    assert parse_traceparent(TP) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert parse_traceparent(" " + TP + " ") is not None  # OWS around a header value
    assert parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later") is not None


@pytest.mark.parametrize("bad", [
    "", "garbage", TP.upper(), TP[:-1], TP + "-x",                        # case, length, version-00 extras
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",            # version ff is invalid
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",            # all-zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",            # all-zero span id
    "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",            # not hex
])
def test_a_malformed_traceparent_gives_nothing(bad):
    assert parse_traceparent(bad) is None


def test_tracing_libraries_labels_give_ids_and_nothing_else_does():
    assert ids_from_labels({"span_id": "00f067aa0ba902b7", "span_name": "GET /x"}) == ("", "00f067aa0ba902b7")
    assert ids_from_labels({"span id": "1234567890", "local root span id": "99"}) == ("", "00000000499602d2")
    assert ids_from_labels({"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}) == ("4bf92f3577b34da6a3ce929d0e0e4736", "")
    assert ids_from_labels({"route": "/order", "tenant": "acme"}) == ("", "")
    assert ids_from_labels({"span_id": "not-an-id", "trace_id": "0" * 32}) == ("", "")


# -- service names ------------------------------------------------------------------------------------

def test_a_service_is_named_by_its_main_module():
    assert name_of_module("lgf.test/tracehttp") == "tracehttp"
    assert name_of_module("github.com/acme/checkout/v2") == "checkout"
    assert name_of_module("command-line-arguments") == "" and name_of_module("") == ""


def test_the_default_service_comes_from_the_binary_else_the_comm(go_toolchains, tmp_path):
    exe = str(tracehttp(GO_VERSIONS[-1]))
    assert default_service(0, exe, "tracehtt") == "tracehttp"
    (tmp_path / "script").write_text("#!/bin/sh\n")
    assert default_service(0, str(tmp_path / "script"), "script") == "script"
    assert default_service(0, "", "nothing") == "nothing"


def engine(tmp_path, extra: dict | None = None):
    raw = {"lgf": {"env": "prod", "spool_dir": str(tmp_path), "threshold": "50ms", "report_interval": "10s"}}
    raw.update(extra or {})
    return AlertEngine(cfg.validate(raw, {}), Stats(), clock=lambda: 0)


def stall(dur_ms, exe, comm="tracehtt", trace_id="", span_id="", labels=None):
    return Event(pid=1, comm=comm, exe=exe, goid=7, cause="lock", start_ns=0, end_ns=dur_ms * MS,
                 duration_ns=dur_ms * MS, trace_id=trace_id, span_id=span_id, labels=labels or {},
                 stack_summary=["inventory.(*Client).Reserve"], extra={"stall": "park"})


def test_an_alert_carries_its_worst_stalls_trace_and_the_programs_name(go_toolchains, tmp_path):
    exe = str(tracehttp(GO_VERSIONS[-1]))
    eng = engine(tmp_path)
    eng.observe(stall(80, exe, trace_id="a" * 32, span_id="b" * 16, labels={"route": "/a"}))
    eng.observe(stall(300, exe, trace_id="c" * 32, span_id="d" * 16, labels={"route": "/worst"}))
    eng.observe(stall(90, exe))
    (alert,) = eng.due(2**63 - 1)
    assert (alert.trace_id, alert.span_id, alert.labels) == ("c" * 32, "d" * 16, {"route": "/worst"})
    assert alert.extra["service"] == "tracehttp"
    assert eng.recent()["windows"][0]["trace_id"] == "c" * 32


def test_a_services_entry_still_wins_and_an_untraced_worst_stall_gives_no_trace_id(go_toolchains, tmp_path):
    exe = str(tracehttp(GO_VERSIONS[-1]))
    eng = engine(tmp_path, {"alerts": {"services": {"shop": "^tracehtt"}}})
    eng.observe(stall(80, exe, trace_id="a" * 32))
    eng.observe(stall(300, exe))
    (alert,) = eng.due(2**63 - 1)
    assert alert.extra["service"] == "shop" and alert.trace_id == "" and alert.span_id == ""


# -- the program's own stack summary -------------------------------------------------------------------

REVERSE_PROXY = ["runtime.gopark", "runtime.netpollblock", "internal/poll.runtime_pollWait",
                 "internal/poll.(*FD).Read", "net.(*netFD).Read", "net.(*conn).Read",
                 "net/http.(*persistConn).Read", "bufio.(*Reader).fill", "github.com/acme/kit/proxy.(*RP).serve",
                 "github.com/acme/gw/route.(*Table).forward", "github.com/acme/gw/route.(*Table).forward",
                 "main.(*server).ServeHTTP", "net/http.serverHandler.ServeHTTP", "net/http.(*conn).serve"]


def test_the_summary_is_the_programs_own_frames_then_its_dependencies():
    frames = [{"func": f} for f in REVERSE_PROXY]
    mods = Modules("github.com/acme/gw", ("github.com/acme/kit",))
    assert stack_summary(frames, 3, mods) == ["route.(*Table).forward", "main.(*server).ServeHTTP",
                                              "proxy.(*RP).serve"]
    assert stack_summary(frames, 1, mods) == ["route.(*Table).forward"]
    std_only = [{"func": f} for f in REVERSE_PROXY[:8]]
    assert stack_summary(std_only, 3, mods) == ["net.(*netFD).Read", "net.(*conn).Read", "http.(*persistConn).Read"]
    assert stack_summary([{"func": "runtime.gcBgMarkWorker"}], 3, mods) == ["runtime.gcBgMarkWorker"]


def test_short_names_are_pkg_type_method():
    assert short_name("lgf.test/tracehttp/orders.(*Service).Place") == "orders.(*Service).Place"
    assert short_name("gopkg.in/yaml%2ev3.(*parser).parse") == "yaml%2ev3.(*parser).parse"
    assert short_name("main.main.func2.1") == "main.main.func2.1"
    assert short_name("example.com/m.F[go.shape.int]") == "m.F[...]"


def test_a_binarys_modules_come_from_its_build_info(go_toolchains):
    mods = modules_of_file(tracehttp(GO_VERSIONS[0]))
    assert mods is not None and mods.main == "lgf.test/tracehttp"
    assert mods.tier("lgf.test/tracehttp/orders.(*Service).Place") == 0 and mods.tier("main.main") == 0
    assert mods.tier("net/http.(*conn).serve") == 2 and mods.tier("runtime.gopark") == 3


# -- topology path, WeCom and stdout ---------------------------------------------------------------------

def test_the_topology_path_is_carried_and_shown_in_order(tmp_path):
    eng = engine(tmp_path, {"alerts": {"topology": {"path": ["api-gw", "order-svc", "inventory-svc"],
                                                    "region": "sh"}}})
    ev = stall(300, "/nonexistent/bin", comm="inv", trace_id="c" * 32, span_id="d" * 16,
               labels={"tenant": "acme"})
    eng.observe(ev)
    assert ev.topology["path"] == ["api-gw", "order-svc", "inventory-svc"]
    (alert,) = eng.due(2**63 - 1)
    assert alert.topology["path"] == ["api-gw", "order-svc", "inventory-svc"]
    (msg,) = alert_messages(alert.to_dict(), "markdown")
    assert "path: api-gw → order-svc → inventory-svc" in msg and "topology: host=" in msg and "path=" not in msg
    assert f"trace: {'c' * 32} · span: {'d' * 16}" in msg and "labels: tenant=acme" in msg


def test_a_topology_path_that_is_not_a_list_of_names_is_a_config_error(tmp_path):
    with pytest.raises(ConfigErrors, match="topology.path"):
        engine(tmp_path, {"alerts": {"topology": {"path": "api-gw,order-svc"}}})


def test_the_stdout_line_ends_with_the_trace_when_there_is_one():
    out = io.StringIO()
    sink = StdoutSink(StdoutOptions(), stream=out)
    sink.send(stall(120, "/x", trace_id="c" * 32, span_id="d" * 16).finish())
    sink.send(stall(120, "/x").finish())
    traced, untraced = out.getvalue().splitlines()
    assert traced.endswith(f"inventory.(*Client).Reserve trace={'c' * 32} span={'d' * 16}")
    assert "trace=" not in untraced


def test_a_metrics_series_of_a_running_program_is_named_by_its_module(go_toolchains, tmp_path):
    # /metrics knows a histogram's pid and comm only (no exe): the name comes from /proc/PID/exe
    import types

    from lgf.http import LgfCollector
    from support.tracehttp import TraceHTTP

    with TraceHTTP(tracehttp(GO_VERSIONS[0])) as app:
        source = types.SimpleNamespace(histograms=lambda: [{
            "labels": {"pid": str(app.pid), "comm": "tracehttp-go1.2", "stall": "park", "wait_reason": "sleep"},
            "log2_us": [0, 3]}])
        families = list(LgfCollector(Stats(), [source], engine(tmp_path)).collect())
    (hist,) = [f for f in families if f.name == "lgf_stall_duration_seconds"]
    assert {s.labels["service"] for s in hist.samples} == {"tracehttp"}
