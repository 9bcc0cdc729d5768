"""The latency page, looked at in a real browser while lgf traces a stalling Go program.

lgf runs (`lgf run`, the goroutine tier always on) against the demo Go program (lgf.demo: it stalls
on a channel, a lock, a syscall, the network... every two seconds). Once lgf has windows and an
alert, headless Chromium (Debian's package) loads `/ui`: the DOM it built (--dump-dom) must hold
the heat map with cells of several causes, a stall's stack with the demo's own frame, the
topology path with the stalled hop marked, the alerts with their trace ids and the silence added
through the API; the screenshot (--screenshot) must be a real picture, many times the size of a
blank page's screenshot taken the same way. `/debug/latency` stays JSON for API clients and turns
into the page for a browser's Accept header. The Grafana dashboard asks only for series lgf has.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from test_demo import free_port
from test_e2e_uprobe import LgfRun

from support.cli import write
from support.gobuild import GO_VERSIONS, ROOT, go_binary

pytestmark = [pytest.mark.bpf, pytest.mark.slow]

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DEMO_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
"""The trace id the demo sends in its traceparent header (its -trace-id default)."""
WINDOW = (1200, 1000)
SCREENSHOT_FOR_README = ROOT / "docs" / "latency-page.png"


def chromium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium")
    assert exe, "Debian's chromium is missing (make test installs it)"
    with tempfile.TemporaryDirectory(prefix="lgf-chromium-") as profile:
        return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def get(url: str, accept: str = "*/*") -> tuple[str, str]:
    req = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.headers.get("Content-Type", ""), resp.read().decode()


@pytest.fixture()
def demo_program(go_toolchains, monkeypatch):
    from lgf import demo

    monkeypatch.setenv("XDG_CACHE_HOME", str(ROOT / ".cache" / "demo"))
    exe = demo.build(str(go_binary(GO_VERSIONS[1])))
    proc = subprocess.Popen([str(exe), "-hold", "150ms", "-every", "1s"], stdout=subprocess.DEVNULL)
    yield proc
    proc.terminate()
    proc.wait(timeout=10)


def test_latency_page_in_a_browser(tmp_path, bpf_ok, demo_program):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = write(tmp_path / "plugins.toml", f"""
[lgf]
threshold = "50ms"
report_interval = "2s"
env = "test"  # changes from loopback without a token (docs/operations.md "Roles"); alerts from 100 ms
spool_dir = "{tmp_path / 'spool'}"

[targets]
pids = [{demo_program.pid}]

[[sources]]
use = "uprobe"
goroutine_tier = "always"

[[enrichers]]
use = "symbolizer"

[[classifiers]]
use = "waitreason"

[[sinks]]
use = "file"
path = "{tmp_path / 'stalls.jsonl'}"

[alerts]
services = {{ checkout = "^lgfdemo" }}

[alerts.topology]
path = ["api-gw", "checkout", "inventory"]

[http]
listen = "127.0.0.1:{port}"
""")
    run = LgfRun(config)
    try:
        run.wait_log(f"tracing pid {demo_program.pid}")
        deadline = time.monotonic() + 120  # a safety net against a hang, not a performance bound
        while True:
            ctype, body = get(base + "/debug/latency")
            recent = json.loads(body)
            causes = {r["cause"] for r in _stalls(tmp_path / "stalls.jsonl")}
            if recent["alerts"] and {"lock", "channel"} <= causes or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert ctype.startswith("application/json") and recent["alerts"], recent
        req = urllib.request.Request(base + "/api/silences", method="POST",
                                     data=json.dumps({"matchers": ["cause=sleep"], "duration": "1h",
                                                      "comment": "ui-test"}).encode())
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 201
        ctype, html_body = get(base + "/debug/latency", accept="text/html,application/xhtml+xml,*/*;q=0.8")
        assert ctype.startswith("text/html") and 'class="heatmap"' in html_body

        dom = chromium("--dump-dom", f"{base}/ui?refresh=0")
        assert dom.returncode == 0, dom.stderr[-2000:]
        shot = tmp_path / "page.png"
        blank = tmp_path / "blank.png"
        for url, out in ((f"{base}/ui?refresh=0", shot), ("about:blank", blank)):
            done = chromium(f"--screenshot={out}", f"--window-size={WINDOW[0]},{WINDOW[1]}", url)
            assert done.returncode == 0 and out.exists(), done.stderr[-2000:]
        final = json.loads(get(base + "/debug/latency")[1])
    finally:
        code = run.stop()
    assert code == 0, "".join(run.lines[-20:])

    html = dom.stdout
    heatmaps = re.findall(r'<svg class="heatmap".*?</svg>', html, re.S)
    assert heatmaps, "no heat map in the page the browser built"
    # Every cause is in the cells (a cell is coloured by its most frequent one, and lists them all).
    cell_causes = {c for cs in re.findall(r'<rect class="cell" data-cause="\w+" data-causes="([\w ]+)"',
                                          heatmaps[0]) for c in cs.split()}
    assert {"lock", "channel"} <= cell_causes, cell_causes
    # A stall's stack, down to the demo's own frame, in the stall list.
    stacks = re.findall(r'<details class="stack"[^>]*>.*?<pre>(.*?)</pre>', html, re.S)
    assert any("main.lockStall" in s for s in stacks), stacks[:3]
    assert re.search(r'<g class="hop stalled">.*?>checkout</text>', html), "stalled hop not marked"
    assert "api-gw" in html and "inventory" in html
    # An alert's trace id is its worst stall's, read from the request (the demo's /checkout sends
    # a traceparent): empty when lgf could not read one (a sampled first stall), never invented,
    # and shown on the page whenever there is one.
    trace_ids = {a["trace_id"] for a in final["alerts"]} - {""}
    assert trace_ids <= {DEMO_TRACE_ID}, trace_ids
    assert all(t in html for t in trace_ids), trace_ids
    assert 'class="silence"' in html and "cause=sleep" in html and "ui-test" in html

    assert png_size(shot) == WINDOW
    assert shot.stat().st_size > 5 * blank.stat().st_size, (shot.stat().st_size, blank.stat().st_size)
    if os.environ.get("LGF_UPDATE_SCREENSHOT") == "1":  # README's picture, refreshed by hand
        SCREENSHOT_FOR_README.parent.mkdir(exist_ok=True)
        shutil.copy(shot, SCREENSHOT_FOR_README)


def _stalls(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def test_grafana_dashboard_asks_only_for_series_lgf_has():
    """Every metric a panel queries is one lgf writes (a typo would draw an empty panel forever)."""
    dash = json.loads((ROOT / "deploy" / "grafana" / "lgf-dashboard.json").read_text())
    assert dash["uid"] and dash["panels"]
    known: set[str] = set()
    for folder in ("core", "sources", "plugins", "sinks"):
        for p in (ROOT / folder).rglob("*.py"):
            known |= set(re.findall(r'"(lgf_[a-z_]+)"', p.read_text()))
    used = set()
    for panel in dash["panels"]:
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys()
        for target in panel["targets"]:
            for name in re.findall(r"\b(lgf_[a-z_]+)", target["expr"]):
                used.add(name)
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                assert name in known or base in known, f"panel {panel['title']!r}: {name} is not an lgf series"
    assert {"lgf_stall_duration_seconds_bucket", "lgf_events_total", "lgf_alerts_total"} <= used
