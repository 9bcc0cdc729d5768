"""The goroutine tier's idle/stall verdict in the kernel, against a real net/http server.

``tests/goapps/bench_server`` has what every server has: an accept loop, keep-alive connections
waiting for their next request (and their client side waiting between responses), a ticker loop;
and on demand a request stalled on a lock, or one whose stack is deeper than lgf walks. With the
goroutine tier on, waits over the threshold are judged in BPF (uprobe.c ``judge_stack``): idle ones
must never become events but must be counted (``idle_waits``, histogram label ``stall="idle"``); the
stalled request must be reported once, with ``scope = "request"`` and the address of its
``*http.Request`` (whose method and path ``lgf.golang.httpreq`` reads back from the live process);
a cut stack must say so. Each verdict is checked against :meth:`lgf.idle.IdleRules.judge` on the symbolized
stack, so the kernel and the Python tiers cannot drift apart.
"""

from __future__ import annotations

import time

import pytest

from lgf.golang.httpreq import read_method_path
from lgf.golang.runtime_reader import RuntimeReader
from lgf.golang.symbols import Symbolizer
from lgf.idle import IdleOptions, IdleRules
from lgf.services import Services
from lgf.sources.uprobe import UprobeOptions, UprobeSource
from lgf.testing import EventCollector as Collector
from support.goapp import LineProgram
from support.gobuild import GO_VERSIONS, GOAPPS, build_go, mutex_wait_reason
from support.stallfixture import outside_bounds, run_context, wait_attached

pytestmark = pytest.mark.bpf

THRESHOLD = "50ms"
ARM_WAIT_S = 10
"""How long an arming asked for may take on a loaded host (measured: 13 ms to 1.8 s)."""


@pytest.fixture(scope="module", params=GO_VERSIONS)
def server_exe(request, bpf_ok, go_toolchains):
    return build_go(GOAPPS / "bench_server", request.param)


def traced(exe, *args: str, **options):
    server = LineProgram(exe, *args)
    src = UprobeSource(UprobeOptions(goroutine_tier="always", **options),
                       run_context(THRESHOLD, pids=[server.pid]))
    events = Collector()
    src.start(events)
    wait_attached(src, server.pid)
    return server, src, events


def functions(exe, pcs) -> list[str]:
    sym = Symbolizer(exe)
    return [f.func for pc in pcs for f in sym.frames(pc)]


def test_idle_server_waits_are_counted_never_reported(server_exe):
    """Keep-alive connections (server and client side), the accept loop and a ticker loop whose
    period is over the threshold all wait past it, again and again: no event, every one counted."""
    server, src, events = traced(server_exe, "-idle", "4", "-tick", "80ms")
    try:
        assert "on_serve_http" in src.probe_addresses(server.pid), "net/http binary: request probe on"
        for _ in range(3):  # each round ends the idle waits the round before began
            server.cmd("poke")
            server.cmd("connect")
            time.sleep(0.2)
        server.cmd("poke")
        server.cmd("connect")
        time.sleep(0.3)
        counters = src.runtime_counters(server.pid)
        hists = [h for h in src.histograms() if h["labels"]["pid"] == str(server.pid)]
        reported = events.of_pid(server.pid)
    finally:
        src.stop()
        server.close()
    assert not reported, [(e.goid, e.wait_reason, e.extra, functions(server_exe, e.pcs)) for e in reported]
    # 3 rounds x (4 server connections + 4 client read loops + 4 write loops + accept loop), and
    # the ticker loop's ticks: at the least the server connections and the accept loop.
    assert counters["idle_waits"] >= 3 * (4 + 1), counters
    idle = [h for h in hists if h["labels"]["stall"] == "idle"]
    assert sum(sum(h["log2_us"]) for h in idle) == counters["idle_waits"], (idle, counters)
    over = sum(sum(h["log2_us"][16:]) for h in idle)  # 2^16 us = 65 ms: over the 50 ms threshold
    assert over == counters["idle_waits"], "only waits over the threshold are judged"
    assert {"IO wait", "chan receive"} <= {h["labels"]["wait_reason"] for h in idle}, idle
    assert counters["stack_cut"] == 0


def test_request_stalled_on_a_lock_is_one_event_with_request_scope(server_exe):
    server, src, events = traced(server_exe, "-idle", "2")
    try:
        res = server.cmd("lock 200")
        found = events.wait_for(lambda e: e.pid == server.pid and e.goid == res["goid"]
                                and e.wait_reason.startswith(mutex_wait_reason(server_exe)))
        assert found, [(e.goid, e.wait_reason) for e in events.of_pid(server.pid)]
        (ev,) = found
        req = ev.extra.get("http_request_addr", 0)
        reader = RuntimeReader(server.pid)  # the handler keeps its request alive 300 ms more
        try:
            method, path = read_method_path(reader, reader.binary, req)
        finally:
            reader.close()
    finally:
        src.stop()
        server.close()
    assert ev.extra["scope"] == "request" and ev.extra["verdict"] == "stall", ev.extra
    assert "stack_cut" not in ev.extra
    assert not outside_bounds(res, ev.start_ns, ev.end_ns), (ev.start_ns, ev.end_ns, res)
    assert (method, path) == ("GET", "/lock"), (hex(req), method, path)
    verdict = IdleRules().judge(functions(server_exe, ev.pcs), ev.wait_reason)
    assert (verdict.kind, verdict.scope, verdict.cut) == ("stall", "request", False), verdict


def test_cut_stack_says_so_and_stays_a_stall(server_exe):
    """A handler 200 frames deep sleeps: the walk (max_frames = 64) stops before the goroutine's
    start, so the request marker is out of sight: a stall with ``stack_cut``, as lgf.idle says."""
    server, src, events = traced(server_exe, "-idle", "1")
    try:
        res = server.cmd("deep 200 100")
        found = events.wait_for(lambda e: e.pid == server.pid and e.goid == res["goid"]
                                and e.wait_reason == "sleep")
        cut = src.runtime_counters(server.pid)["stack_cut"]
    finally:
        src.stop()
        server.close()
    assert found, [(e.goid, e.wait_reason) for e in events.of_pid(server.pid)]
    ev = found[0]
    assert ev.extra["stack_cut"] is True and ev.extra["verdict"] == "stall", ev.extra
    assert "scope" not in ev.extra
    assert len(ev.pcs) == UprobeOptions().max_frames
    assert cut >= 1
    funcs = functions(server_exe, ev.pcs)
    assert funcs.count("main.recurse") > 50, funcs
    assert IdleRules().judge(funcs, ev.wait_reason).cut


def test_kernel_idle_verdicts_agree_with_lgf_idle(server_exe):
    """With ``report_idle`` the kernel sends its idle waits too (``verdict = "idle"``): each one's
    symbolized stack must be idle by :meth:`IdleRules.judge` as well."""
    server = LineProgram(server_exe, "-idle", "2", "-tick", "80ms")
    ctx = run_context(THRESHOLD, pids=[server.pid])
    ctx.config.sections = {"idle": IdleOptions(report_idle=True)}
    ctx.services = Services.for_config(ctx.config)  # the host makes its services from its config
    src = UprobeSource(UprobeOptions(goroutine_tier="always"), ctx)
    events = Collector()
    src.start(events)
    try:
        wait_attached(src, server.pid)
        for _ in range(3):
            server.cmd("poke")
            server.cmd("connect")
            time.sleep(0.2)
        time.sleep(0.2)
        idle = [e for e in events.of_pid(server.pid) if e.extra.get("verdict") == "idle"]
    finally:
        src.stop()
        server.close()
    assert len(idle) >= 2 * 3, [(e.goid, e.wait_reason) for e in events.of_pid(server.pid)]
    rules = IdleRules()
    for ev in idle:
        funcs = functions(server_exe, ev.pcs)
        assert rules.judge(funcs, ev.wait_reason).idle, (ev.wait_reason, funcs)
    assert any(e.extra.get("decided_by") == "loop head" for e in idle), "the 80 ms ticker's waits"


def test_a_syscall_wait_arms_the_tier_only_when_it_is_a_stall(bpf_ok, go_toolchains):
    """The tracepoint source arms the goroutine tier on a blocking syscall past the threshold only
    if lgf.idle calls it a stall: the same blocked read arms with the default rules and does not
    once ``syscall.Read`` is declared an idle site."""
    from lgf.sources.tracepoint import TracepointOptions, TracepointSource
    from support.stallfixture import STALLS_SRC, StallFixture

    exe = build_go(STALLS_SRC, GO_VERSIONS[1], ldflags="-X main.privateCopy=1")
    armed = {}
    for sites in (["syscall.Read"], []):
        ctx = run_context(THRESHOLD, exe=[str(exe)])
        ctx.config.sections = {"idle": IdleOptions(idle_sites=sites)}
        ctx.services = Services.for_config(ctx.config)  # the host makes its services from its config
        up = UprobeSource(UprobeOptions(goroutine_tier="on_stall", sample_interval=0), ctx)
        tp = TracepointSource(TracepointOptions(), ctx)
        events = Collector()
        up.start(events)
        tp.start(events)
        try:
            with StallFixture(exe, "pipe") as fx:
                wait_attached(up, fx.pid)
                wait_attached(tp, fx.pid)
                (res,) = fx.go()
                seen = events.wait_for(lambda e, fx=fx, res=res: e.pid == fx.pid and e.goid == res["goid"]
                                       and e.syscall == "read")
                # Arming runs on a thread of its own (the one arming path): give it time to finish.
                deadline = time.monotonic() + ARM_WAIT_S
                while "on_execute" not in up.probe_addresses(fx.pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                armed[tuple(sites)] = "on_execute" in up.probe_addresses(fx.pid)
        finally:
            tp.stop()
            up.stop()
        assert seen, "the tracepoint source reports the blocked read either way"
    assert armed == {("syscall.Read",): False, (): True}, armed
