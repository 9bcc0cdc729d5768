"""Go fixtures that speak JSON lines on stdin/stdout (tests/goapps/bench_server, manyg), and
HTTP to the ones that serve it (idleserver)."""

from __future__ import annotations

import http.client
import json
import subprocess


def http_get(addr: str, path: str, conn: http.client.HTTPConnection | None = None) -> str:
    """GET ``path`` from ``addr`` (host:port): the body, on ``conn`` (kept open, keep-alive) or a
    connection of its own."""
    c = conn or http.client.HTTPConnection(addr, timeout=30)
    c.request("GET", path)
    body = c.getresponse().read().decode()
    if conn is None:
        c.close()
    return body


class LineProgram:
    """One run of a fixture: its hello line, and ``cmd(line)`` -> its answer line."""

    def __init__(self, exe, *args: str):
        self.proc = subprocess.Popen([str(exe), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.hello = json.loads(self.proc.stdout.readline())
        self.pid = self.proc.pid

    def cmd(self, line: str) -> dict:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def manyg_stalls(proc: subprocess.Popen, each=None) -> list[dict]:
    """Tell a running tests/goapps/manyg to "go" and read the stalls it makes until it is done
    (``{"goid", "begin_ns", "end_ns"}`` each); ``each(stall)`` is called as each one arrives."""
    proc.stdin.write("go\n")
    proc.stdin.flush()
    made = []
    for line in proc.stdout:
        msg = json.loads(line)
        if msg.get("done"):
            break
        made.append(msg)
        if each is not None:
            each(msg)
    return made
