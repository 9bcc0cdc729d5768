"""A Ray head of a test's (or bench's) own, and lgf instances attached to it as other hosts would be.

:class:`Head` runs ``ray start --head --block`` on loopback with its own temp dir and port, and
:meth:`Head.stop` ends exactly the processes it started (by pid: never ``ray stop``, which ends
every Ray on the machine). :class:`Lgf` runs ``support.raydriver`` in a mount namespace of its
own, its copy of a binary on a private tmpfs the head cannot read: what lgf on another host sees.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from support.gobuild import ROOT

RAY = Path(sys.executable).with_name("ray")
START_WAIT_S = 120.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_of(root: int, tmp: str) -> set[int]:
    """Pids descending from ``root`` (the head and the workers its raylet started, which rename
    themselves ``ray::...``), and any whose command line names the head's ``tmp`` dir."""
    parent: dict[int, int] = {}
    mine: set[int] = set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                parent[int(d)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{d}/cmdline", "rb") as fh:
                if tmp.encode() in fh.read():
                    mine.add(int(d))
        except (OSError, IndexError, ValueError):
            pass
    grew = True
    mine.add(root)
    while grew:
        more = {pid for pid, pp in parent.items() if pp in mine and pid not in mine}
        mine |= more
        grew = bool(more)
    return mine & set(parent)


class Head:
    """One Ray head of this module's own; :meth:`stop` ends exactly the processes it started."""

    def __init__(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="lgfray", dir="/tmp")  # short: Ray's socket paths
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.start()

    def start(self) -> None:
        """Start the head (again, after :meth:`stop`: same port, a new session, no actors)."""
        env = {**os.environ, "RAY_AUTH_MODE": "disabled"}  # loopback only; no token to hand out
        self.proc = subprocess.Popen(
            [str(RAY), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={self.port}",
             "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={self.tmp}", "--num-cpus=1",
             "--object-store-memory=100000000"],
            start_new_session=True, env=env, stdout=open(f"{self.tmp}/head.log", "w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_WAIT_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"ray head did not start: {open(f'{self.tmp}/head.log').read()[-2000:]}") from None
                time.sleep(0.5)

    def stop(self) -> None:
        pids = _processes_of(self.proc.pid, self.tmp)  # before the raylet dies and orphans them
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        for _ in range(20):  # workers are not in the head's process group: end them by pid
            pids = (pids | _processes_of(self.proc.pid, self.tmp)) - {self.proc.pid}
            pids = {p for p in pids if os.path.exists(f"/proc/{p}")}
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)
        self.proc.wait(30)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


class Lgf:
    """One lgf instance (``support.raydriver``) in a mount namespace of its own, its copy of the
    binary on a private tmpfs at ``where`` (invisible to the Ray head: another host's file)."""

    def __init__(self, address: str, binary: Path, where: Path, *args: str) -> None:
        where.mkdir(parents=True)
        self.exe = where / "app"
        script = (f'mount -t tmpfs lgf "{where}" && cp "{binary}" "{self.exe}" && '
                  f'exec "{sys.executable}" -m support.raydriver "{address}" "{self.exe}" '
                  + " ".join(f'"{a}"' for a in args))
        self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                     cwd=ROOT / "tests", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(where.with_suffix(".log"), "w"), text=True)
        self.log = where.with_suffix(".log")
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()  # the driver's own calls are bounded (Ray timeouts)
        if not line:
            raise AssertionError(f"lgf driver exited: {self.log.read_text()[-3000:]}")
        return json.loads(line)

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask(op="quit")
            except (AssertionError, BrokenPipeError, ValueError):
                pass
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
