"""Go fixtures that speak JSON lines on stdin/stdout (tests/goapps/bench_server, manyg)."""

from __future__ import annotations

import json
import subprocess


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
