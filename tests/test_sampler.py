"""The goroutine sampler (``lgf.sources.uprobe.sampler``) inside the uprobe source with
``goroutine_tier = "on_stall"`` and no other cheap tier: real BPF, the real ``stalls`` fixture,
every supported Go toolchain.

What it must do: see the first stall of an episode from outside (no probe), report it once with
sampled bounds that contain the fixture's own figure, arm the goroutine tier, and leave the
following stalls to the tier's precise report (one that begins while the tier is being attached
is handed off: the sampler reports it), never losing one and never reporting one stall twice. What it must not
do: arm on short waits, or on the runtime's own goroutines parked by design.
"""

from __future__ import annotations

import time

import pytest

from lgf.causes import INTERNAL_WAIT_REASONS, cause_of
from lgf.golang.runtime_reader import RuntimeReader, allg_pointers, read_g_fields
from lgf.sources.uprobe import UprobeOptions, UprobeSource
from lgf.testing import EventCollector
from support.gobuild import GO_VERSIONS, build_go, mutex_wait_reason
from support.stallfixture import (
    STALLS_SRC,
    StallFixture,
    outside_bounds,
    run_context,
    unexplained,
    wait_attached,
)
from support.wait import poll_until

pytestmark = pytest.mark.bpf

INTERVAL_NS = 20_000_000

MODES = {"chanrecv": "channel", "mutex": "lock"}


@pytest.fixture(scope="module", params=GO_VERSIONS)
def sampled(request, bpf_ok, go_toolchains):
    """(source, collector, fixture binary): on_stall, so only the sampler can arm the tier."""
    exe = build_go(STALLS_SRC, request.param, ldflags="-X main.privateCopy=sampler")
    ctx = run_context("50ms", exe=[str(exe)])
    src = UprobeSource(UprobeOptions(goroutine_tier="on_stall", sample_interval=INTERVAL_NS), ctx)
    events = EventCollector()
    src.start(events)
    yield src, events, exe, ctx
    src.stop()


def wait_sampled(ctx, samples: int = 2) -> None:
    """Until the sampler has made ``samples`` more passes (a target is added to it just after
    attach, once its binary's runtime functions are listed)."""
    start = ctx.stats.total("lgf_sampler_samples_total")
    poll_until(lambda: ctx.stats.total("lgf_sampler_samples_total") >= start + samples, 20, INTERVAL_NS / 1e9)


def armed(src, pid: int) -> bool:
    return "on_execute" in src.probe_addresses(pid)


def assert_never_twice(events) -> None:
    """No two reports of one goroutine overlap in time: one park, one event."""
    by_goid: dict[int, list] = {}
    for e in events:
        if e.extra.get("stall") == "park":
            by_goid.setdefault(e.goid, []).append(e)
    for goid, evs in by_goid.items():
        evs.sort(key=lambda e: e.start_ns)
        for a, b in zip(evs, evs[1:], strict=False):
            assert a.end_ns <= b.start_ns, f"goroutine {goid} reported twice: {a} / {b}"


@pytest.mark.parametrize("mode", sorted(MODES))
def test_first_stall_is_sampled_and_arms_the_tier_which_reports_the_rest(sampled, mode):
    src, events, exe, ctx = sampled
    # Back to back: the second stall may begin while the tier armed by the first attaches (13 ms
    # to 1.8 s under load). Then it is the sampler's, handed off; either way it is reported once.
    with StallFixture(exe, mode, "-n", "3") as fx:
        wait_attached(src, fx.pid)
        wait_sampled(ctx)
        assert not armed(src, fx.pid), "nothing is stuck yet: the goroutine tier stays off"
        results = fx.go()
        for res in results:
            events.wait_for(lambda e, g=res["goid"]: e.pid == fx.pid and e.goid == g)
        assert armed(src, fx.pid), "a goroutine parked over the threshold arms the goroutine tier"
        got = wait_no_duplicate(events, fx.pid, results)
    assert len(results) == 3
    first, *rest = results
    # the source's own cause (no stack here): Go 1.19 names a Mutex wait "semacquire", cause sync
    want = cause_of("park", mutex_wait_reason(exe)) if mode == "mutex" else MODES[mode]
    per_stall = [[e for e in got if e.goid == r["goid"] and cause_of(e.extra["stall"], e.wait_reason)
                  == want] for r in results]
    summary = [[(e.duration_ns, e.extra) for e in evs] for evs in per_stall]
    assert [len(evs) for evs in per_stall] == [1, 1, 1], summary

    (ev,) = per_stall[0]
    assert ev.extra["precision"] == "sampled" and ev.extra["sample_interval_ns"] == INTERVAL_NS
    # Inner bounds: parked for at least [start_ns, end_ns], the samples that saw it parked, so
    # inside the fixture's own clock reads; outer: the samples around it, the later one after
    # the wait surely ended.
    assert ev.duration_ns == ev.end_ns - ev.start_ns
    assert ev.extra["start_after_ns"] < ev.start_ns and ev.end_ns < ev.extra["end_before_ns"], ev.extra
    broken = outside_bounds(first, ev.start_ns, ev.end_ns, ended_by=ev.extra["end_before_ns"])
    assert not broken, (broken, ev, first)
    assert ev.pcs, "the sampled stall carries the goroutine's user stack"
    assert ev.go_version and ev.build_id and ev.exe and ev.ts.endswith("Z")

    for res, (ev,) in zip(rest, per_stall[1:], strict=True):
        # Precise if the tier noted its start; sampled (handed off) if it began while the tier was
        # still being attached, a window a loaded host stretches. Inside the causal bounds either way.
        ended_by = ev.extra["end_before_ns"] if "precision" in ev.extra else None
        broken = outside_bounds(res, ev.start_ns, ev.end_ns, ended_by=ended_by)
        assert not broken, (broken, ev, res)
    assert_never_twice(got)


def wait_no_duplicate(events, pid: int, results) -> list:
    """The events of ``pid`` once every stall in ``results`` has one, after giving a second
    report of one (the other tier's) time to arrive: it is dropped, and must never show up."""
    goids = {r["goid"] for r in results}
    events.wait_for(lambda e: e.pid == pid and e.goid in goids
                    and sum(1 for x in events.events if x.pid == pid and x.goid == e.goid) > 1, timeout=1.0)
    return events.of_pid(pid)


def test_a_park_that_begins_while_the_tier_attaches_is_reported_once(sampled):
    """Attaching the goroutine tier takes 13 ms to 1.8 s on a loaded host. A stall that begins
    meanwhile has no start the tier could note: the sampler, which goes on sampling while the tier
    attaches and hands off once it is complete, reports it, and nothing is reported twice. The
    attach is slowed here on purpose (as a loaded host would): stall #2 (of 400 ms) begins while
    it is delayed and, on a quiet host, ends after the tier is complete (the hand-off pass keeps
    it). Without the hand-off it is lost."""
    src, events, exe, ctx = sampled
    real_arm = src.tier.arm  # what the arming thread runs (every cheap tier's one path)
    attaching: list[tuple[int, int]] = []

    def slow_arm(pid: int) -> None:
        t0 = time.monotonic_ns()
        time.sleep(DELAY_NS / 1e9)
        real_arm(pid)
        attaching.append((t0, time.monotonic_ns()))

    src.tier.arm = slow_arm
    try:
        with StallFixture(exe, "chanrecv", "-n", "3", "-d", "400ms") as fx:
            wait_attached(src, fx.pid)
            wait_sampled(ctx)
            results = fx.go()
            for res in results:
                events.wait_for(lambda e, g=res["goid"]: e.pid == fx.pid and e.goid == g)
            got = wait_no_duplicate(events, fx.pid, results)
    finally:
        src.tier.arm = real_arm
    assert attaching, "the first stall armed the tier"
    t0 = min(start for start, _end in attaching)  # the run-queue reader may have asked too
    per_stall = [[e for e in got if e.goid == r["goid"] and e.extra.get("stall") == "park"] for r in results]
    summary = [[(e.start_ns - t0, e.duration_ns, e.extra) for e in evs] for evs in per_stall]
    assert [len(evs) for evs in per_stall] == [1, 1, 1], (summary, attaching)
    # Begun after arming was asked and before any probe of the tier was in place: only the
    # sampler can report it.
    meanwhile = [ev for res, (ev,) in zip(results, per_stall, strict=True) if t0 < res["begin_ns"] < t0 + DELAY_NS]
    assert meanwhile, ("stall #2 began while the tier was being armed", summary, results)
    for ev in meanwhile:
        assert ev.extra.get("precision") == "sampled", summary
    for res, (ev,) in zip(results, per_stall, strict=True):
        ended_by = ev.extra["end_before_ns"] if "precision" in ev.extra else None
        assert not outside_bounds(res, ev.start_ns, ev.end_ns, ended_by=ended_by), (summary, res)
    assert_never_twice(got)


DELAY_NS = 600_000_000
"""How long the slowed arming waits before it attaches the tier."""


def test_noise_arms_nothing_for_short_waits(sampled):
    """Thousands of 1-10 ms waits: no worker is ever sampled as stuck, although each is seen
    waiting in sample after sample (only g.trackingSeq tells its short parks apart). The fixture's
    main goroutine waits two seconds for its workers (a real park): the only one it may report."""
    src, events, exe, ctx = sampled
    before = ctx.stats.total("lgf_sampler_stalls_total")
    with StallFixture(exe, "noise", "-n", "40") as fx:
        wait_attached(src, fx.pid)
        wait_sampled(ctx)
        (res,) = fx.go()
        workers = set(res["goids"])
        time.sleep(3 * INTERVAL_NS / 1e9)
        got = events.of_pid(fx.pid)
    assert res["waits"] > 1000, "the fixture made thousands of short waits"
    reported = [(e.goid, e.start_ns, e.end_ns) for e in got if e.goid in workers]
    assert not unexplained(reported, res["long_waits"]), (reported, res["long_waits"])
    assert {e.goid for e in got} <= {fx.main_goid} | workers
    # Only main's two-second wait, and any wait the host itself stretched past the threshold.
    assert ctx.stats.total("lgf_sampler_stalls_total") - before <= 1 + len(res["long_waits"])
    assert ctx.stats.total("lgf_sampler_samples_total") > 50, "the sampler did look, many times"


def test_runtime_goroutines_parked_forever_never_arm(sampled):
    """An idle fixture: only the runtime's own goroutines (finalizer, sweeper, scavenger, forcegc)
    are parked, for as long as it lives. Checked from outside that they really stay parked
    across the whole wait, and that the sampler neither arms nor reports."""
    src, events, exe, ctx = sampled
    with StallFixture(exe, "chanrecv") as fx:
        wait_attached(src, fx.pid)
        wait_sampled(ctx)
        first = runtime_parks(fx.pid)
        before = ctx.stats.total("lgf_sampler_samples_total")
        time.sleep(0.5)
        still = runtime_parks(fx.pid) & first
        assert "finalizer wait" in {reason for _g, _goid, _seq, reason in still}, still
        assert ctx.stats.total("lgf_sampler_samples_total") - before >= 10
        assert not armed(src, fx.pid)
        assert not events.of_pid(fx.pid)
        fx.go()


def runtime_parks(pid: int) -> set[tuple]:
    """(g, goid, trackingSeq, wait reason) of every goroutine parked with a runtime wait reason."""
    r = RuntimeReader(pid)
    try:
        fields = sorted([(r.offset("g", "atomicstatus"), "I"), (r.offset("g", "goid"), "Q"),
                         (r.offset("g", "waitreason"), "B"), (r.offset("g", "trackingSeq"), "B")])
        names = [f for _, f in sorted([(r.offset("g", n), n) for n in
                                       ("atomicstatus", "goid", "waitreason", "trackingSeq")])]
        reasons = r.binary.wait_reasons
        out = set()
        for g, *vals in read_g_fields(r, allg_pointers(r, 100_000), fields):
            v = dict(zip(names, vals, strict=True))
            reason = reasons[v["waitreason"]] if v["waitreason"] < len(reasons) else ""
            if v["atomicstatus"] & 0xFFF == 4 and reason in INTERNAL_WAIT_REASONS:
                out.add((g, v["goid"], v["trackingSeq"], reason))
        return out
    finally:
        r.close()
