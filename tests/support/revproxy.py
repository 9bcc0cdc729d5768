"""Drive ``tests/goapps/slowupstream`` (an upstream answering after 150 ms, over HTTP and raw
TCP) and ``tests/goapps/revproxy`` (a net/http reverse proxy to it, and a handler reading a
line from its TCP port): the peer tests' two processes on this host."""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
from pathlib import Path

from support.fixtureproc import FixtureProcess
from support.gobuild import GOAPPS, build_go

REVPROXY, SLOWUPSTREAM = GOAPPS / "revproxy", GOAPPS / "slowupstream"


def binaries(version: str, strip: bool = False) -> tuple[Path, Path]:
    """(revproxy, slowupstream) built with toolchain ``version``."""
    return build_go(REVPROXY, version, strip=strip), build_go(SLOWUPSTREAM, version, strip=strip)


class SlowUpstream(FixtureProcess):
    def __init__(self, exe: Path, delay: str = "150ms"):
        self.proc = subprocess.Popen([str(exe), "-delay", delay], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.hello = json.loads(self.proc.stdout.readline())
        self.pid = self.proc.pid
        self.http, self.h2, self.tcp = self.hello["http"], self.hello["h2"], self.hello["tcp"]


class RevProxy(FixtureProcess):
    """``with RevProxy(exe, upstream) as px: said, done = px.send("/proxy/x")``."""

    def __init__(self, exe: Path, upstream: SlowUpstream):
        self.proc = subprocess.Popen([str(exe), "-upstream", upstream.http, "-slowtcp", upstream.tcp,
                                      "-h2", upstream.h2],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.hello = json.loads(self.proc.stdout.readline())
        self.pid = self.proc.pid
        self.addr = self.hello["addr"]

    def send(self, path: str, timeout: float = 120) -> tuple[dict, Call]:
        """GET ``path`` in the background, on a connection kept open (as a keep-alive client's
        is) until the call is closed; returns what the handler printed before it waited
        ({"goid", "path", ...}) and the :class:`Call`."""
        call = Call(self.addr, path, timeout)
        return json.loads(self.proc.stdout.readline()), call


class Call:
    """One request on its own connection: ``wait()`` for the answer (``status``, ``body``;
    ``client`` is this side's ``ip:port``), ``close()`` the connection."""

    def __init__(self, addr: str, path: str, timeout: float):
        host, port = addr.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        self.conn.connect()
        host_, port_ = self.conn.sock.getsockname()[:2]
        self.client = f"{host_}:{port_}"
        self.status, self.body, self.timeout = 0, "", timeout
        self.thread = threading.Thread(target=self._run, args=(path,), daemon=True)
        self.thread.start()

    def _run(self, path: str) -> None:
        self.conn.request("GET", path)
        resp = self.conn.getresponse()
        self.status, self.body = resp.status, resp.read().decode()

    def wait(self) -> None:
        self.thread.join(self.timeout)
        assert not self.thread.is_alive(), "no answer"

    def close(self) -> None:
        self.conn.close()
