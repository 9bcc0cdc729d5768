"""A sampled stall says which request it was (``lgf.golang.httpserve`` in the goroutine sampler):
real BPF, the real ``tracehttp`` fixture (a net/http server whose ``/hold`` handler prints its
``*http.Request`` and waits), Go 1.21, 1.25 and 1.27, with DWARF and stripped.

The uprobe source runs with ``goroutine_tier = "on_stall"`` and the host's arming left without
the tier's callback (``services.arming.unregister``), so the goroutine tier is never attached and
every stall here is the sampler's report: what it carries was read from the parked goroutine's
own frames, nowhere else. Two requests go over one keep-alive connection, so the second is read
from a ``serve`` frame that served the first a moment before (a stale slot would name the first);
two held at once on two connections each name their own. A stall that serves no request carries
none. The only time bounds are liveness deadlines.
"""

from __future__ import annotations

import http.client
import json
import threading

import pytest

from lgf.golang import goroutine_stack, httpreq, httpserve
from lgf.golang.gobinary import open_binary
from lgf.golang.gstatus import G_WAITING
from lgf.golang.runtime_reader import RuntimeReader, Unreadable, allg_pointers, read_g_fields
from lgf.sources.uprobe import UprobeOptions, UprobeSource
from lgf.testing import EventCollector
from support.gobuild import GO_VERSIONS, build_go
from support.stallfixture import STALLS_SRC, StallFixture, run_context, wait_attached
from support.tracehttp import TRACEHTTP, TraceHTTP
from support.wait import poll_until

pytestmark = pytest.mark.bpf

INTERVAL_NS = 20_000_000
LIVENESS_S = 120
TRACES = ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
          "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")


def sampler_only(exe):
    """A started uprobe source on ``exe`` whose cheap tier never arms the goroutine tier, with
    trace_context's capture on (as the enricher switches it on); stop() it."""
    ctx = run_context("50ms", exe=[str(exe)])
    ctx.services.trace_capture.enable()
    src = UprobeSource(UprobeOptions(goroutine_tier="on_stall", sample_interval=INTERVAL_NS), ctx)
    events = EventCollector()
    src.start(events)
    ctx.services.arming.unregister(src.tier.request)  # the sampler reports every stall
    return src, events, ctx


def parks_of(events, pid: int, goid: int) -> list:
    return [e for e in events.of_pid(pid) if e.goid == goid and e.extra.get("stall") == "park"]


def requests_found(ctx) -> int:
    return int(ctx.stats.total("lgf_sampler_requests_found_total"))


def missing(ctx) -> int:
    return int(ctx.stats.total("lgf_sampler_request_missing_total"))


class KeepAlive:
    """One HTTP/1.1 connection to the fixture; ``hold(traceparent)`` sends GET /hold on it in the
    background and returns what the handler printed ({"req", "goid"}); ``release()`` lets it answer."""

    def __init__(self, app: TraceHTTP):
        self.app = app
        self.conn = http.client.HTTPConnection(app.host, app.port, timeout=LIVENESS_S)
        self.thread: threading.Thread | None = None

    def hold(self, traceparent: str) -> dict:
        def run():
            self.conn.request("GET", "/hold", headers={"traceparent": traceparent})
            self.conn.getresponse().read()
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        return json.loads(self.app.proc.stdout.readline())

    def release(self) -> None:
        self.app.release()
        self.join()

    def join(self) -> None:
        """Until the response came (a release lets any one held handler answer)."""
        self.thread.join(timeout=LIVENESS_S)
        assert not self.thread.is_alive()

    def close(self) -> None:
        self.conn.close()


@pytest.mark.parametrize("stripped", [False, True], ids=["dwarf", "stripped"])
@pytest.mark.parametrize("version", GO_VERSIONS)
def test_a_sampled_stall_carries_its_request_method_path_and_traceparent(bpf_ok, go_toolchains, version, stripped):
    exe = build_go(TRACEHTTP, version, ldflags="-X main.copy=sampler-request", strip=stripped)
    src, events, ctx = sampler_only(exe)
    try:
        with TraceHTTP(exe) as app:
            wait_attached(src, app.pid)
            conn = KeepAlive(app)
            held = []
            try:
                for traceparent in TRACES:  # one connection: the second request reuses serve's frame
                    before = requests_found(ctx)
                    held.append(conn.hold(traceparent))
                    # Its request is read once the park crosses the threshold, while it is parked.
                    poll_until(lambda b=before: requests_found(ctx) > b or missing(ctx), LIVENESS_S, 0.02)
                    conn.release()
                    n = len(held)  # one report per request, all by the one serving goroutine
                    poll_until(lambda n=n: len(parks_of(events, app.pid, held[0]["goid"])) >= n, LIVENESS_S, 0.02)
            finally:
                conn.close()
    finally:
        src.stop()
    assert {h["goid"] for h in held} == {held[0]["goid"]}, "keep-alive: one serving goroutine"
    got = parks_of(events, app.pid, held[0]["goid"])
    assert len(got) == 2, [(e.duration_ns, e.extra) for e in got]
    for ev, h, traceparent in zip(sorted(got, key=lambda e: e.start_ns), held, TRACES, strict=True):
        assert ev.extra["precision"] == "sampled" and ev.scope == "request", ev.extra
        assert "http_request_addr" in ev.extra, ctx.stats.snapshot().get("lgf_sampler_request_missing_total")
        assert ev.extra["http_request_addr"] == int(h["req"], 16), (hex(ev.extra["http_request_addr"]), h)
        assert (ev.http_method, ev.http_path) == ("GET", "/hold")
        assert ev.extra["traceparent"] == traceparent
    assert not missing(ctx) and requests_found(ctx) == 2


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_requests_held_at_once_each_carry_their_own(bpf_ok, go_toolchains, version):
    """Two handlers parked at the same time, on two connections: each sampled stall names its
    own request (the one its goroutine printed), never the other's."""
    exe = build_go(TRACEHTTP, version, ldflags="-X main.copy=sampler-request")
    src, events, ctx = sampler_only(exe)
    conns = []
    try:
        with TraceHTTP(exe) as app:
            wait_attached(src, app.pid)
            before = requests_found(ctx)
            try:
                held = {}
                for traceparent in TRACES:
                    conns.append(KeepAlive(app))
                    held[traceparent] = conns[-1].hold(traceparent)
                poll_until(lambda: requests_found(ctx) >= before + 2 or missing(ctx), LIVENESS_S, 0.02)
                for _ in conns:
                    app.release()
                for conn in conns:
                    conn.join()
                for h in held.values():
                    poll_until(lambda g=h["goid"]: parks_of(events, app.pid, g), LIVENESS_S, 0.02)
            finally:
                for conn in conns:
                    conn.close()
    finally:
        src.stop()
    assert len({h["goid"] for h in held.values()}) == 2
    for traceparent, h in held.items():
        (ev,) = parks_of(events, app.pid, h["goid"])
        assert ev.extra["http_request_addr"] == int(h["req"], 16), (ev.extra, h)
        assert ev.extra["traceparent"] == traceparent
    assert not missing(ctx)


def test_a_stall_that_serves_no_request_carries_none(bpf_ok, go_toolchains):
    """A lock stall outside net/http: no request scope, so nothing is looked for and none is
    reported (the stalls fixture links no net/http server at all)."""
    exe = build_go(STALLS_SRC, GO_VERSIONS[-1], ldflags="-X main.privateCopy=sampler-request")
    src, events, ctx = sampler_only(exe)
    try:
        with StallFixture(exe, "mutex", "-n", "1") as fx:
            wait_attached(src, fx.pid)
            (res,) = fx.go()
            (ev, *_) = events.wait_for(lambda e: e.pid == fx.pid and e.goid == res["goid"], timeout=LIVENESS_S)
    finally:
        src.stop()
    assert ev.extra["precision"] == "sampled" and ev.scope != "request"
    assert (ev.http_method, ev.http_path) == ("", "")
    assert "http_request_addr" not in ev.extra and "traceparent" not in ev.extra


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_the_tables_say_what_dwarf_says(go_toolchains, version):
    """For Go 1.21-1.27 the offsets come from the tables (a DWARF walk would cost 1-2 s while the
    park runs out): each toolchain's own DWARF agrees with them."""
    binary = open_binary(build_go(TRACEHTTP, version, ldflags="-X main.copy=sampler-request"))
    assert binary.has_dwarf
    assert httpserve.dwarf_offsets(binary) == httpserve.offsets_of(binary) == {**httpreq.LAYOUT, **httpserve.LAYOUT}


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_frames_that_hold_no_response_are_refused(go_toolchains, version):
    """httpserve against a live goroutine parked in a handler: its serve frame gives the request
    the handler printed; the same search over a frame that holds no ``*response`` (the innermost,
    runtime.gopark's, given as serve's) finds nothing plausible and refuses, never guesses."""
    exe = build_go(TRACEHTTP, version, ldflags="-X main.copy=sampler-request", strip=True)
    with TraceHTTP(exe) as app:
        conn = KeepAlive(app)
        try:
            h = conn.hold(TRACES[0])
            reader = RuntimeReader(app.pid)
            binary = reader.binary
            pcs, bounds, stack = parked_stack(reader, h["goid"])
            found = httpserve.find_request(reader, binary, pcs, bounds, stack)
            assert (found.addr, found.method, found.path) == (int(h["req"], 16), "GET", "/hold")
            i = httpserve.serve_frame(binary, reader.bias, pcs)
            wrong = list(bounds)
            wrong[i] = bounds[0]
            with pytest.raises(Unreadable, match="no_response"):
                httpserve.find_request(reader, binary, pcs, wrong, stack)
            with pytest.raises(Unreadable, match="no_serve_frame"):  # a stack without serve
                httpserve.find_request(reader, binary, pcs[:i], bounds[:i], stack)
            conn.release()
        finally:
            conn.close()
            reader.close()


def parked_stack(reader, goid: int):
    """(pcs, bounds, (sp, stack.hi)) of goroutine ``goid``, parked (polled until it is)."""
    binary = reader.binary
    sched, stk = binary.field_offset("g", "sched"), binary.field_offset("g", "stack")
    names = {"goid": binary.field_offset("g", "goid"), "hi": stk + binary.field_offset("stack", "hi"),
             "pc": sched + binary.field_offset("gobuf", "pc"), "sp": sched + binary.field_offset("gobuf", "sp"),
             "bp": sched + binary.field_offset("gobuf", "bp"), "status": binary.field_offset("g", "atomicstatus")}
    order = sorted(names, key=names.get)
    fields = [(names[n], "I" if n == "status" else "Q") for n in order]
    result = []

    def found() -> bool:
        for row in read_g_fields(reader, allg_pointers(reader, 100_000), fields):
            g = dict(zip(order, row[1:], strict=True))
            if g["goid"] == goid and g["status"] == G_WAITING:
                bounds: list = []
                pcs, complete = goroutine_stack.walk(reader, g["pc"], g["bp"], g["sp"], g["hi"], bounds=bounds)
                if complete and httpserve.serve_frame(binary, reader.bias, pcs) is not None:
                    result[:] = [pcs, bounds, (g["sp"], g["hi"])]
                    return True
        return False

    poll_until(found, LIVENESS_S, 0.02)
    return result
