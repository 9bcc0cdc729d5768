"""`lgf demo`: a newcomer's first run shows real stalls of every cause and an alert.

The demo is run headless as a user would (`lgf demo`, here with a port of its own): its stdout is
lgf's stdout sink. The test waits until it has seen a stall of every cause the demo program makes
and at least one alert, then stops it with SIGINT (exit 0). Also: `lgf run` with nothing to watch
says so once, with the way to the demo; the packaged config is the shipped plugins.toml.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest
from test_e2e_uprobe import LgfRun

from support.cli import LGF, write
from support.gobuild import GO_VERSIONS, ROOT, go_binary

DEMO_CAUSES = {"channel", "select", "lock", "syscall", "net_io", "sleep", "sched_latency", "gc_stw"}
STALL_LINE = re.compile(r"^\S+ STALL (>=)?[\d.]+m?s (\w+) pid=(\d+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_packaged_config_is_the_shipped_one():
    from lgf import demo

    assert demo.SHIPPED_CONFIG.read_bytes() == (ROOT / "plugins.toml").read_bytes()


def test_demo_without_a_go_toolchain_says_how_to_get_one(monkeypatch):
    from lgf import demo

    monkeypatch.setattr(demo, "go_candidates", lambda: [])
    with pytest.raises(demo.DemoError, match="apt-get install golang-go"):
        demo.find_go()


@pytest.mark.bpf
@pytest.mark.slow
def test_demo_shows_every_cause_and_an_alert(tmp_path, bpf_ok, go_toolchains):
    env = {**os.environ, "LGF_GO": str(go_binary(GO_VERSIONS[1])),
           "XDG_CACHE_HOME": str(ROOT / ".cache" / "demo")}  # the demo build is cached across runs
    proc = subprocess.Popen([*LGF, "demo", "--listen", f"127.0.0.1:{free_port()}"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    err: list[str] = []
    threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True).start()
    causes: set[str] = set()
    alerts: list[str] = []
    lines: list[str] = []
    t0 = time.monotonic()
    try:
        # A safety net against a hang, not a performance bound: on an idle host it takes ~15-25 s.
        while time.monotonic() - t0 < 180 and not (causes >= DEMO_CAUSES and alerts):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = STALL_LINE.match(line)
            if m:
                causes.add(m.group(2))
            elif " ALERT " in line:
                alerts.append(line)
        took = time.monotonic() - t0
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    log = "".join(err[-30:])
    assert DEMO_CAUSES <= causes, f"causes seen: {sorted(causes)}; missing {sorted(DEMO_CAUSES - causes)}\n{log}"
    assert alerts, "no alert\n" + "".join(lines[-20:])
    assert code == 0, log
    print(f"every cause and an alert after {took:.1f} s")
    text = "".join(err)
    assert "demo: lock stall of" in text and "main.checkout (GET /checkout, trace id" in text, text[-2000:]
    assert "lgf stopped:" in text
    assert any("main.checkout" in ln and " lock " in ln for ln in lines), "the slow HTTP request's stall"


@pytest.mark.bpf
def test_run_with_nothing_to_watch_says_so_once_and_names_the_demo(tmp_path, bpf_ok):
    config = write(tmp_path / "plugins.toml", f"""
[lgf]
spool_dir = "{tmp_path / 'spool'}"

[targets]
exe = ["/nonexistent/lgf-test/*"]

[[sources]]
use = "uprobe"

[[sinks]]
use = "stdout"

[http]
enabled = false
""")
    run = LgfRun(config)
    try:
        run.wait_log("lgf running")
        run.wait_log("no Go process to watch yet")
        time.sleep(1.0)  # the rescans after start must not repeat it
    finally:
        code = run.stop()
    assert code == 0, "".join(run.lines)
    hints = [ln for ln in run.lines if "no Go process to watch" in ln]
    assert len(hints) == 1 and "lgf demo" in hints[0], hints
