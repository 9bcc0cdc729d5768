"""Reload (SIGHUP, `lgf reload`): what did not change keeps running, what changed is swapped, and a
broken config leaves the running one in place.

The live test runs `lgf run` on two copies of the stall fixture (80 ms and 150 ms channel stalls,
over and over) with the goroutine tier on demand, into file sink A at threshold 50 ms. Under that
load it moves the sink to file B and the threshold to 100 ms with `lgf reload`, then writes a
broken config and sends SIGHUP. Checked: the goroutine tier's probes stay in both processes the
whole time (the int3 byte at runtime.execute, read from their memory) and neither is attached
again; stalls under 100 ms stop once the reload is applied; the broken config is refused with
`lgf check`'s own messages and the old config keeps working; every stall the alert policy took
is in exactly one alert, and no alert id appears twice.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import pytest
from test_e2e_uprobe import LgfRun, _probe_addrs

from support.cli import LGF, lgf, write
from support.gobuild import GO_VERSIONS, build_go
from support.stallfixture import STALLS_SRC, StallFixture, probe_bytes

INT3 = 0xCC


def config_text(tmp_path, pids, sink: str, threshold: str, extra: str = "") -> str:
    return f"""
[lgf]
threshold = "{threshold}"
report_interval = "1s"
spool_dir = "{tmp_path / 'spool'}"
{extra}
[targets]
pids = {pids}

[[sources]]
use = "uprobe"
goroutine_tier = "on_stall"
arm_for = "10m"  # the old one-period policy: the tier stays armed however the reloads go

[[classifiers]]
use = "waitreason"

[[sinks]]
use = "file"
name = "record"
path = "{sink}"
receive = "both"

[http]
enabled = false
"""


def rows(path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def wait_for(pred, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout  # a safety net against a hang, not a performance bound
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.bpf
@pytest.mark.slow
def test_reload_under_load_keeps_probes_and_alerts_and_refuses_a_broken_config(tmp_path, bpf_ok, go_toolchains):
    exe = build_go(STALLS_SRC, GO_VERSIONS[1], ldflags="-X main.e2eCopy=reload")
    execute = _probe_addrs(exe)[:1]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    with StallFixture(exe, "chanrecv", "-d", "80ms", "-n", "400") as short, \
            StallFixture(exe, "chanrecv", "-d", "150ms", "-n", "300") as long:
        pids = [short.pid, long.pid]
        config = write(tmp_path / "plugins.toml", config_text(tmp_path, pids, a, "50ms"))
        run = LgfRun(config)
        try:
            for fx in (short, long):
                run.wait_log(f"tracing pid {fx.pid}")
            for fx in (short, long):
                threading.Thread(target=lambda fx=fx: _go(fx), daemon=True).start()

            def armed() -> bool:
                return all(probe_bytes(pid, execute) == [INT3] for pid in pids)

            wait_for(armed, "the goroutine tier armed in both processes")
            wait_for(lambda: all(sum(1 for r in rows(a) if r["kind"] == "stall" and r["pid"] == p) >= 5
                                 for p in pids), "stalls of both processes in sink A")
            wait_for(lambda: any(r["kind"] == "alert" for r in rows(a)), "an alert in sink A")

            # 1. a new sink and a higher threshold, under load, through `lgf reload`
            write(config, config_text(tmp_path, pids, b, "100ms"))
            done = lgf("reload", str(config))
            applied_ns = time.monotonic_ns()
            assert done.returncode == 0, done.stdout + done.stderr
            kept, swapped = done.stdout.split("swapped:")
            assert "source " in kept and "source " not in swapped, done.stdout
            assert "sink record" in swapped, done.stdout
            assert armed(), "a probe was detached by the reload"
            wait_for(lambda: sum(1 for r in rows(b) if r["kind"] == "stall") >= 5, "stalls in sink B")
            a_after = len(rows(a))

            # 2. a broken config: refused with lgf check's words, the running one stays
            broken = config_text(tmp_path, pids, tmp_path / "c.jsonl", "100ms").replace(
                'threshold = "100ms"', 'treshold = "100ms"')
            write(config, broken)
            expected = [ln.strip() for ln in lgf("check", str(config)).stderr.splitlines()[1:]]
            assert expected and any("treshold" in ln for ln in expected)
            refused = lgf("reload", str(config))
            assert refused.returncode == 2 and "treshold" in refused.stderr  # checked before signalling
            n_b = sum(1 for r in rows(b) if r["kind"] == "stall")
            run.proc.send_signal(signal.SIGHUP)
            run.wait_log("reload refused")
            for line in expected:
                run.wait_log(line)
            wait_for(lambda: sum(1 for r in rows(b) if r["kind"] == "stall") >= n_b + 5,
                     "stalls in sink B after the refused reload")
            assert armed(), "a probe was detached by the refused reload"
            assert not (tmp_path / "c.jsonl").exists()
        finally:
            code = run.stop()
    log = "".join(run.lines)
    assert code == 0, log[-3000:]
    for pid in pids:
        assert log.count(f"tracing pid {pid} ") + log.count(f"tracing pid {pid}\n") <= 1, log
        assert f"pid {pid}: goroutine tier armed" in log and f"pid {pid}: goroutine tier disarmed" not in log
    assert len(rows(a)) == a_after, "sink A got something after the reload"

    stalls_a = [r for r in rows(a) if r["kind"] == "stall"]
    stalls_b = [r for r in rows(b) if r["kind"] == "stall"]
    # The new threshold is in force: a stall under it in B can only be one already on its way
    # when the reload was applied.
    late_short = [r for r in stalls_b if r["duration_ns"] < 100_000_000 and r["end_ns"] > applied_ns]
    assert not late_short, late_short[:3]
    assert any(r["pid"] == short.pid for r in stalls_a) and any(r["pid"] == long.pid for r in stalls_b)

    # No alert lost or doubled: every stall the policy took (all of A's, B's from 100 ms) is
    # counted in exactly one alert, and each alert was written once, to one sink.
    alerts = [r for r in rows(a) + rows(b) if r["kind"] == "alert"]
    assert any(r["kind"] == "alert" for r in rows(a)) and any(r["kind"] == "alert" for r in rows(b))
    ids = [r["id"] for r in alerts]
    assert len(ids) == len(set(ids)), "an alert was sent twice"
    taken = len(stalls_a) + sum(1 for r in stalls_b if r["duration_ns"] >= 100_000_000)
    assert sum(r["count"] for r in alerts) == taken, (sum(r["count"] for r in alerts), taken)


def _go(fx: StallFixture) -> None:
    try:
        fx.go(timeout=300)
    except (AssertionError, ValueError, OSError):  # stopped by the test's end: not the point here
        pass


def test_retune_changes_how_the_running_policy_alerts_and_keeps_its_open_groups(tmp_path):
    """A reload's new [alerts], [environments], [silences] and [lgf] settings decide the alerts of
    groups opened after it; a group already open keeps its stalls and still alerts."""
    from lgf.alerts import AlertEngine
    from lgf.event import Event
    from lgf.run import load
    from lgf.stats import Stats

    old = write(tmp_path / "old.toml", f'[lgf]\nspool_dir = "{tmp_path}"\nreport_interval = "1s"\n')
    new = write(tmp_path / "new.toml", f"""
[lgf]
spool_dir = "{tmp_path}"
env = "dev"
window = "1s"
report_interval = "3s"
threshold = "70ms"

[alerts]
group_by = ["service", "cause"]
services = {{ api = "^api" }}
tags = {{ team = "pay" }}
topology = {{ region = "eu" }}

[environments.dev]
threshold = "70ms"
warning = "300ms"

[silences]
rules = [{{ matchers = ["cause=lock"], comment = "known" }}]
""")
    _, old_cfg = load(str(old), entry_points=False)
    _, new_cfg = load(str(new), entry_points=False)
    now = [0]
    engine = AlertEngine(old_cfg, Stats(), clock=lambda: now[0])

    def stall(ms: int, cause: str = "channel", goid: int = 1) -> Event:
        return Event(pid=7, comm="api-1", goid=goid, cause=cause, duration_ns=ms * 1_000_000,
                     start_ns=now[0], end_ns=now[0] + ms * 1_000_000, stack_summary=[f"main.f{goid}"])

    engine.observe(stall(100, goid=1))  # prod: over the 50 ms threshold, opens a group
    assert len(engine.groups) == 1
    engine.retune(new_cfg)
    assert engine.windows.window_ns == 1_000_000_000
    engine.observe(stall(60, goid=2))  # under dev's 70 ms now: not alert material
    engine.observe(stall(400, goid=3))
    engine.observe(stall(400, goid=4))  # same service and cause: one group by the new group_by
    engine.observe(stall(400, cause="lock", goid=5))  # silenced by the new config's rule
    kept, fresh = sorted(engine.due(2**63 - 1), key=lambda a: a.duration_ns)  # the lock one: silenced
    assert kept.extra["count"] == 1 and kept.extra["service"] == "api-1"  # opened before the reload
    assert fresh.extra["count"] == 2 and fresh.extra["service"] == "api" and fresh.env == "dev"
    assert fresh.tags == {"team": "pay"} and fresh.topology["region"] == "eu" and fresh.topology["host"]
    assert fresh.severity == "warning" and fresh.extra["interval_ns"] == 3_000_000_000
    assert [s.matchers for s in engine.silences.list()] == [["cause=lock"]]
    assert engine.stats.get("lgf_alerts_silenced_total", cause="lock", reason="silence") == 1


def test_reload_refuses_a_new_spool_dir_and_keeps_running_config(tmp_path):
    from lgf.run import open_host

    config = write(tmp_path / "p.toml", f'[lgf]\nspool_dir = "{tmp_path / "s1"}"\n[[sinks]]\nuse = "stdout"\n'
                                        "[http]\nenabled = false\n")
    host = open_host(str(config), with_sources=False)
    route = host.routes[0]
    write(config, f'[lgf]\nspool_dir = "{tmp_path / "s2"}"\n[[sinks]]\nuse = "stdout"\n[http]\nenabled = false\n')
    outcome = host.reload()
    assert not outcome.ok and "lgf.spool_dir" in outcome.errors[0]
    assert host.routes == [route] and host.config.host.spool_dir == str(tmp_path / "s1")
    status = json.loads((tmp_path / "s1" / "reload.json").read_text())
    assert status["ok"] is False and "restart" in status["errors"][0]


def test_reload_refuses_a_changed_kubernetes_table_it_would_otherwise_ignore(tmp_path):
    from lgf.run import open_host

    base = f'[lgf]\nspool_dir = "{tmp_path}"\n[[sinks]]\nuse = "stdout"\n[http]\nenabled = false\n'
    config = write(tmp_path / "p.toml", base)
    host = open_host(str(config), with_sources=False)
    write(config, base + '[kubernetes]\nkubelet_pods = "http://127.0.0.1:10255/pods"\n')
    outcome = host.reload()
    assert not outcome.ok and outcome.errors[0].startswith("kubernetes: changed"), outcome.errors
    assert "kubernetes" not in host.config.raw


def test_lgf_reload_without_a_running_lgf_says_so(tmp_path):
    config = write(tmp_path / "p.toml", f'[lgf]\nspool_dir = "{tmp_path}"\n[[sinks]]\nuse = "stdout"\n')
    done = subprocess.run([*LGF, "reload", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "no running lgf" in done.stderr


def test_reload_keeps_an_unchanged_durable_sink_and_swaps_a_changed_classifier(tmp_path):
    """The queue of a sink whose table did not change is the same running queue after the reload;
    a changed classifier is rebuilt and still speaks before the built-in waitreason."""
    from lgf.event import Event
    from lgf.run import open_host

    def text(prefix: str, receive: str) -> str:
        return f"""
[lgf]
spool_dir = "{tmp_path / 'spool'}"

[[classifiers]]
use = "example_prefix"
name = "mine"
prefix = "{prefix}"

[[classifiers]]
use = "waitreason"

[[sinks]]
use = "example_jsonl"
name = "keep"
path = "{tmp_path / 'keep.txt'}"

[[sinks]]
use = "stdout"
name = "change"
receive = "{receive}"

[http]
enabled = false
"""
    config = write(tmp_path / "p.toml", text("chan", "events"))
    host = open_host(str(config), with_sources=False)
    try:
        keep = next(r for r in host.routes if r.name == "keep")
        assert keep.delivery is not None  # a durable queue
        write(config, text("sync", "both"))
        outcome = host.reload()
        assert outcome.ok, outcome.errors
        assert "sink keep" in outcome.kept and "sink change" in outcome.swapped
        assert "classifier mine" in outcome.swapped
        now_keep = next(r for r in host.routes if r.name == "keep")
        assert now_keep is keep and keep.delivery._thread.is_alive()
        assert next(r for r in host.routes if r.name == "change").receive == "both"
        event = host.pipeline.process(Event(wait_reason="sync.Mutex.Lock", duration_ns=60_000_000))
        assert event.cause == "example"  # the new prefix, asked before waitreason
        event = host.pipeline.process(Event(wait_reason="chan receive", duration_ns=60_000_000))
        assert event.cause == "channel"
    finally:
        host.shutdown()
    lines = (tmp_path / "keep.txt").read_text().splitlines()
    assert [ln.split()[1] for ln in lines if ln.endswith("stall")] == ["example", "channel"]


def test_reload_keeps_the_command_lines_overrides(tmp_path):
    """`lgf run --latency-threshold 80ms`: the flag still wins after the file is re-read."""
    from lgf.run import open_host

    def text(threshold: str) -> str:
        return (f'[lgf]\nthreshold = "{threshold}"\nwindow = "300ms"\nspool_dir = "{tmp_path}"\n'
                '[[sinks]]\nuse = "stdout"\n[http]\nenabled = false\n')

    config = write(tmp_path / "p.toml", text("50ms"))
    host = open_host(str(config), with_sources=False,
                     overrides=[("lgf.threshold", "80ms", "--latency-threshold=80ms")])
    try:
        assert host.config.host.threshold == 80_000_000
        write(config, text("60ms").replace('"300ms"', '"400ms"'))
        assert host.reload().ok
        assert host.config.host.threshold == 80_000_000 and host.config.host.window == 400_000_000
        assert host.engine.threshold_ns == 80_000_000 and host.floor_ns == 80_000_000
    finally:
        host.shutdown()


def test_reload_of_idle_rules_reaches_every_tier_through_the_hosts_services(tmp_path):
    """A new `[idle] idle_sites` judges the next event by the new rules: the host's services carry
    them to the scope step (and to the sources' tiers, which judge through the same services)."""
    from lgf.event import Event
    from lgf.run import open_host

    def text(idle: str) -> str:
        return (f'[lgf]\nspool_dir = "{tmp_path}"\n{idle}\n[[classifiers]]\nuse = "waitreason"\n'
                '[[sinks]]\nuse = "stdout"\n[http]\nenabled = false\n')

    def parked() -> Event:
        stack = [{"func": f} for f in ("runtime.gopark", "runtime.chanrecv1", "myapp.(*Poller).wait",
                                        "myapp.process", "myapp.run", "runtime.goexit")]
        return Event(pid=1, goid=7, wait_reason="chan receive", duration_ns=60_000_000, stack=stack)

    config = write(tmp_path / "p.toml", text(""))
    host = open_host(str(config), with_sources=False)
    try:
        rules_before = host.services.idle_rules
        assert host.pipeline.process(parked()).extra["verdict"] == "stall"
        write(config, text('[idle]\nidle_sites = ["myapp.(*Poller).wait"]'))
        outcome = host.reload()
        assert outcome.ok, outcome.errors
        assert "idle rules" in outcome.swapped
        assert host.services.idle_rules is not rules_before
        assert host.pipeline.process(parked()).extra["verdict"] == "idle"
    finally:
        host.shutdown()
