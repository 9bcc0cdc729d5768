"""A real Prometheus Alertmanager (Debian's ``prometheus-alertmanager``) on loopback, for tests.

Clustering off (``--cluster.listen-address=``), its own storage directory and a free port on
127.0.0.1; ``stop()`` ends it (by its own pid), ``start()`` runs it again on the same port and
storage. ``alerts()`` is ``GET /api/v2/alerts``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path

from support.wait import poll_until

BINARY = "/usr/bin/prometheus-alertmanager"

BLACKHOLE = """\
route:
  receiver: blackhole
  group_by: [service, cause]
receivers:
  - name: blackhole
"""


def available() -> bool:
    return os.access(BINARY, os.X_OK)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Alertmanager:
    def __init__(self, workdir: Path, config: str = BLACKHOLE, port: int = 0):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.dir / "alertmanager.yml"
        self.config_path.write_text(config, encoding="utf-8")
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Alertmanager:
        log = open(self.dir / "alertmanager.log", "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(
            [BINARY, f"--config.file={self.config_path}", f"--storage.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=",
             "--log.level=debug"],
            stdout=log, stderr=log)
        log.close()
        ok = poll_until(self._ready, 60, 0.1)
        assert ok, f"alertmanager did not start: {self.log()[-2000:]}"
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"alertmanager exited: {self.log()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def alerts(self, active_only: bool = True) -> list[dict]:
        q = "" if not active_only else "?active=true&silenced=true&inhibited=true"
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts{q}", timeout=5) as r:
            return json.loads(r.read())

    def log(self) -> str:
        try:
            return (self.dir / "alertmanager.log").read_text(errors="replace")
        except OSError:
            return ""

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir / "data", ignore_errors=True)
