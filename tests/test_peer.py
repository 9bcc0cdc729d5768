"""What a stalled goroutine waited on (issue 19): real BPF, real Go programs on this host, Go
1.21, 1.25 and 1.27.

``tests/goapps/revproxy`` is a net/http reverse proxy (``httputil.ReverseProxy``) to
``tests/goapps/slowupstream``, a second process that answers after 150 ms; its ``/tcp`` handler
reads a line from the upstream's raw TCP port instead (an "IO wait" on that socket). The uprobe
source runs with its goroutine tier never armed (as in test_sampler_request.py), so every stall
is the sampler's report and what it says of the peers was read from the parked goroutine,
through the real ``peer`` enricher and alert policy. The expected values come from elsewhere: the
handler prints its goroutine id and the socket's two addresses, the fixtures their listening
addresses, and this process holds the client socket. The only time bounds are liveness deadlines.
"""

from __future__ import annotations

import json
import os

import pytest
from test_e2e_uprobe import LgfRun

from lgf import config as cfg
from lgf.alerts import AlertEngine
from lgf.golang import httpclient, pollwait
from lgf.golang.gobinary import open_binary
from lgf.golang.golayout import dwarf_fields
from lgf.plugins.peer import PeerEnricher, PeerOptions
from lgf.sources.uprobe import UprobeOptions, UprobeSource
from lgf.stats import Stats
from lgf.testing import EventCollector
from support.cli import write
from support.gobuild import GO_VERSIONS, build_go
from support.revproxy import RevProxy, SlowUpstream, binaries
from support.stallfixture import STALLS_SRC, StallFixture, run_context, wait_attached
from support.wait import poll_until

pytestmark = pytest.mark.bpf

INTERVAL_NS = 20_000_000
LIVENESS_S = 120
HELD = "300ms"
"""How long the upstream takes in the per-toolchain tests: a 150 ms wait is seen by the sampler
only once it has lasted the threshold (50 ms) between two of its samples, which a loaded 2-core
VM delayed past the wait's end (measured: no report at all, once in a few runs); the ``lgf run``
test keeps the issue's 150 ms."""


def sampler_with_peer(exe):
    """A started uprobe source on ``exe`` whose cheap tier never arms the goroutine tier, and the
    ``peer`` enricher made on the same host context (which switches the capture on)."""
    ctx = run_context("50ms", exe=[str(exe)])
    enricher = PeerEnricher(PeerOptions(), ctx)
    src = UprobeSource(UprobeOptions(goroutine_tier="on_stall", sample_interval=INTERVAL_NS), ctx)
    events = EventCollector()
    src.start(events)
    ctx.services.arming.unregister(src.tier.request)  # the sampler reports every stall
    return src, events, ctx, enricher


def engine(tmp_path, topology: dict | None = None) -> AlertEngine:
    raw = {"lgf": {"spool_dir": str(tmp_path), "threshold": "50ms"}, "alerts": {"topology": topology or {}}}
    return AlertEngine(cfg.validate(raw, {}), Stats())


def stall_of(events, pid: int, goid: int):
    (ev, *_) = events.wait_for(lambda e: e.pid == pid and e.goid == goid and e.extra.get("stall") == "park",
                               timeout=LIVENESS_S)
    return ev


def stall_through(proxy_exe, upstream_exe, path: str):
    """Send ``path`` to a revproxy in front of a slowupstream, under the sampler with the ``peer``
    enricher; (its stall event, enriched while the processes run, as the pipeline does; the
    call; what the handler said; the upstream; the proxy; the host context)."""
    src, events, ctx, enricher = sampler_with_peer(proxy_exe)
    try:
        with SlowUpstream(upstream_exe, HELD) as up, RevProxy(proxy_exe, up) as px:
            wait_attached(src, px.pid)
            said, call = px.send(path)
            try:
                ev = stall_of(events, px.pid, said["goid"])
                call.wait()
                enricher.lgf_enrich(ev)
            finally:
                call.close()
    finally:
        src.stop()
    return ev, call, said, up, px, ctx


def missing(ctx) -> dict:
    return {k: v for k, v in ctx.stats.snapshot().items() if "peer_missing" in k or "enrich_missing" in k}


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_a_reverse_proxy_stall_names_its_upstream_and_caller(bpf_ok, go_toolchains, version, tmp_path):
    proxy_exe, upstream_exe = binaries(version)
    ev, call, said, up, px, ctx = stall_through(proxy_exe, upstream_exe, "/proxy/checkout")
    assert call.status == 200 and call.body == "upstream /proxy/checkout HTTP/1.1\n"
    assert ev.scope == "request" and ev.wait_reason == "select", (ev.wait_reason, ev.extra)
    waited = ev.extra.get("waited_on")
    assert waited, missing(ctx)
    assert (waited["kind"], waited["addr"], waited["scheme"]) == ("http", up.http, "http")
    assert waited["peer"] == up.http and waited["local"].startswith("127.0.0.1:")
    assert waited["pid"] == up.pid and not waited.get("self")
    caller = ev.extra["caller"]
    assert caller["addr"] == call.client and caller["local"] == px.addr
    assert caller["pid"] == os.getpid()  # this test process holds the client's socket
    eng = engine(tmp_path, {"path": ["edge-lb"]})  # a hop lgf cannot see, from the config
    eng.observe(ev)
    assert waited["service"] == "slowupstream"  # its main module, lgf.test/slowupstream
    assert ev.topology["path"] == ["edge-lb", caller["service"], "revproxy", "slowupstream"]
    (alert,) = eng.due(2**63 - 1)
    assert alert.extra["waited_on"]["addr"] == up.http and alert.topology["path"][-2:] == ["revproxy", "slowupstream"]


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_a_stall_on_an_http2_upstream_names_it(bpf_ok, go_toolchains, version, tmp_path):
    """The same wait over HTTPS with HTTP/2 (the Transport's HTTP/2 client connection, not a
    ``persistConn``): the upstream is the socket under the TLS connection (an IP has no server
    name), and the process holding its other end."""
    proxy_exe, upstream_exe = binaries(version, strip=True)  # stripped: no DWARF to lean on
    ev, call, said, up, px, ctx = stall_through(proxy_exe, upstream_exe, "/h2/checkout")
    assert call.status == 200 and call.body == "upstream /h2/checkout HTTP/2.0\n"
    waited = ev.extra.get("waited_on")
    assert waited, missing(ctx)
    assert (waited["kind"], waited["addr"], waited["scheme"], waited["protocol"]) == ("http", up.h2, "https", "h2")
    assert waited["peer"] == up.h2 and waited["local"].startswith("127.0.0.1:")
    assert waited["pid"] == up.pid
    eng = engine(tmp_path)
    eng.observe(ev)
    assert ev.topology["path"][-2:] == ["revproxy", "slowupstream"]


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_a_stalled_socket_read_names_both_ends_and_the_process_at_the_other(bpf_ok, go_toolchains, version,
                                                                            tmp_path):
    proxy_exe, upstream_exe = binaries(version, strip=True)  # stripped: spans from the pclntab
    ev, call, said, up, px, ctx = stall_through(proxy_exe, upstream_exe, "/tcp")
    assert call.body == "slow line\n"
    assert ev.wait_reason == "IO wait", ev.wait_reason
    waited = ev.extra.get("waited_on")
    assert waited, missing(ctx)
    assert (waited["kind"], waited["mode"]) == ("tcp", "read")
    assert (waited["local"], waited["peer"], waited["addr"]) == (said["local"], said["peer"], up.tcp)
    assert waited["pid"] == up.pid
    eng = engine(tmp_path)
    eng.observe(ev)
    assert ev.topology["path"][-2:] == ["revproxy", "slowupstream"]


def test_a_stall_waiting_on_nothing_of_the_network_carries_no_peer(bpf_ok, go_toolchains, tmp_path):
    """A lock stall (the stalls fixture, no network at all): nothing is captured, nothing is
    made up, and the config's path is left as it was."""
    exe = build_go(STALLS_SRC, GO_VERSIONS[-1], ldflags="-X main.privateCopy=peer")
    src, events, ctx, enricher = sampler_with_peer(exe)
    try:
        with StallFixture(exe, "mutex", "-n", "1") as fx:
            wait_attached(src, fx.pid)
            (res,) = fx.go()
            (ev, *_) = events.wait_for(lambda e: e.pid == fx.pid and e.goid == res["goid"], timeout=LIVENESS_S)
            enricher.lgf_enrich(ev)
    finally:
        src.stop()
    assert "waited_on" not in ev.extra and "caller" not in ev.extra
    eng = engine(tmp_path, {"path": ["edge-lb"]})
    eng.observe(ev)
    assert ev.topology["path"] == ["edge-lb"]


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_the_tables_say_what_dwarf_says(go_toolchains, version):
    """For every supported Go release the offsets come from the tables (no DWARF walk on the
    sampler's thread while the park runs out): each toolchain's own DWARF agrees with them."""
    binary = open_binary(binaries(version)[0])
    assert binary.has_dwarf
    assert httpclient.dwarf_offsets(binary) == httpclient.offsets_of(binary) == httpclient.LAYOUT
    assert pollwait.dwarf_offsets(binary) == pollwait.offsets_of(binary) == pollwait.table_of(binary.version_tuple)
    cc = "net/http/internal/http2.ClientConn" if binary.version_tuple[:2] >= (1, 27) else "net/http.http2ClientConn"
    h2 = dwarf_fields(binary, {"t": (cc, "t"), "tconn": (cc, "tconn"), "tlsState": (cc, "tlsState")})
    assert (h2["t"], h2["tconn"]) == (0, 8) and h2["tlsState"] in httpclient.H2_TLS_STATE, h2
    state = "crypto/tls.ConnectionState"
    assert dwarf_fields(binary, {f: (state, f) for f in ("Version", "HandshakeComplete", "NegotiatedProtocol",
                                                         "ServerName")}) == {
        "Version": 0, "HandshakeComplete": 2, "NegotiatedProtocol": 8, "ServerName": 32}


def test_lgf_run_with_the_peer_enricher_reports_the_upstream_on_the_stall_and_its_alert(tmp_path, bpf_ok,
                                                                                       go_toolchains):
    """``lgf run`` as shipped (goroutine tier on stall, the sampler reports the first stall),
    with ``peer`` among the enrichers: the stall in the file names the upstream, the process
    behind it and the derived path; so does its alert."""
    proxy_exe, upstream_exe = binaries(GO_VERSIONS[-1])
    out = tmp_path / "lgf" / "stalls.jsonl"
    with SlowUpstream(upstream_exe) as up, RevProxy(proxy_exe, up) as px:
        config = write(tmp_path / "plugins.toml", f"""
[lgf]
threshold = "50ms"
report_interval = "1s"
spool_dir = "{tmp_path / 'spool'}"
plugins = ["lgf.sources.uprobe"]

[targets]
pids = [{px.pid}]

[[sources]]
use = "uprobe"
goroutine_tier = "on_stall"

[[enrichers]]
use = "symbolizer"

[[enrichers]]
use = "peer"

[[classifiers]]
use = "waitreason"

[[sinks]]
use = "file"
path = "{out}"
format = "jsonl"

[alerts.topology]
path = ["edge-lb"]

[http]
enabled = false
""")
        run = LgfRun(config)
        try:
            run.wait_log(f"tracing pid {px.pid}")
            said, call = px.send("/proxy/orders")
            try:
                call.wait()

                def reported():
                    rows = [json.loads(ln) for ln in out.read_text().splitlines() if ln.strip()] if out.exists() else []
                    stall = [r for r in rows if r.get("kind") == "stall" and r["goid"] == said["goid"]]
                    alert = [r for r in rows if r.get("kind") == "alert" and r["goid"] == said["goid"]]
                    return (stall, alert) if stall and alert else None
                stalls, alerts = poll_until(reported, LIVENESS_S, 0.1)
            finally:
                call.close()
        finally:
            code = run.stop()
        assert code == 0, "".join(run.lines[-20:])
    row = stalls[0]
    assert row["waited_on"]["addr"] == up.http and row["waited_on"]["service"] == "slowupstream", row
    assert row["caller"]["addr"] == call.client
    assert row["topology"]["path"][0] == "edge-lb" and row["topology"]["path"][-2:] == ["revproxy", "slowupstream"]
    assert alerts[0]["waited_on"]["addr"] == up.http and alerts[0]["topology"]["path"] == row["topology"]["path"]
