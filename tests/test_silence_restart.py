"""Silences added to a running `lgf run` through `lgf silence` survive a restart of lgf."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.request

from support.cli import LGF, lgf, write


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """`lgf run CONFIG` (no sources: only the host, its alert engine and HTTP) until stop()."""

    def __init__(self, config, url):
        self.proc = subprocess.Popen([*LGF, "run", str(config)], stderr=subprocess.PIPE, text=True)
        self.url = url
        for _ in range(200):  # until it answers (start-up imports take a moment on a busy host)
            try:
                urllib.request.urlopen(url + "/api/silences", timeout=1).read()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise AssertionError(f"lgf run exited: {self.proc.stderr.read()}") from None
                time.sleep(0.05)
        raise AssertionError("lgf run never answered on " + url)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def test_a_silence_added_at_run_time_is_still_there_after_a_restart(tmp_path):
    port = free_port()
    config = write(tmp_path / "plugins.toml", f"""
[lgf]
spool_dir = "{tmp_path / 'spool'}"
[http]
listen = "127.0.0.1:{port}"
[environments.prod]  # lgf's rule before roles: loopback may change, no approval
loopback_changes = true
approval = false
[silences]
rules = [{{ matchers = ["env=dev"], comment = "from the config" }}]
""")
    url = f"http://127.0.0.1:{port}"
    first = Running(config, url)
    try:
        added = lgf("silence", "--config", str(config), "add", "service=checkout", "cause=lock",
                    "--for", "3h", "--comment", "JIRA-1")
        assert added.returncode == 0, added.stderr
        sid = added.stdout.split()[0]
    finally:
        assert first.stop() == 0
    assert (tmp_path / "spool" / "silences.json").exists()

    second = Running(config, url)
    try:
        listed = lgf("silence", "--config", str(config), "list", "--json")
        silences = {s["id"]: s for s in json.loads(listed.stdout)["silences"]}
        assert silences[sid]["matchers"] == ["service=checkout", "cause=lock"]
        assert silences[sid]["comment"] == "JIRA-1" and silences[sid]["expires"]
        assert silences["config-0"]["origin"] == "config"
        metrics = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
        assert "lgf_silences_active 2.0" in metrics
    finally:
        assert second.stop() == 0
