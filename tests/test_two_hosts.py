"""Two hosts in one process share nothing (issue 17): each has its own config, plugin manager,
scope step, idle rules, symbol cache, trace capture, arming, robot budgets, alert policy and
sinks. Built with ``lgf.testing.PipelineRun`` (a real host, no sources), side by side."""

from __future__ import annotations

import time

import pytest

from lgf import Event
from lgf.testing import PipelineRun
from support.fakewecom import FakeWeCom

KEY = "shared-robot-key"
POLLER_WAIT = ["runtime.gopark", "runtime.chanrecv", "runtime.chanrecv1", "myapp.(*Poller).waitForWork",
               "myapp.(*Poller).loop", "main.worker", "runtime.goexit"]
"""A worker parked inside its poller: a stall by lgf's own rule, idle where ``[idle]`` says so."""


def config(url: str, idle_sites: str, trace_context: bool) -> str:
    return f"""
[lgf]
report_interval = "1h"

[idle]
idle_sites = [{idle_sites}]

{'[[enrichers]]' + chr(10) + 'use = "trace_context"' if trace_context else ''}

[[enrichers]]
use = "symbolizer"

[[sinks]]
use = "wecom"
key_env = "LGF_TEST_TWO_HOSTS_KEY"
url = "{url}"
"""


def stall(goid: int, stack=POLLER_WAIT, ms: int = 150) -> Event:
    return Event(pid=4242, comm="worker", goid=goid, wait_reason="chan receive", source="uprobe",
                 start_ns=10**9, end_ns=10**9 + ms * 1_000_000, duration_ns=ms * 1_000_000,
                 stack=[{"func": f, "file": "", "line": 0, "pc": 0, "inlined": False} for f in stack],
                 extra={"stall": "park"})


@pytest.fixture
def hosts(monkeypatch):
    monkeypatch.setenv("LGF_TEST_TWO_HOSTS_KEY", KEY)
    fake = FakeWeCom(keys=(KEY,)).start()
    a = PipelineRun(config(fake.url, '"myapp.(*Poller).wait*"', trace_context=True))
    b = PipelineRun(config(fake.url, "", trace_context=False))
    try:
        yield a, b, fake
    finally:
        a.close()
        b.close()
        fake.stop()


def test_two_hosts_with_different_configs_share_nothing(hosts):
    a, b, fake = hosts
    sa, sb = a.host.services, b.host.services

    # One shared service of each kind per host, never the other's.
    for name in ("symbolizers", "idle_rules", "arming", "trace_capture", "robot_budgets"):
        assert getattr(sa, name) is not getattr(sb, name), name
    assert a.manager is not b.manager and a.host.engine is not b.host.engine

    # Each host made its own scope step with its own services; the symbolizer enricher of each
    # uses its host's symbol cache.
    scope_a, scope_b = (run.manager.pm.get_plugin("lgf.plugins.scope:scope") for run in (a, b))
    assert scope_a is not scope_b and scope_a.services is sa and scope_b.services is sb
    sym_a, sym_b = a.manager.pm.get_plugin("enrichers[1]"), b.manager.pm.get_plugin("enrichers[0]")
    assert sym_a.backend.symbolizers is sa.symbolizers and sym_b.backend.symbolizers is sb.symbolizers

    # The trace capture is on only where trace_context is configured.
    assert sa.trace_capture.enabled and not sb.trace_capture.enabled

    # Each host's wecom sink has its own budget for the same robot key.
    wa, wb = a.sink("wecom"), b.sink("wecom")
    assert wa.budget is not wb.budget
    assert wa.budget is sa.robot_budgets.budget_for(fake.url, KEY, 20, 61.0, a.config.host.spool_dir)

    # The same stalled goroutine, judged by each host's [idle] rules: idle in A, a stall in B.
    [ea] = a.feed(stall(goid=1))
    [eb] = b.feed(stall(goid=1))
    assert ea.extra["verdict"] == "idle" and ea.extra["decided_by"] == "myapp.(*Poller).waitForWork"
    assert eb.extra["verdict"] == "stall"
    assert a.collected.stalls == [] and a.stats.total("lgf_idle_waits_total") == 1
    assert b.collected.stalls == [eb] and b.stats.total("lgf_idle_waits_total") == 0

    # What one host is fed never shows up in the other: events, alerts, counters, robot budget.
    handler = ["runtime.gopark", "sync.runtime_SemacquireMutex", "sync.(*Mutex).Lock", "main.pay",
               "net/http.serverHandler.ServeHTTP", "net/http.(*conn).serve", "runtime.goexit"]
    fed_a = a.feed(*(stall(goid=10 + i, stack=handler, ms=300) for i in range(3)))
    assert all(e.scope == "request" for e in fed_a)
    assert {e.id for e in b.collected.events}.isdisjoint(e.id for e in fed_a)
    assert b.stats.total("lgf_events_total") == 1 and a.stats.total("lgf_events_total") == 3
    assert b.host.engine.groups and a.host.engine.groups
    [alert_a] = a.flush_alerts()
    assert alert_a.extra["count"] == 3 and alert_a.extra["example_event_id"] in {e.id for e in fed_a}
    assert b.collected.alerts == [] and a.collected.alerts == [alert_a]
    deadline = time.monotonic() + 30
    while not fake.received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(fake.received) == 1 and alert_a.id in fake.received[0].content
    assert wa.budget.remaining(wa.clock.now()) == 19 and wb.budget.remaining(wb.clock.now()) == 20
