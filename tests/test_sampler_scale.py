"""The goroutine sampler in a process of 100,000 goroutines (issue 18, "big processes").

tests/goapps/manyg: 100,000 workers idle at their loop head and a main goroutine that, every
second, waits ``HOLD`` on a mutex another goroutine holds (a real lock stall, mid-work).

1. The shipped policy, real BPF: the uprobe source with ``goroutine_tier = "on_stall"`` (the
   sampler, its wake signal, budgeted tier slices) and a main goroutine idle since start-up, the
   case the turn of the cold pages alone missed (its page is read seconds apart): every stall is
   reported, once, inside the fixture's own clock reads, and the first (before any tier was armed)
   by the sampler, seen through the wake signal (lgf.sources.uprobe.wakes).
2. The sampler on its own, without the wake signal (``wake_signal = false``, or a target whose
   probes cannot be placed): its goroutine tier is real but has no target attached, so it is never
   armed and the sampler has to see stalls itself, from outside. A main goroutine active lately
   (a warm-up) is read every pass once seen changing; its stalls are reported (not necessarily
   every one: one that begins before its page was seen change is left to the cold turn), each
   once, with sampled bounds that keep to the fixture's own clock reads; each idle worker is
   judged once (not once per pass, not again later); passes read some of the g structs' pages,
   not all of them (the hot ones and the next cold ones: lgf.golang.gtable); and the process is
   watched, not named as unwatched.
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
from lgf.sources.uprobe import UprobeOptions, UprobeSource
from lgf.sources.uprobe.sampler import GoroutineSampler
from lgf.sources.uprobe.targets import Targets
from lgf.sources.uprobe.tiers import GoroutineTier
from lgf.stats import Stats
from lgf.testing import EventCollector
from support.goapp import manyg_stalls
from support.gobuild import GO_VERSIONS, GOAPPS, build_go, mutex_wait_reason
from support.stallfixture import run_context, wait_attached
from support.wait import poll_until

pytestmark = pytest.mark.bpf

WORKERS = 100_000
HOLD_MS = 150
"""The threshold (50 ms) + 100 ms: the bench (bench_many_goroutines) measures + 50 ms; a test on
a loaded CI host keeps a margin."""
STALLS = 4
IDLE_SITE = "loop head: main.main.func1"
WARMUP_S = 20
"""Before its stalls, the main goroutine wakes every 10 ms for this long: one active lately, whose
page the sampler reads every pass once it has seen it change (within one cycle of its cold pages:
3 to 14 s at 100,000 goroutines here; a CI run saw the first stall come before that). Without
the wake signal, a goroutine idle since start-up that stalls is seen only if the stall outlasts
threshold + cycle (docs/sources.md)."""


@pytest.mark.parametrize("go", GO_VERSIONS)
def test_every_stall_of_a_goroutine_idle_since_start_up_is_found_with_the_shipped_policy(go, go_toolchains, bpf_ok):
    exe = build_go(GOAPPS / "manyg", go)
    proc = subprocess.Popen([str(exe), "-n", str(WORKERS), "-every", "1s", "-hold", f"{HOLD_MS}ms",
                             "-stalls", str(STALLS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    hello = json.loads(proc.stdout.readline())
    src = UprobeSource(UprobeOptions(goroutine_tier="on_stall"), run_context("50ms", pids=[proc.pid]))
    stats, events = src.ctx.stats, EventCollector()
    src.start(events.send)
    try:
        wait_attached(src, proc.pid)
        assert poll_until(lambda: stats.get("lgf_idle_waits_total", source="sampler", site=IDLE_SITE) >= WORKERS,
                          120, 0.2), "the sampler judges every idle worker once"
        assert poll_until(lambda: stats.get("lgf_sampler_wake_signal", pid=proc.pid) == 1, 60, 0.1), \
            "a process read in turn gets the wake signal"
        made = manyg_stalls(proc)
        time.sleep(1.0)  # the last park's end: the next passes, or the armed tier, see it
    finally:
        src.stop()
        proc.kill()
        proc.wait()

    assert hello["goroutines"] > WORKERS and len(made) == STALLS
    main = [e for e in events.events if e.goid == made[0]["goid"] and e.extra.get("stall") == "park"]
    shown = [(e.start_ns, e.end_ns, e.wait_reason, e.extra) for e in main]
    for i, stall in enumerate(made):
        evs = [e for e in main if e.start_ns <= stall["end_ns"] and e.end_ns >= stall["begin_ns"]]
        assert len(evs) == 1, (i, stall, shown)
        (ev,) = evs
        assert ev.wait_reason.startswith(mutex_wait_reason(exe)) and ev.duration_ns >= 50_000_000, (i, stall, shown)
        assert stall["begin_ns"] <= ev.start_ns <= ev.end_ns <= stall["end_ns"], (i, stall, ev.extra)
        if ev.extra.get("precision") == "sampled":
            assert ev.extra["start_after_ns"] <= stall["begin_ns"] and ev.extra["end_before_ns"] >= stall["end_ns"]
    first = next(e for e in main if e.start_ns <= made[0]["end_ns"] and e.end_ns >= made[0]["begin_ns"])
    assert first.extra.get("precision") == "sampled", "before any stall, only the sampler watches"


@pytest.mark.parametrize("go", GO_VERSIONS)
def test_stalls_of_a_process_with_100000_goroutines_are_found_with_honest_bounds(go, go_toolchains, bpf_ok):
    exe = build_go(GOAPPS / "manyg", go)
    proc = subprocess.Popen([str(exe), "-n", str(WORKERS), "-every", "1s", "-hold", f"{HOLD_MS}ms",
                             "-stalls", str(STALLS), "-warmup", f"{WARMUP_S}s"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    stats, events, log = Stats(), EventCollector(), logging.getLogger("test.sampler_scale")
    options = UprobeOptions(goroutine_tier="on_stall", wake_signal=False)
    tier = GoroutineTier(options, Targets(None, stats, log), log)  # no target attached: never armed
    sampler = GoroutineSampler(options.sample_interval, 50_000_000, tier=tier, services=Services(),
                               emit=events.send, stats=stats, logger=log)
    try:
        hello = json.loads(proc.stdout.readline())
        binary = open_binary(f"/proc/{proc.pid}/exe")
        sampler.add(Target(pid=proc.pid, exe=str(exe), comm="manyg", binary=binary, path=str(exe)))
        sampler.start()
        record = sampler._procs[proc.pid]
        idle = IDLE_SITE
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
