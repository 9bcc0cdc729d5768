"""Stalls, not waits, on a server that idles the way real ones do (issue 9): real BPF, the real
``tests/goapps/idleserver`` fixture, every supported Go toolchain, the uprobe source as shipped
(``goroutine_tier = "on_stall"`` with the sampler), events passed through the same scope step
the pipeline runs (``plugins/scope.py``).

What must hold: the idle goroutines (accept loop, keep-alive connections, the proxy's idle
upstream connections, a worker pool waiting for jobs, a ticker loop, a sleep loop, ``select {}``,
a context waiter, a main goroutine that sleeps at start-up, two service loops one call below
their goroutine's start, as Debian's Alertmanager runs them) never arm the goroutine tier and are
never events, only counted; each slow request is reported once per goroutine that really
waited, the handler's wait with ``scope = "request"``, a worker's sleep mid-job as a plain stall,
and the awaiter's select in a loop of its own, called from its loop over jobs, as a stall too.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lgf.golang.httpreq import read_method_path
from lgf.golang.runtime_reader import RuntimeReader
from lgf.plugins.scope import ScopeEnricher
from lgf.sources.uprobe import UprobeOptions, UprobeSource
from lgf.testing import EventCollector
from support.fixtureproc import FixtureProcess
from support.goapp import http_get
from support.gobuild import GO_VERSIONS, GOAPPS, build_go
from support.stallfixture import run_context, wait_attached

pytestmark = pytest.mark.bpf

SRC = GOAPPS / "idleserver"
INTERVAL_NS = 20_000_000
UPSTREAM_DELAY = 0.15
KEEPALIVE_CLIENTS = 4


class SlowUpstream:
    """The proxy's upstream on 127.0.0.1: answers ``/proxy/slow...`` after ``UPSTREAM_DELAY``,
    anything else at once (keep-alive, HTTP/1.1)."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                if self.path.startswith("/proxy/slow"):
                    time.sleep(UPSTREAM_DELAY)
                body = b"upstream\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class IdleServer(FixtureProcess):
    """One run of the fixture; ``lines`` collects what it prints."""

    def __init__(self, exe, upstream: str, startsleep: str = "0s"):
        self.proc = subprocess.Popen([str(exe), "-startsleep", startsleep, "-upstream", upstream],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = json.loads(self.proc.stdout.readline())["pid"]
        self.lines: list[dict] = []
        self._cond = threading.Condition()
        self.addr = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            obj = json.loads(line)
            with self._cond:
                self.lines.append(obj)
                self.addr = obj.get("addr", self.addr)
                self._cond.notify_all()

    def wait_line(self, pred, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for obj in self.lines:
                    if pred(obj):
                        return obj
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"fixture never printed the line wanted: {self.lines}")
                self._cond.wait(left)

    def get(self, path: str, conn: http.client.HTTPConnection | None = None) -> str:
        return http_get(self.addr, path, conn)


@pytest.fixture(scope="module", params=GO_VERSIONS)
def served(request, bpf_ok, go_toolchains):
    """(source, collector, fixture binary, ctx, upstream): on_stall with the sampler, as shipped."""
    exe = build_go(SRC, request.param)
    ctx = run_context("50ms", exe=[str(exe)])
    src = UprobeSource(UprobeOptions(goroutine_tier="on_stall", sample_interval=INTERVAL_NS), ctx)
    events = EventCollector()
    src.start(events)
    upstream = SlowUpstream()
    warm = IdleServer(exe, upstream.url)  # the first attach compiles the BPF program (seconds)
    try:
        wait_attached(src, warm.pid)
    finally:
        warm.close()
    yield src, events, exe, ctx, upstream, request.param
    src.stop()
    upstream.close()


def armed(src, pid: int) -> bool:
    return "on_execute" in src.probe_addresses(pid)


def wait_armed(src, pid: int) -> None:
    """Until the goroutine tier's probes are all attached (the sampler asked for it)."""
    deadline = time.monotonic() + 20
    while not armed(src, pid):
        assert time.monotonic() < deadline, "the slow request never armed the goroutine tier"
        time.sleep(0.05)


def wait_sampled(ctx, samples: int) -> None:
    start = ctx.stats.total("lgf_sampler_samples_total")
    deadline = time.monotonic() + 30
    while ctx.stats.total("lgf_sampler_samples_total") < start + samples and time.monotonic() < deadline:
        time.sleep(INTERVAL_NS / 1e9)


def judged(events, ctx) -> tuple[list, list]:
    """(reported, held back): each event through the host's scope step, as ``lgf run`` does, then
    the pipeline's rule: an idle verdict is held back (``[idle] report_idle`` is off)."""
    step = ScopeEnricher(None, ctx)
    reported, held = [], []
    for ev in events:
        step.lgf_enrich(ev)
        (held if ev.extra.get("verdict") == "idle" else reported).append(ev)
    return reported, held


def idle_sites(ctx) -> set[str]:
    return {labels["site"] for labels, value, _ in ctx.stats.snapshot().get("lgf_idle_waits_total", [])
            if labels.get("source") == "sampler" and value}


def keepalive_clients(fx: IdleServer) -> list[http.client.HTTPConnection]:
    """Clients that make one request each and then keep their connection open, idle."""
    conns = [http.client.HTTPConnection(fx.addr, timeout=30) for _ in range(KEEPALIVE_CLIENTS)]
    for c in conns:
        assert fx.get("/fast", c) == "hello\n"
    return conns


def test_an_idle_server_never_arms_and_reports_nothing(served, caplog):
    caplog.set_level("INFO", logger="lgf")
    src, events, exe, ctx, upstream, _version = served
    fx = IdleServer(exe, upstream.url, startsleep="3s")
    try:
        wait_attached(src, fx.pid)
        ready = fx.wait_line(lambda o: o.get("ready"))
        assert "loop head: main.main" in idle_sites(ctx), "main's start-up sleep was seen, as idle"
        assert not armed(src, fx.pid), ["a program that sleeps at start-up is not armed", caplog.messages]
        assert ready
        conns = keepalive_clients(fx)
        assert fx.get("/proxy/fast") == "upstream\n"  # leaves an idle connection to the upstream
        wait_sampled(ctx, 75)  # 1.5 s: every idle goroutine has been parked well past 50 ms
        assert not armed(src, fx.pid), ["idle waits must never arm the goroutine tier", caplog.messages]
        assert not events.of_pid(fx.pid), [(e.goid, e.wait_reason, e.extra) for e in events.of_pid(fx.pid)]
        sites = idle_sites(ctx)
        for c in conns:
            c.close()
    finally:
        fx.close()
    assert {"net.(*TCPListener).Accept", "loop head: main.worker", "loop head: main.tickerLoop",
            "loop head: main.sleepLoop", "select (no cases)", "loop head: main.main.func2",
            "net/http.(*persistConn).readLoop", "net/http.(*persistConn).writeLoop",
            "service loop: main.(*maintainer).run", "service loop: main.(*dispatcher).run"} <= sites, sites
    assert sites & {"net/http.(*connReader).Read", "net/http.(*conn).readRequest"}, sites


def test_slow_requests_are_reported_once_per_waiting_goroutine_with_their_scope(served):
    src, events, exe, ctx, upstream, _version = served
    fx = IdleServer(exe, upstream.url)
    try:
        wait_attached(src, fx.pid)
        fx.wait_line(lambda o: o.get("ready"))
        conns = keepalive_clients(fx)
        wait_sampled(ctx, 10)
        assert not armed(src, fx.pid)
        assert fx.get("/proxy/slow/0") == "upstream\n"
        wait_armed(src, fx.pid)  # a handler waiting on the upstream past the threshold arms the tier
        for i in (1, 2):
            assert fx.get(f"/proxy/slow/{i}") == "upstream\n"
        for _ in range(2):
            fx.get("/job?d=150ms")
        fx.get("/await?d=150ms")  # once: the one awaiter would otherwise wait twice
        proxied = [fx.wait_line(lambda o, i=i: o.get("route") == f"/proxy/slow/{i}") for i in range(3)]
        fx.wait_line(lambda o: len([x for x in fx.lines if x.get("route") in ("/job", "/await")]) == 3)
        jobs = [o for o in fx.lines if o.get("route") in ("/job", "/await")]
        for o in proxied + jobs:
            events.wait_for(lambda e, g=o["goid"]: e.pid == fx.pid and e.goid == g)
        for o in jobs:
            events.wait_for(lambda e, g=o["worker_goid"]: e.pid == fx.pid and e.goid == g)
        time.sleep(0.3)
        for c in conns:
            c.close()
        reported, held = judged(events.of_pid(fx.pid), ctx)
        counted = src.runtime_counters(fx.pid).get("idle_waits", 0)  # judged idle in the kernel
    finally:
        fx.close()
    handlers = {o["goid"] for o in proxied + jobs}
    workers = {o["worker_goid"] for o in jobs}
    awaiters = {o["worker_goid"] for o in jobs if o["route"] == "/await"}
    assert len(jobs) == 3 and len(handlers) == 6
    by_goid: dict[int, list] = {}
    for e in reported:
        # A goroutine kept off a CPU past the threshold by a busy host is a real stall
        # (sched_latency) of any goroutine; this test is about which parks are stalls.
        if e.extra.get("stall") != "runnable":
            by_goid.setdefault(e.goid, []).append(e)
    summary = {g: [(e.wait_reason, e.scope, e.extra.get("decided_by"), e.duration_ns) for e in evs]
               for g, evs in by_goid.items()}
    assert set(by_goid) == handlers | workers, (summary, proxied, jobs, [(e.goid, e.wait_reason, e.extra) for e in held])
    for g in handlers:
        assert len(by_goid[g]) == 1, (g, summary, [(e.start_ns, e.end_ns, e.extra) for e in by_goid[g]])
        (ev,) = by_goid[g]
        assert ev.scope == "request" and ev.extra["verdict"] == "stall", summary
        assert ev.extra["decided_by"] == "net/http.serverHandler.ServeHTTP"
        if "http_request_addr" in ev.extra:  # the goroutine tier recorded the request
            assert ev.http_method == "GET" and ev.http_path.startswith(("/proxy/slow/", "/job", "/await"))
    for g in workers:
        assert len(by_goid[g]) == 1, (g, summary, [(e.start_ns, e.end_ns, e.extra) for e in by_goid[g]])
        (ev,) = by_goid[g]
        if g in awaiters:  # a select in await's loop, called from the awaiter's loop: a job's wait
            assert ev.scope == "" and ev.wait_reason == "select", summary
            assert "main.await" in ScopeEnricher(None, ctx).functions_of(ev), "an awaiter mid-job: a stall"
            continue
        assert ev.scope == "" and ev.wait_reason == "sleep", summary
        assert "main.process" in ScopeEnricher(None, ctx).functions_of(ev), "a worker mid-job: a stall"
    # The tier saw idle waits too (accept, keep-alive, transport loops): judged idle in BPF, they
    # are counted there and never sent; any that reach the scope step are held back.
    assert held or counted, "the tier saw idle waits too (accept, keep-alive, transport loops)"
    assert all(e.extra["verdict"] == "idle" for e in held)


def test_method_and_path_of_a_live_request_are_read_from_outside(served):
    _src, _events, exe, _ctx, upstream, version = served
    for binary in (exe, build_go(SRC, version, strip=True)):  # DWARF, then the table
        fx = IdleServer(binary, upstream.url)
        try:
            fx.wait_line(lambda o: o.get("ready"))
            t = threading.Thread(target=fx.get, args=("/hold/some/path?x=1",), daemon=True)
            t.start()
            hold = fx.wait_line(lambda o: o.get("hold"))
            r = RuntimeReader(fx.pid)
            try:
                got = read_method_path(r, r.binary, int(hold["req"], 16))
            finally:
                r.close()
            fx.get("/release")
            t.join(10)
        finally:
            fx.close()
        assert got == ("GET", "/hold/some/path"), binary
