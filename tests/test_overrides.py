"""Command-line overrides on `lgf check` and `lgf run`, through the real `lgf` command."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from support.cli import LGF, lgf, write


@pytest.fixture
def config(tmp_path):
    return write(tmp_path / "plugins.toml", f"""
[lgf]
spool_dir = "{tmp_path / 'spool'}"
threshold = "50ms"
[environments.staging]
like = "test"
[[sinks]]
use = "stdout"
""")


def test_without_overrides_check_reports_the_files_settings(config):
    out = lgf("check", str(config))
    assert out.returncode == 0, out.stderr
    assert "env prod, threshold 50 ms, window 200 ms, report interval 10 s" in out.stdout


def test_the_named_flags_change_what_check_reports(config):
    out = lgf("check", str(config), "--latency-threshold=30ms", "--window-size=100ms", "--report-interval", "5s",
              "--env", "staging")
    assert out.returncode == 0, out.stderr
    assert "env staging, threshold 30 ms, window 100 ms, report interval 5 s" in out.stdout
    assert "override: lgf.threshold = 30ms" in out.stdout
    assert "alerts from 100 ms; quiet windows: after a load test 30 min; run-time silences apply at once" in out.stdout


def test_environment_and_baseline_overrides_show_in_check(config):
    prod = lgf("check", str(config))
    assert "quiet windows: none; run-time silences need approval; baselines: alert at z >= 2 with sigma x 0.8" \
        in prod.stdout
    changed = lgf("check", str(config), "--set", "environments.prod.drift_z=3", "--set", "environments.prod.approval=false",
                  "--set", "baselines.window=48h")
    assert changed.returncode == 0, changed.stderr
    assert "run-time silences apply at once; baselines: alert at z >= 3 with sigma x 0.8 over 48 h" in changed.stdout
    off = lgf("check", str(config), "--set", "baselines.enabled=false")
    assert "baselines: off" in off.stdout


def test_set_reaches_any_key_and_later_flags_win(config):
    out = lgf("check", str(config), "--set", "environments.prod.warning=200ms", "--set", "sinks[0].format=json",
              "--set", "lgf.threshold=40ms", "--latency-threshold", "35ms")
    assert out.returncode == 0, out.stderr
    assert "threshold 35 ms" in out.stdout


@pytest.mark.parametrize("flags,message", [
    (["--set", "lgf.treshold=30ms"],
     "lgf.treshold: unknown key (did you mean 'threshold'?; from --set lgf.treshold=30ms)"),
    (["--latency-threshold", "30"], "lgf.threshold: expected a duration string"),
    (["--window-size", "fast"], "lgf.window: 'fast' is not a duration"),
    (["--env", "prd"], "lgf.env: unknown environment 'prd'"),
    (["--set", "environments.prod.warning=2s"],
     "environments.prod: critical must be at least warning (from --set environments.prod.warning=2s)"),
    (["--set", "sinks[0].format=jsn"], "sinks[0].format: 'jsn' is not one of 'text', 'json' (did you mean 'json'?"),
    (["--set", "sinks[3].format=json"], "sinks[3]: no such table (the config has 1 [[sinks]])"),
    (["--set", "lgff.threshold=1ms"], "lgff: unknown section (did you mean 'lgf'?"),
])
def test_a_bad_override_is_refused_like_the_file_with_its_flag(config, flags, message):
    out = lgf("check", str(config), *flags)
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_a_malformed_set_is_a_usage_error(config):
    out = lgf("check", str(config), "--set", "lgf.threshold")
    assert out.returncode == 2 and "write KEY=VALUE" in out.stderr


def test_run_takes_the_same_overrides(config):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([*LGF, "run", str(config), "--env", "dev", "--latency-threshold", "30ms",
                             "--set", f"http.listen=127.0.0.1:{port}"], stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(400):
            try:
                data = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/debug/latency", timeout=1).read())
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                time.sleep(0.05)
        else:
            raise AssertionError("lgf run never answered")
        assert data["env"] == "dev" and data["threshold_ns"] == 200_000_000  # dev's own alert threshold
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert "threshold 30.0 ms" in proc.stderr.read()
