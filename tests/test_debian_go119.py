"""Debian 12's own Go services, built by Debian with Go 1.19: lgf reads them and finds their stalls.

``prometheus-alertmanager`` and ``prometheus-node-exporter`` are Debian's binaries (``make test``
installs them), stripped, go1.19.8: nothing here is built by the tests. ``lgf inspect`` must accept
them, lay them out from the 1.19 table and place every probe; and a real stall in the real
Alertmanager, a webhook notification whose receiver answers slowly, must be found by ``lgf run``
(uprobe source as shipped: the sampler first, then the goroutine tier it arms) with the stack
Alertmanager was in: ``webhook.(*Notifier).Notify`` down to net/http's ``persistConn.roundTrip``.
And while it idles, its service loops (each waiting in a select one call or more below its
goroutine's start, woken by tickers) are idle waits, never stalls: lgf.idle's rule 6.
"""

from __future__ import annotations

import http.server
import json
import signal
import subprocess
import threading
import time
import urllib.request
from contextlib import contextmanager

import pytest

from lgf.golang.golayout_table import TABLE
from support.alertmanager import Alertmanager, free_port
from support.cli import LGF, lgf, write
from support.wait import poll_until

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
HOOK_DELAY = 0.3
"""How long the webhook receiver takes to answer: the stall Alertmanager's notifier must show."""
NOTIFY_STACK = ("net/http.(*persistConn).roundTrip", "net/http.(*Client).Do",
                "github.com/prometheus/alertmanager/notify/webhook.(*Notifier).Notify",
                "github.com/prometheus/alertmanager/notify.RetryStage.exec")
"""Frames of the notifier goroutine while it waits for the webhook's answer, outermost last."""
AM = "github.com/prometheus/alertmanager"
SERVICE_LOOPS = (f"{AM}/dispatch.(*Dispatcher).run", f"{AM}/silence.(*Silences).Maintenance",
                 f"{AM}/inhibit.(*Inhibitor).run", f"{AM}/nflog.(*Log).run", f"{AM}/store.(*Alerts).Run", "main.run")
"""Alertmanager 0.25's waits for its next tick or signal: the dispatcher (a 30 s maintenance ticker,
under ``(*Dispatcher).Run``), silences' and the notification log's maintenance (under a closure of
``main.run``; under ``nflog.New``'s ``go`` wrapper), the inhibitor (under oklog's ``Group.Run``),
the alert store's GC, and the main goroutine's wait for a signal (``main.run`` under ``main.main``)."""
DISPATCH_TICK = 30
"""Seconds between two wakes of the dispatcher's maintenance ticker (Alertmanager's dispatch.go)."""


@pytest.mark.parametrize("path", [ALERTMANAGER, NODE_EXPORTER])
def test_inspect_accepts_debians_go_1_19_services(path):
    out = lgf("inspect", path, "--json")
    assert out.returncode == 0, out.stderr
    facts = json.loads(out.stdout)
    assert facts["go_version"].startswith("go1.19.") and facts["stripped"] and not facts["has_dwarf"]
    assert facts["offset_source"] == "table"
    assert facts["field_offsets"] == {k: v for k, v in TABLE["1.19"]["fields"].items()}
    assert facts["wait_reasons_source"] == "binary-scan"  # its own array, found in .data
    assert facts["wait_reasons"] == TABLE["1.19"]["waitReasonStrings"]
    assert facts["stw_reasons"] == []  # Go 1.19 has no stwReasonStrings
    planned = {row["function"]: row for row in facts["probes"]}
    for name in ("runtime.execute", "runtime.ready", "runtime.stopTheWorldWithSema",
                 "runtime.startTheWorldWithSema", "runtime.gcStart", "runtime.netpoll"):
        assert "error" not in planned[name], planned[name]
        assert planned[name]["instruction"].startswith("jbe "), planned[name]  # emulated, before the sub
    for name in ("runtime.gcphase", "runtime.sched", "runtime.allgs", "runtime.allglen"):
        assert facts["symbols"][name], name  # runtime globals, found through the code using them


class SlowWebhook:
    """An HTTP receiver that answers every POST after HOOK_DELAY; keeps each request's
    ``(received, answered)`` in CLOCK_MONOTONIC ns, the clock of lgf's stall times."""

    def __init__(self):
        self.calls: list[tuple[int, int]] = []
        calls = self.calls

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                got = time.monotonic_ns()
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(HOOK_DELAY)
                self.send_response(200)
                self.end_headers()
                calls.append((got, time.monotonic_ns()))

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def alertmanager_config(hook_url: str) -> str:
    """Notify the webhook at once and again every second or so: a slow call every ~2 s."""
    return f"""\
route:
  receiver: slow
  group_by: [alertname]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1s
receivers:
  - name: slow
    webhook_configs:
      - url: {hook_url}
        send_resolved: false
"""


def lgf_config(tmp_path, pid: int):
    out = tmp_path / "stalls.jsonl"
    config = write(tmp_path / "plugins.toml", f"""
[lgf]
threshold = "50ms"
spool_dir = "{tmp_path / 'spool'}"

[targets]
pids = [{pid}]

[[sources]]
use = "uprobe"
goroutine_tier = "on_stall"

[[enrichers]]
use = "symbolizer"

[[classifiers]]
use = "waitreason"

[[sinks]]
use = "file"
path = "{out}"
format = "jsonl"

[http]
enabled = false
""")
    return config, out


def notify_stalls(path, pid: int) -> list[dict]:
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
    return [r for r in rows if r.get("kind") == "stall" and r["pid"] == pid
            and all(f in [fr["func"] for fr in r["stack"]] for f in NOTIFY_STACK)]


def all_stalls(path, pid: int) -> list[dict]:
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
    return [r for r in rows if r.get("kind") == "stall" and r["pid"] == pid]


def post_alert(am) -> None:
    body = json.dumps([{"labels": {"alertname": "lgf-test"}}]).encode()
    req = urllib.request.Request(f"{am.url}/api/v2/alerts", body, {"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).close()


def assert_slow_webhook_stall_found(out, am, hook) -> None:
    """The first slow calls arm the goroutine tier (the sampler sees them); later ones are then
    timed exactly. Wait for one of those: a stall that spans a whole webhook call."""
    def spanning() -> list[tuple[dict, tuple[int, int]]]:
        return [(r, c) for r in notify_stalls(out, am.proc.pid) for c in list(hook.calls)
                if r["start_ns"] <= c[0] and c[1] <= r["end_ns"]]
    found = poll_until(spanning, 120, 0.2)
    seen = [(r["start_ns"], r["end_ns"], r["wait_reason"]) for r in notify_stalls(out, am.proc.pid)]
    assert found, f"no stall spanning a webhook call of {HOOK_DELAY}s; calls {hook.calls}; notifier stalls {seen}"
    ev, (got, answered) = found[0]
    assert ev["go_version"].startswith("go1.19.") and ev["exe"] == ALERTMANAGER
    assert ev["wait_reason"] == "select" and ev["cause"] == "select"  # persistConn.roundTrip's select
    assert ev["duration_ns"] >= answered - got >= HOOK_DELAY * 1e9
    assert ev["stack"][0]["func"] == "runtime.gopark"
    assert ev["stack_summary"][0] == "http.(*persistConn).roundTrip"


@contextmanager
def lgf_running(config, log, level: str = "info"):
    """``lgf run config``, its log in ``log``; stopped by SIGINT on the way out, where it must exit 0."""
    with open(log, "w") as err:
        run = subprocess.Popen([*LGF, "--log-level", level, "run", str(config)], stderr=err)
    try:
        yield run
    finally:
        run.send_signal(signal.SIGINT)
        try:
            assert run.wait(timeout=120) == 0, log.read_text()[-3000:]
        finally:
            if run.poll() is None:
                run.kill()


@pytest.mark.bpf
def test_slow_webhook_stall_in_debians_alertmanager_is_found_with_its_stack(tmp_path, bpf_ok):
    hook = SlowWebhook()
    am = Alertmanager(tmp_path / "am", alertmanager_config(hook.url), free_port()).start()
    try:
        config, out = lgf_config(tmp_path, am.proc.pid)
        with lgf_running(config, tmp_path / "lgf.log"):
            post_alert(am)
            assert_slow_webhook_stall_found(out, am, hook)
    finally:
        am.stop()
        hook.close()


@pytest.mark.bpf
def test_idle_alertmanager_reports_no_stall_and_its_slow_webhook_still_is(tmp_path, bpf_ok):
    """Debian's Alertmanager idle under ``lgf run`` for a whole period of its dispatcher's ticker
    (each wake of it was a stall before rule 6; with the sampler's first look at every service
    loop, 9 stall verdicts arming the goroutine tier in 40 s): no stall, and each service loop
    judged idle by name; then an alert whose webhook answers slowly is still found, with its stack."""
    hook = SlowWebhook()
    am = Alertmanager(tmp_path / "am", alertmanager_config(hook.url), free_port()).start()
    try:
        config, out = lgf_config(tmp_path, am.proc.pid)
        log = tmp_path / "lgf.log"

        def idle_sites() -> set[str]:
            prefix = f"sampler: pid {am.proc.pid}: "
            return {ln.rsplit("(service loop: ", 1)[1].rstrip(")\n") for ln in log.read_text().splitlines()
                    if prefix in ln and "goroutines idle (service loop: " in ln}
        with lgf_running(config, log, "debug"):
            assert poll_until(lambda: set(SERVICE_LOOPS) <= idle_sites(), 120, 0.2), (idle_sites(), log.read_text()[-3000:])
            time.sleep(DISPATCH_TICK + 2)  # watched over a whole ticker period: every service loop woke
            stalls = [(r["wait_reason"], r["duration_ns"], [f["func"] for f in r["stack"]][:6])
                      for r in all_stalls(out, am.proc.pid)]
            assert not stalls, stalls
            post_alert(am)
            assert_slow_webhook_stall_found(out, am, hook)
    finally:
        am.stop()
        hook.close()
