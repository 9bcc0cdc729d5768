"""Scheduling latency from every way a goroutine becomes runnable, on real Go programs.

The fixture (tests/goapps/runnable) makes one goroutine runnable by one scheduler path while
main holds the only P in a loop nothing can preempt, and measures the wait itself; lgf's uprobe
source (goroutine tier, ``sched_latency``) must report each wait with the goroutine's id, cause
``sched_latency``, the path in ``extra["runnable_from"]`` and a duration within 5 ms of the
fixture's figure, on Go 1.21, 1.25 and 1.27. With ``goroutine_tier = "on_stall"`` the cheap tier
(the sampler's run-queue reader, ``lgf.golang.runq``) must arm the goroutine tier on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from lgf.causes import cause_of
from lgf.sources.uprobe import UprobeOptions, UprobeSource
from lgf.testing import EventCollector
from support.gobuild import GO_VERSIONS, GOAPPS, build_go
from support.stallfixture import StallFixture, run_context, wait_attached

pytestmark = pytest.mark.bpf

RUNNABLE_SRC = GOAPPS / "runnable"
THRESHOLD_NS = 50_000_000
SLACK_NS = 5_000_000
HOLD = "250ms"
"""How long main holds the P (by the clock): waits well over the threshold."""


FIXTURE_NICE = -10
"""The fixture's threads run at this priority, so that a thread whose syscall ended is woken
without waiting behind the other jobs of a busy host: that wake-up is part of the true wait (lgf
dates it from exitsyscall, after it), but the fixture cannot see it and counts from the sleep's
end. Measured here under load at the default priority: up to 11 ms."""


class RunnableFixture(StallFixture):
    """The runnable fixture, which needs GODEBUG=asyncpreemptoff=1 in every mode."""

    def __init__(self, exe, mode: str, *args: str):
        self.mode = mode
        self.proc = subprocess.Popen([str(exe), mode, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env={**os.environ, "GODEBUG": "asyncpreemptoff=1"},
                                     preexec_fn=lambda: os.nice(FIXTURE_NICE))
        self.hello = json.loads(self.proc.stdout.readline())
        self.pid = self.proc.pid
        self.main_goid = self.hello["main_goid"]


@pytest.fixture(scope="module", params=GO_VERSIONS)
def always(request, bpf_ok, go_toolchains):
    """(source, collector, fixture binary) for one Go version, goroutine tier always on."""
    exe = build_go(RUNNABLE_SRC, request.param)
    src = UprobeSource(UprobeOptions(goroutine_tier="always"), run_context("50ms", exe=[str(exe)]))
    events = EventCollector()
    src.start(events)
    yield src, events, exe
    src.stop()


def waits_reported(src, events, exe, mode: str) -> list[tuple[dict, list]]:
    """Run ``mode`` twice; for each wait the fixture measured over the threshold, what lgf reported."""
    with RunnableFixture(exe, mode, "-d", HOLD, "-n", "2") as fx:
        wait_attached(src, fx.pid)
        time.sleep(0.2)  # the goroutine tier's probes go on right after the attach
        results = fx.go()
        out = []
        for res in results:
            if res["wait_ns"] < THRESHOLD_NS + SLACK_NS:
                continue  # the host was busy and the loop short: not a stall to report
            found = events.wait_for(lambda e, res=res: e.pid == fx.pid and e.goid == res["goid"]
                                    and e.extra.get("stall") == "runnable")
            out.append((res, found))
    assert out, f"no wait over the threshold in {results}"
    return out


@pytest.mark.parametrize("mode", ["syscall", "netpoll", "gosched", "newproc"])
def test_each_wait_for_a_p_is_reported_with_its_goroutine_cause_path_and_duration(always, mode):
    src, events, exe = always
    for res, found in waits_reported(src, events, exe, mode):
        assert len(found) == 1, (res, [(e.extra, e.duration_ns) for e in found])
        ev = found[0]
        print(f"{exe.name} {mode}: fixture {res['wait_min_ns'] / 1e6:.2f}-{res['wait_ns'] / 1e6:.2f} ms, "
              f"lgf {ev.duration_ns / 1e6:.2f} ms from {ev.extra.get('runnable_from')}")
        assert cause_of(ev.extra["stall"], ev.wait_reason) == "sched_latency"
        assert ev.extra["runnable_from"] == res["from"]
        assert res["wait_min_ns"] - SLACK_NS <= ev.duration_ns <= res["wait_ns"] + SLACK_NS, (res, ev.duration_ns)


@pytest.mark.parametrize("version", GO_VERSIONS)
@pytest.mark.parametrize("mode", ["syscall", "netpoll"])
def test_the_cheap_tier_arms_on_a_goroutine_waiting_for_a_p(bpf_ok, go_toolchains, version, mode):
    exe = build_go(RUNNABLE_SRC, version)
    src = UprobeSource(UprobeOptions(goroutine_tier="on_stall"), run_context("50ms", exe=[str(exe)]))
    events = EventCollector()
    src.start(events)
    try:
        # Held longer: the sampler sees a wait once it lasts threshold + about two sample intervals,
        # and a busy host stretches the sampler's interval.
        with RunnableFixture(exe, mode, "-d", "600ms", "-n", "2", "-step") as fx:
            wait_attached(src, fx.pid)
            assert "on_execute" not in src.probe_addresses(fx.pid)  # unarmed: no probe per switch
            fx.proc.stdin.write("\n")
            fx.proc.stdin.flush()
            first = json.loads(fx.proc.stdout.readline())
            deadline = time.monotonic() + 30
            while "on_newproc" not in src.probe_addresses(fx.pid) and time.monotonic() < deadline:
                time.sleep(0.05)  # arming attaches the tier's probes one by one (on_newproc last)
            armed = "on_execute" in src.probe_addresses(fx.pid)
            (second,) = fx.go()
            sampled = events.wait_for(lambda e: e.pid == fx.pid and e.goid == first["goid"]
                                      and e.extra.get("stall") == "runnable")
            exact = events.wait_for(lambda e: e.pid == fx.pid and e.goid == second["goid"]
                                    and e.extra.get("stall") == "runnable")
    finally:
        src.stop()
    assert armed, (first, src.ctx.stats.snapshot())  # by the sampler's run-queue reader, from outside
    assert [e.extra.get("precision") for e in sampled] == ["sampled"], (
        first, [(e.goid, e.extra) for e in events.events], src.ctx.stats.snapshot())
    assert THRESHOLD_NS <= sampled[0].duration_ns <= first["wait_ns"]  # a lower bound
    assert len(exact) == 1 and exact[0].extra["runnable_from"] == second["from"]  # then measured exactly
    assert second["wait_min_ns"] - SLACK_NS <= exact[0].duration_ns <= second["wait_ns"] + SLACK_NS
