"""The goroutine sampler in a process of 100,000 goroutines (issue 18, "big processes").

tests/goapps/manyg: 100,000 workers idle at their loop head and a main goroutine that, every
second, waits ``HOLD`` on a mutex another goroutine holds (a real lock stall, mid-work). The
sampler runs on its own here: its goroutine tier is real but has no target attached, so it is
never armed and the sampler has to see every stall itself, from outside, as it does in any process
until the tier is armed (and in every process the budget keeps unarmed).

What must hold on every supported toolchain: stalls are reported (not yet every one: issue 18 is
open on a goroutine whose page is still cold), each once,
with sampled bounds that keep to the fixture's own clock reads; each idle worker is judged once (not once per pass, not
again later); passes read some of the g structs' pages, not all of them (the hot ones and the
next cold ones: lgf.golang.gtable); and the process is watched, not named as unwatched.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time

import pytest

from lgf.golang.discovery import Target
from lgf.golang.gobinary import open_binary
from lgf.services import Services
from lgf.sources.uprobe import UprobeOptions
from lgf.sources.uprobe.sampler import GoroutineSampler
from lgf.sources.uprobe.targets import Targets
from lgf.sources.uprobe.tiers import GoroutineTier
from lgf.stats import Stats
from lgf.testing import EventCollector
from support.goapp import manyg_stalls
from support.gobuild import GO_VERSIONS, GOAPPS, build_go, mutex_wait_reason
from support.wait import poll_until

pytestmark = pytest.mark.bpf

WORKERS = 100_000
HOLD_MS = 150
"""The threshold (50 ms) + 100 ms: the bench (bench_many_goroutines) measures + 50 ms; a test on
a loaded CI host keeps a margin."""
STALLS = 4
WARMUP_S = 20
"""Before its stalls, the main goroutine wakes every 10 ms for this long: one active lately, whose
page the sampler reads every pass once it has seen it change (within one cycle of its cold pages:
3 to 14 s at 100,000 goroutines here; a CI run saw the first stall come before that). A goroutine idle since start-up that
stalls is seen only if the stall outlasts threshold + cycle (docs/sources.md)."""


@pytest.mark.parametrize("go", GO_VERSIONS)
def test_stalls_of_a_process_with_100000_goroutines_are_found_with_honest_bounds(go, go_toolchains, bpf_ok):
    exe = build_go(GOAPPS / "manyg", go)
    proc = subprocess.Popen([str(exe), "-n", str(WORKERS), "-every", "1s", "-hold", f"{HOLD_MS}ms",
                             "-stalls", str(STALLS), "-warmup", f"{WARMUP_S}s"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    stats, events, log = Stats(), EventCollector(), logging.getLogger("test.sampler_scale")
    options = UprobeOptions(goroutine_tier="on_stall")
    tier = GoroutineTier(options, Targets(None, stats, log), log)  # no target attached: never armed
    sampler = GoroutineSampler(options.sample_interval, 50_000_000, tier=tier, services=Services(),
                               emit=events.send, stats=stats, logger=log)
    try:
        hello = json.loads(proc.stdout.readline())
        binary = open_binary(f"/proc/{proc.pid}/exe")
        sampler.add(Target(pid=proc.pid, exe=str(exe), comm="manyg", binary=binary, path=str(exe)))
        sampler.start()
        record = sampler._procs[proc.pid]
        idle = "loop head: main.main.func1"
        assert poll_until(lambda: stats.get("lgf_idle_waits_total", source="sampler", site=idle) >= WORKERS, 120, 0.2)
        watched = []  # read while the process lives (its gauges go with it)
        made = manyg_stalls(proc, lambda _stall: watched.append(
            (stats.get("lgf_sampler_goroutines", pid=proc.pid), stats.get("lgf_sampler_unwatched", pid=proc.pid))))
        time.sleep(0.5)  # the last park's end: the next passes see it
        table, pages_read, cycle_ns = record.scan.table, record.scan.pages_read, record.scan.cycle_ns
    finally:
        sampler.stop()
        proc.kill()
        proc.wait()

    assert hello["goroutines"] > WORKERS and len(made) == STALLS
    main = [e for e in events.events if e.goid == made[0]["goid"]]
    seen = [[e for e in main if e.start_ns <= stall["end_ns"] and e.end_ns >= stall["begin_ns"]] for stall in made]
    # Not every stall: issue 18 is open on that (a goroutine whose page is still cold is missed;
    # runs here found 6 to 10 of 10). Every stall reported is one, once, with honest bounds.
    assert any(seen), (made, [(e.start_ns, e.end_ns) for e in main])
    for stall, evs in zip(made, seen, strict=True):
        if not evs:
            continue
        assert len(evs) == 1, (stall, [(e.start_ns, e.end_ns) for e in main])
        (ev,) = evs
        assert ev.extra["precision"] == "sampled" and ev.wait_reason.startswith(mutex_wait_reason(exe))
        # the lower bound lies inside the stall as the fixture timed it; the outer bounds around it
        assert stall["begin_ns"] <= ev.start_ns <= ev.end_ns <= stall["end_ns"], (stall, ev.extra)
        assert ev.extra["start_after_ns"] <= stall["begin_ns"] and ev.extra["end_before_ns"] >= stall["end_ns"]
        assert ev.duration_ns >= 50_000_000
    assert stats.get("lgf_idle_waits_total", source="sampler", site=idle) == WORKERS, "each idle worker judged once"
    assert all(n > WORKERS and not unwatched for n, unwatched in watched), "counted on /metrics, not named unwatched"
    assert 0 < pages_read < len(table.pages) / 2, (pages_read, len(table.pages))
    assert cycle_ns > 0
