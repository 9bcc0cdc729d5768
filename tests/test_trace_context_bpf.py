"""End to end with real BPF: `lgf run` with the shipped tiers (goroutine_tier = "on_stall" and the
sampler), the symbolizer and trace_context enrichers, against tests/goapps/tracehttp, a net/http
server whose /order handler sets pprof labels (pprof.Do) and then stalls on a lock, a channel or a
slow upstream on 127.0.0.1, on Go 1.21, 1.25 and 1.27.

What a user sees in the JSONL file: each handler stall carries the request's labels; a request
that carries a traceparent header gives its trace id and span id, and its method and path (from
the request the goroutine tier recorded: ``extra["http_request_addr"]``); the first stall, seen by
the sampler before the tier was armed, has its labels and its request too (found in the parked
goroutine's own frames: lgf.golang.httpserve), so its trace id, method and path; a request
without the header gives an empty trace_id, or only the span a tracing library put in the labels;
the summary starts with the handler's own frames; ``service`` is the program's name; an alert's
trace id is its worst stall's.

Nothing here depends on the host being quiet: the traced requests are sent only once the goroutine
tier is attached (lgf logs "goroutine tier armed" after attaching it), and alone, so the alert of
their group is traced by construction (not by making them stall longer than untraced ones); the
untraced requests follow once that alert is written. The only time bounds are liveness deadlines.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from test_e2e_uprobe import LgfRun

from support.cli import write
from support.gobuild import GO_VERSIONS, build_go
from support.tracehttp import PARENT_SPAN_ID, TRACE_ID, TRACEHTTP, TRACEPARENT, TraceHTTP

pytestmark = pytest.mark.bpf

LABEL_SPAN = "1111222233334444"
STALL_MS = 150
HANDLER_CAUSES = {"lock": "lock", "chan": "channel", "upstream": "select"}
LIVENESS_S = 300
"""How long to wait for lgf to do something before calling it hung. Nothing is measured by it:
on a loaded 2-core host lgf's start (Python, the BPF compile) took 41 s of wall clock."""


def config_for(tmp_path, pid: int):
    # arm_for: once armed, the tier stays attached for the whole test however slowly it runs.
    out = tmp_path / "events.jsonl"
    config = write(tmp_path / "plugins.toml", f"""
[lgf]
threshold = "50ms"
report_interval = "1s"
spool_dir = "{tmp_path / 'spool'}"

[targets]
pids = [{pid}]

[[sources]]
use = "uprobe"
goroutine_tier = "on_stall"
arm_for = "10m"
sample_interval = "20ms"

[[enrichers]]
use = "symbolizer"

[[enrichers]]
use = "trace_context"

[[classifiers]]
use = "waitreason"

[[sinks]]
use = "file"
path = "{out}"
format = "jsonl"
receive = "both"

[http]
enabled = false
""")
    return config, out


def rows_of(path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


def send(app: TraceHTTP, requests) -> None:
    """Each (tenant, kind, headers) as one GET /order stalling STALL_MS, all at once; returns when all answered."""
    threads = [threading.Thread(target=app.get, args=(f"/order?stall={kind}&ms={STALL_MS}", {"X-Tenant": tenant, **hdrs}))
               for tenant, kind, hdrs in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=LIVENESS_S)


def expected_stall(rows, request) -> bool:
    """The request's handler stall of its kind's cause is in the file."""
    tenant, kind, _ = request
    return any(ev["cause"] == HANDLER_CAUSES[kind] for ev in handler_stalls(rows, tenant))


def order_alerts(rows) -> list[dict]:
    return [r for r in rows if r["kind"] == "alert" and r["group_by"].get("http_path") == "/order"]


def wait_until(done, out, what: str, timeout: float = LIVENESS_S) -> None:
    """Poll the JSONL file until ``done(rows)`` (a liveness bound only: nothing is measured by it)."""
    deadline = time.monotonic() + timeout
    while not done(rows_of(out)):
        assert time.monotonic() < deadline, f"no {what} in {timeout:.0f} s: {rows_of(out)}"
        time.sleep(0.2)


def handler_stalls(rows, tenant: str) -> list[dict]:
    return [r for r in rows if r["kind"] == "stall" and r.get("labels", {}).get("tenant") == tenant
            and r["stack_summary"][:1] == ["inventory.(*Client).Reserve"]]


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_handler_stalls_carry_the_requests_trace_labels_and_own_frames(tmp_path, bpf_ok, go_toolchains, version):
    exe = build_go(TRACEHTTP, version, ldflags="-X main.copy=trace-bpf")  # a binary no other test probes
    with TraceHTTP(exe) as app:
        config, out = config_for(tmp_path, app.pid)
        run = LgfRun(config)
        try:
            run.wait_log(f"tracing pid {app.pid}", timeout=LIVENESS_S)
            # The first stall arms the goroutine tier (the sampler sees it parked, however loaded
            # the host): a /hold handler waits until released. Its event is the sampled one, its
            # labels read by the sampler while it was parked.
            held_line, held = app.hold({"traceparent": TRACEPARENT})
            try:
                run.wait_log("goroutine tier armed", timeout=LIVENESS_S)
            finally:
                app.release()
                held.join(timeout=30)
            # Traced requests first, alone: every alert of theirs is written before an untraced
            # request starts, so its group (by request: GET /order) holds traced stalls only and
            # its trace id is theirs, whichever of them was the worst. (Sent together, an
            # untraced lock request waits behind a traced one's holder of the shared mutex as
            # long as the traced stall lasts, and the group's worst, whose trace id the alert
            # carries, is a coin toss.)
            traced_requests = [(f"t-{kind}", kind, {"traceparent": TRACEPARENT}) for kind in HANDLER_CAUSES]
            send(app, traced_requests)
            wait_until(lambda rows: all(expected_stall(rows, r) for r in traced_requests)
                       and order_alerts(rows), out, "the traced requests' stalls and their alert")
            traced_alerts = order_alerts(rows_of(out))
            untraced_requests = [("no-header", "chan", {}), ("label-span", "lock", {"X-Span-Label": LABEL_SPAN})]
            send(app, untraced_requests)
            requests = traced_requests + untraced_requests
            wait_until(lambda rows: all(expected_stall(rows, r) for r in requests), out,
                       "every request's handler stall")
        finally:
            code = run.stop()
        assert code == 0, "".join(run.lines[-20:])
    rows = rows_of(out)
    stalls = {tenant: handler_stalls(rows, tenant) for tenant, _, _ in requests}
    assert all(stalls.values()), {t: len(s) for t, s in stalls.items()}

    (first,) = [r for r in rows if r["kind"] == "stall" and r["labels"].get("route") == "/hold"]
    assert first["precision"] == "sampled" and first["labels"] == {"route": "/hold", "tenant": "acme"}
    for tenant, kind, _ in requests:
        assert HANDLER_CAUSES[kind] in {ev["cause"] for ev in stalls[tenant]}, (tenant, stalls[tenant])
        for ev in stalls[tenant]:  # (the lock case may also wait on its holder's start: a channel)
            assert ev["stack_summary"][:2] == ["inventory.(*Client).Reserve", "orders.(*Service).Place"]
            assert ev["service"] == "tracehttp"
            assert ev["labels"]["route"] == "/order"
    assert stalls["label-span"][0]["labels"]["span_id"] == LABEL_SPAN
    # No traceparent: no trace id, ever; a span only where a tracing library labelled one.
    assert {e["trace_id"] for e in stalls["no-header"] + stalls["label-span"]} == {""}
    assert {e["span_id"] for e in stalls["no-header"]} == {""}
    assert {e["span_id"] for e in stalls["label-span"]} == {LABEL_SPAN}

    alerts = [r for r in rows if r["kind"] == "alert"]
    assert alerts and all(a["service"] == "tracehttp" for a in alerts)
    by_id = {r["id"]: r for r in rows if r["kind"] == "stall"}
    for alert in alerts:
        worst = by_id[alert["example_event_id"]]
        assert (alert["trace_id"], alert["span_id"]) == (worst["trace_id"], worst["span_id"])

    # The sampler's stall (before the tier was armed): its request, found in the parked
    # goroutine's own frames, is the one the handler printed, with its trace.
    assert first["http_request_addr"] == int(held_line["req"], 16), first
    assert (first["http_method"], first["http_path"]) == ("GET", "/hold")
    assert (first["trace_id"], first["span_id"], first.get("trace_source")) == (TRACE_ID, PARENT_SPAN_ID, "traceparent")
    # Sent after the goroutine tier was attached ("goroutine tier armed" is logged once it is):
    # the tier saw each traced request begin, so each of their stalls has the request's address
    # and the trace id of its header.
    traced = [e for tenant, _, _ in traced_requests for e in stalls[tenant]]
    for ev in traced:
        assert (ev["trace_id"], ev["span_id"], ev.get("trace_source")) == (TRACE_ID, PARENT_SPAN_ID, "traceparent"), \
            {k: ev.get(k) for k in ("labels", "precision", "http_request_addr", "scope", "wait_reason", "stack_summary")}
        assert (ev["http_method"], ev["http_path"]) == ("GET", "/order")
    # The traced requests' alert, written before any untraced request was sent: its worst stall,
    # whichever it was, is a traced one.
    assert [(a["trace_id"], a["span_id"]) for a in traced_alerts] == [(TRACE_ID, PARENT_SPAN_ID)] * len(traced_alerts)

