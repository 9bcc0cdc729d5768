"""The goroutine tier's overhead budget (lgf.sources.uprobe.budget), with real BPF on a real
net/http server that stalls once a second: the shape that made ``arm_for = 1m`` cost a service the
whole tier for ever (issue 18).

With the shipped policy (``on_stall``, budgeted slices) lgf must measure what the tier costs the
server (hits counted in BPF x the per-hit cost it measured on this host, against the server's CPU
time), refuse to arm once the budget is spent, and still report every slow request: the sampler
reports those the tier was not armed for, with sampled bounds. Assertions are on what lgf reports
(armed share, cost share, refusals) and on the fixture's own causal clock bounds, never on how
long anything took.
"""

from __future__ import annotations

import time

import pytest

from lgf.sources.uprobe import UprobeOptions, UprobeSource
from lgf.sources.uprobe.budget import BURST_S
from lgf.testing import EventCollector
from lgf.ui.http import target_costs
from lgf.ui.page import render_page
from support.goapp import LineProgram
from support.gobuild import GO_VERSIONS, GOAPPS, build_go
from support.stallfixture import outside_bounds, run_context, wait_attached
from support.wait import poll_until

pytestmark = pytest.mark.bpf

BUDGET = 0.002
"""Below what the armed tier costs this fixture (its switches per CPU second: about 2 % of its CPU
while armed, measured), so that the budget, not the slices alone, decides when it is armed. The
shipped 2 % binds on a loaded server (bench/bench_stalling_service.py)."""
THRESHOLD_NS = 50_000_000
INTERVAL_NS = 20_000_000
STALLS = 24
"""Slow requests, one a second: enough for the initial credit (``BURST_S`` of budget) to run out
and the budget to refuse."""
LIVENESS_S = 120
"""How long to wait for a report before calling lgf hung; nothing is measured by it."""


@pytest.fixture(scope="module", params=GO_VERSIONS)
def server_exe(request, bpf_ok, go_toolchains):
    return build_go(GOAPPS / "bench_server", request.param)


def reported(events, pid: int, res: dict):
    """The stall event of the slow request ``res`` (its goroutine, inside its causal bounds), or None."""
    for ev in events.of_pid(pid):
        if ev.goid != res["goid"] or ev.extra.get("stall") != "park":
            continue
        ended_by = ev.extra.get("end_before_ns") if ev.extra.get("precision") == "sampled" else None
        if not outside_bounds(res, ev.start_ns, ev.end_ns, ended_by=ended_by):
            return ev
    return None


def test_a_service_stalling_every_second_keeps_its_tier_within_the_budget(server_exe):
    # -tick 5ms: a goroutine switching all the time, as a busy service's do, so the armed tier's
    # hits cost the server a real share of its CPU.
    server = LineProgram(server_exe, "-idle", "4", "-tick", "5ms")
    src = UprobeSource(UprobeOptions(goroutine_tier="on_stall", overhead_budget=BUDGET, sample_interval=INTERVAL_NS),
                       run_context("50ms", pids=[server.pid]))
    events = EventCollector()
    src.start(events)
    try:
        wait_attached(src, server.pid)
        assert poll_until(lambda: src.runtime_counters(server.pid).get("target_cpu_seconds") is not None,
                          LIVENESS_S, 0.1), "the budget reads the target's CPU time"
        made, mid = [], None
        next_at = time.monotonic()
        for _ in range(STALLS):
            made.append(server.cmd("lock 120"))  # answers after the 120 ms lock wait and 300 ms more
            counters = src.runtime_counters(server.pid)
            if mid is None and counters.get("tier_arm_refused", 0) > 0:
                mid = counters  # the initial credit is spent: from here the budget alone governs
            next_at += 1.0
            time.sleep(max(0.0, next_at - time.monotonic()))
        # Reports come as stalls end, in order: once the last one is in, the others are too.
        events.wait_for(lambda e: reported(events, server.pid, made[-1]) is not None, LIVENESS_S)
        found = [reported(events, server.pid, r) for r in made]
        end = src.runtime_counters(server.pid)
        periods = src.tier_periods(server.pid)
        page = render_page({}, [], refresh=0, costs=target_costs([src]))
        pid = server.pid
    finally:
        src.stop()
        server.close()

    # Every slow request is reported, but for one known gap: a stall in progress when a slice
    # ends (the hand-back) is seen by the sampler only from its next pass, and reported only if
    # what is left of it reaches the threshold. Those end within threshold + 2 sample intervals of
    # a disarm; any other stall missing is a failure.
    gap_ns = THRESHOLD_NS + 3 * INTERVAL_NS
    handback = [i for i, (ev, r) in enumerate(zip(found, made, strict=True)) if ev is None
                and any(off is not None and off <= r["end_ns"] <= off + gap_ns for _, off in periods)]
    missing = [i for i, ev in enumerate(found) if ev is None and i not in handback]
    detail = [(i, made[i]["begin_ns"], made[i]["end_ns"], made[i]["goid"],
               [(on, off) for on, off in periods if on - 5e9 < made[i]["begin_ns"] < (off or on) + 5e9],
               [(e.goid, e.start_ns, e.end_ns, e.extra.get("precision"), e.extra.get("stall")) for e in events.of_pid(pid)
                if abs(e.end_ns - made[i]["end_ns"]) < 2e9]) for i in missing]
    assert not missing, f"slow requests not reported: {missing} of {len(made)} (hand-back gap: {handback}) {detail}"
    assert len(handback) <= len(made) // 4, f"too many stalls lost at hand-backs: {handback} of {len(made)}"
    precision = ["lost" if ev is None else "sampled" if ev.extra.get("precision") == "sampled" else "exact"
                 for ev in found]

    # The latency page shows what lgf measured of the server: its row, the share and the budget.
    row = page.split(f'<tr class="cost"><td>{pid}</td>', 1)
    assert len(row) == 2, "the latency page lists the server's cost"
    assert f"{100 * BUDGET:.1f} %" in row[1].split("</tr>", 1)[0], row[1][:400]

    # What lgf measured: the tier did run (hits counted in BPF), priced at a per-hit cost it knows.
    assert end["tier_hits"] > 0 and "exact" in precision, (end, precision)
    assert 0 < end["probe_hit_cost_seconds"] < 50e-6, end
    # The budget held: some stalls were refused an arming and reported by the sampler instead...
    assert end["tier_arm_refused"] > 0 and "sampled" in precision[1:], (end, precision)
    assert mid is not None, end
    # ... the tier was armed a small share of the time (the old one-minute arming: all of it) ...
    assert end["tier_armed_share"] < 0.5, end
    # ... and once the bucket's initial credit was spent, the tier's cost stayed near the budget:
    # what it cost from then on, over the server's CPU from then on. Slack: a slice overshoots by
    # what the tier costs between two of the budget's readings before it is disarmed.
    cost = end["tier_cost_seconds"] - mid["tier_cost_seconds"]
    cpu = end["target_cpu_seconds"] - mid["target_cpu_seconds"]
    assert cpu > 0, (mid, end)
    assert cost / cpu <= 3 * BUDGET, (cost / cpu, mid, end, precision)
    # Over the whole run: the budget plus at most the initial credit (BURST_S of budget) spread
    # over the run's CPU, plus the same slack.
    assert end["tier_cost_share"] <= BUDGET * (3 + BURST_S / max(1.0, STALLS)), end
