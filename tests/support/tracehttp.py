"""Drive the ``tests/goapps/tracehttp`` fixture: a net/http server whose handlers set pprof labels
and stall (see its main.go). Shared by the trace-context tests and the benchmark."""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
from pathlib import Path

from support.fixtureproc import FixtureProcess
from support.gobuild import GOAPPS, build_go

TRACEHTTP = GOAPPS / "tracehttp"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE_ID, PARENT_SPAN_ID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def tracehttp(version: str, goexperiment: str = "") -> Path:
    return build_go(TRACEHTTP, version, goexperiment=goexperiment)


def known_maps() -> dict[str, dict]:
    """What the fixture's knownMaps() builds (keep in step with main.go)."""
    large = {f"key-{i}": "v" * (i % 7) + str(i) for i in range(600)}
    del large["key-7"]
    return {"small": {"route": "/order", "tenant": "acme", "empty": ""}, "large": large,
            "header": {f"Header-{i}": [f"h{i}-{j}" for j in range(i % 4)] for i in range(200)}}


class TraceHTTP(FixtureProcess):
    """One run of the fixture: ``with TraceHTTP(binary) as app: app.get("/order?stall=lock&ms=150")``."""

    def __init__(self, binary: str | Path):
        self.proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.hello = json.loads(self.proc.stdout.readline())
        self.pid = self.proc.pid
        self.host, port = self.hello["addr"].rsplit(":", 1)
        self.port = int(port)
        self.maps = {k: int(v, 16) for k, v in self.hello["maps"].items()}

    def get(self, path: str, headers: dict | None = None, timeout: float = 30) -> tuple[int, str]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read().decode()
        finally:
            conn.close()

    def hold(self, headers: dict) -> tuple[dict, threading.Thread]:
        """GET /hold in the background; returns what the handler printed ({"req", "goid"}) while it
        waits, and the thread (``release()`` lets the handler answer)."""
        done: list = []
        t = threading.Thread(target=lambda: done.append(self.get("/hold", headers)), daemon=True)
        t.start()
        line = json.loads(self.proc.stdout.readline())
        return line, t

    def release(self) -> None:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
