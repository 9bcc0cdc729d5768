"""lgf.golang.netpeer against real sockets of this process, and how the peers are worded and
put into the alert's path (lgf.peerview, lgf.alerts): no BPF needed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from lgf import config as cfg
from lgf.alerts import AlertEngine
from lgf.event import Event
from lgf.golang import netpeer
from lgf.golang.peercapture import PeerCapture
from lgf.peerview import shown
from lgf.sinks.stdout import format_line
from lgf.sinks.wecom_format import alert_messages
from lgf.stats import Stats
from lgf.ui.history import StallHistory
from lgf.ui.page import stalls_table, topology_hops


@pytest.fixture(params=[socket.AF_INET, socket.AF_INET6], ids=["v4", "v6"])
def connection(request):
    """A listener and a connected pair on loopback, all in this process."""
    family = request.param
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    try:
        server = socket.socket(family, socket.SOCK_STREAM)
        server.bind((host, 0))
    except OSError:
        pytest.fail(f"no loopback for {family!r} on this host")
    server.listen()
    client = socket.create_connection(server.getsockname()[:2])
    accepted, _ = server.accept()
    yield server, client, accepted
    for s in (client, accepted, server):
        s.close()


def text(addr) -> str:
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


def test_a_descriptor_is_described_by_its_socket_and_by_the_tables_alike(connection):
    server, client, accepted = connection
    pid = os.getpid()
    got = netpeer.describe_fd(pid, client.fileno())
    assert (got.kind, got.local, got.peer) == ("tcp", text(client.getsockname()), text(client.getpeername()))
    assert got.inode == os.fstat(client.fileno()).st_ino
    row = next(s for s in netpeer.tcp_table(pid) if s.inode == got.inode)  # the fallback's answer
    assert (row.local, row.peer) == (got.local, got.peer)
    mirror, listener = netpeer.other_end(pid, got.local, got.peer)
    assert mirror == os.fstat(accepted.fileno()).st_ino and listener == os.fstat(server.fileno()).st_ino
    assert netpeer.other_end(pid, got.local, got.peer, netpeer.tcp_table(pid)) == (mirror, listener)  # the fallback
    owners = netpeer.SocketOwners()
    assert owners.owner_of(mirror) == pid and owners.owner_of(mirror) == pid
    assert owners.scans == 1  # the second answer came from the cache, checked with one readlink


def test_what_is_no_tcp_socket_says_so():
    r, w = os.pipe()
    a, b = socket.socketpair()
    try:
        assert netpeer.describe_fd(os.getpid(), r).kind == "other"
        assert netpeer.describe_fd(os.getpid(), a.fileno()).kind == "unix"
        os.close(r)
        assert netpeer.describe_fd(os.getpid(), r).kind == "gone"
    finally:
        os.close(w)
        a.close()
        b.close()


def peered(**extra) -> Event:
    return Event(pid=7, comm="revproxy", exe="/nonexistent/revproxy", goid=3, cause="channel",
                 wait_reason="select", duration_ns=150_000_000, start_ns=1, end_ns=150_000_001,
                 ts="2026-12-03T17:00:00.000000000Z", stack_summary=["main.main.func1"], extra=dict(extra))


WAITED = {"kind": "http", "addr": "inventory.internal:8080", "scheme": "http", "local": "10.0.0.5:40112",
          "peer": "10.0.0.9:8080"}
CALLER = {"addr": "10.0.0.2:51000", "local": "10.0.0.5:80"}


def engine(tmp_path, topology=None) -> AlertEngine:
    raw = {"lgf": {"spool_dir": str(tmp_path), "threshold": "50ms"},
           "alerts": {"topology": topology or {}, "services": {"gateway": "^gw$"}}}
    return AlertEngine(cfg.validate(raw, {}), Stats())


def test_the_path_is_the_configs_hops_then_caller_this_service_and_what_it_waited_on(tmp_path):
    ev = peered(waited_on=dict(WAITED), caller={**CALLER, "pid": 1, "comm": "gw", "exe": "/usr/bin/gw"})
    engine(tmp_path, {"path": ["edge-lb"], "region": "eu"}).observe(ev)
    service = ev.extra["service"]
    assert ev.extra["caller"]["service"] == "gateway"  # named as lgf names services: [alerts] services first
    assert ev.topology["path"] == ["edge-lb", "gateway", service, "inventory.internal:8080"]
    assert ev.topology["region"] == "eu"


def test_a_caller_the_config_already_ends_its_path_with_is_not_repeated(tmp_path):
    ev = peered(caller={**CALLER, "pid": 1, "comm": "gw", "exe": "/usr/bin/gw"})
    engine(tmp_path, {"path": ["edge-lb", "gateway"]}).observe(ev)
    assert ev.topology["path"] == ["edge-lb", "gateway", ev.extra["service"]]


def test_without_peers_the_configs_path_is_left_alone(tmp_path):
    ev = peered()
    engine(tmp_path, {"path": ["edge-lb"]}).observe(ev)
    assert ev.topology["path"] == ["edge-lb"]


def test_stdout_and_wecom_show_caller_and_waited_on():
    ev = peered(waited_on={**WAITED, "service": "inventory"}, caller=dict(CALLER))
    assert shown(ev.extra) == [("caller", "10.0.0.2:51000 via 10.0.0.5:80"),
                               ("waited_on", "http inventory.internal:8080 (inventory) via 10.0.0.5:40112")]
    line = format_line(ev)
    assert line.endswith(' caller="10.0.0.2:51000 via 10.0.0.5:80" '
                         'waited_on="http inventory.internal:8080 (inventory) via 10.0.0.5:40112"'), line
    (msg,) = alert_messages(ev.to_dict(), "text")
    assert "waited on: http inventory.internal:8080 (inventory) via 10.0.0.5:40112" in msg
    h2 = peered(waited_on={**WAITED, "protocol": "h2"})
    assert shown(h2.extra) == [("waited_on", "http/h2 inventory.internal:8080 via 10.0.0.5:40112")]
    assert "caller: 10.0.0.2:51000 via 10.0.0.5:80" in msg


def test_the_latency_page_lists_them_under_the_wait_and_draws_the_derived_path(tmp_path):
    ev = peered(waited_on={**WAITED, "service": "inventory"}, caller=dict(CALLER))
    engine(tmp_path).observe(ev)
    history = StallHistory()
    history.add(ev)
    (record,) = history.records()
    html = stalls_table([record], first_open=False)
    assert "waited on: http inventory.internal:8080 (inventory) via 10.0.0.5:40112" in html
    assert "caller: 10.0.0.2:51000 via 10.0.0.5:80" in html
    assert topology_hops(record["topology"], record["service"])[-1] == "inventory"


def test_a_caller_not_on_this_host_is_a_hop_by_its_host_not_its_ephemeral_port(tmp_path):
    ev = peered(caller=dict(CALLER), waited_on=dict(WAITED))
    engine(tmp_path).observe(ev)
    assert ev.topology["path"] == ["10.0.0.2", ev.extra["service"], "inventory.internal:8080"]


NETNS_CHILD = """
import os, socket, sys
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
cli = socket.create_connection(srv.getsockname()); acc, _ = srv.accept()
print(os.getpid(), cli.fileno(), *(os.fstat(s.fileno()).st_ino for s in (acc, srv)), flush=True)
sys.stdin.read()
"""


def test_a_process_in_its_own_network_namespace_is_looked_up_in_it():
    """A pod's process has its own network namespace: lgf enters it (on its own thread, and
    back) for the kernel's look-ups, and agrees with that namespace's own tables."""
    child = subprocess.Popen(["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$0" -c "$1"',
                              sys.executable, NETNS_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ours = os.stat("/proc/thread-self/ns/net").st_ino
    try:
        pid, fd, mirror, listener = (int(x) for x in child.stdout.readline().split())
        assert os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
        got = netpeer.describe_fd(pid, fd)
        assert got.kind == "tcp" and got.local.startswith("127.0.0.1:")
        assert netpeer.peer_sockets(pid, got.local, got.peer) == (mirror, listener)
        assert netpeer.other_end(pid, got.local, got.peer, netpeer.tcp_table(pid)) == (mirror, listener)
        assert os.stat("/proc/thread-self/ns/net").st_ino == ours  # this thread came back
        assert netpeer.peer_sockets(os.getpid(), got.local, got.peer) != (mirror, listener)  # not in ours
    finally:
        child.stdin.close()
        child.wait(timeout=10)


def test_a_capture_belongs_to_the_stall_whose_span_holds_it():
    """The sampler's report starts where it first saw the park (exact key); a goroutine tier that
    took the park over reports it with an earlier start (matched by span); another goroutine's
    or another park's stall takes nothing."""
    capture = PeerCapture()
    capture.keep(7, 3, 1_000, {"waited_on": {"addr": "a:1"}})
    capture.keep(7, 3, 9_000, {"waited_on": {"addr": "b:2"}})
    assert capture.take(7, 4, 1_000, 2_000) is None  # another goroutine
    assert capture.take(7, 3, 2_000, 8_000) is None  # a park the sampler never judged
    assert capture.take(7, 3, 500, 1_500) == {"waited_on": {"addr": "a:1"}}  # the tier's report
    assert capture.take(7, 3, 9_000, 9_500) == {"waited_on": {"addr": "b:2"}}  # the sampler's
    assert capture.take(7, 3, 0, 10_000) is None  # each taken once
