"""The uprobe source against real Go programs: every stall kind of the ``stalls`` fixture, on
every supported Go toolchain, compared with the program's own figures (pid, goid, duration).

One source per Go version serves all its fixtures: it watches the fixture binary by path, so each
fixture process is attached live as it starts (the discovery path a production host uses) and the
BPF program is compiled once per version, not once per test.
"""

from __future__ import annotations

import os
import threading

import pytest

from lgf.bpf import loader as bpfutil
from lgf.causes import cause_of
from lgf.golang.gobinary import open_binary
from lgf.sources.uprobe import UprobeOptions, UprobeSource
from lgf.testing import EventCollector
from support.gobuild import GO_VERSIONS, build_go
from support.stallfixture import (
    STALLS_SRC,
    StallFixture,
    bpftool_perf_pids,
    outside_bounds,
    probe_bytes,
    run_context,
    unexplained,
    wait_attached,
)
from support.wait import poll_until

pytestmark = pytest.mark.bpf

MODES = {
    "chanrecv": "channel", "chansend": "channel", "select": "select", "mutex": "lock",
    "rwmutex": "lock", "waitgroup": "sync", "cond": "sync", "tcpread": "net_io", "sleep": "sleep",
    "starve": "sched_latency", "stw": "gc_stw",
}
"""Fixture mode -> the cause lgf must give it (through the waitreason classifier's table)."""
BEFORE_MUTEX_REASONS = {"mutex": "sync", "rwmutex": "sync"}
"""Go 1.19 has no Mutex wait reasons: the source reports "semacquire" (the pipeline's classifier
tells a lock by the symbolized stack, tests/test_classifier.py; this test reads the raw source)."""


def expected_cause(mode: str, exe) -> str:
    if open_binary(exe).version_tuple[:2] < (1, 21) and mode in BEFORE_MUTEX_REASONS:
        return BEFORE_MUTEX_REASONS[mode]
    return MODES[mode]


@pytest.fixture(scope="module", params=GO_VERSIONS)
def traced(request, bpf_ok, go_toolchains):
    """(source, collector, fixture binary) for one Go version, goroutine tier always on."""
    exe = build_go(STALLS_SRC, request.param)
    ctx = run_context("50ms", exe=[str(exe)])
    src = UprobeSource(UprobeOptions(goroutine_tier="always"), ctx)
    events = EventCollector()
    src.start(events)
    yield src, events, exe
    src.stop()


def private_build(version: str):
    """A build of the fixture at a path of its own, so no other test's source attaches to it."""
    return build_go(STALLS_SRC, version, ldflags="-X main.privateCopy=1")


def cause(ev) -> str | None:
    return cause_of(ev.extra.get("stall", ""), ev.wait_reason)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_stall_reported_with_pid_goid_cause_and_duration(traced, mode):
    src, events, exe = traced
    with StallFixture(exe, mode) as fx:
        wait_attached(src, fx.pid)
        (res,) = fx.go()
        goid = res["goid"]
        want = expected_cause(mode, exe)
        found = events.wait_for(lambda e: e.pid == fx.pid and e.goid == goid and cause(e) == want)
    assert found, f"{mode}: no {want} stall for goid {goid}; got " + \
        repr([(e.goid, e.wait_reason, e.extra, e.duration_ns) for e in events.of_pid(fx.pid)])
    ev = found[0]
    assert not outside_bounds(res, ev.start_ns, ev.end_ns), (outside_bounds(res, ev.start_ns, ev.end_ns), ev, res)
    assert ev.end_ns - ev.start_ns == ev.duration_ns
    assert ev.go_version and ev.build_id and ev.exe
    assert ev.ts.endswith("Z")
    if mode != "stw":
        assert ev.pcs, "a goroutine stall carries its user stack"
    elif open_binary(exe).version_tuple[:2] >= (1, 21):
        assert ev.extra["stw_reason"], "the binary's own STW reason text"
    else:  # Go 1.19's stopTheWorldWithSema takes no reason: none is made up
        assert ev.extra["stw_reason"] == ""


def test_noise_reports_nothing_over_threshold(traced):
    src, events, exe = traced
    with StallFixture(exe, "noise", "-n", "40") as fx:
        wait_attached(src, fx.pid)
        (res,) = fx.go()
        workers = set(res["goids"])
        counters = src.runtime_counters(fx.pid)
    assert res["waits"] > 1000, "the fixture made thousands of short waits"
    reported = [(e.goid, e.start_ns, e.end_ns) for e in events.of_pid(fx.pid) if e.goid in workers]
    assert not unexplained(reported, res["long_waits"]), (reported, res["long_waits"])
    # Only the main goroutine, which waits for the workers for two seconds, may stall.
    assert {e.goid for e in events.of_pid(fx.pid)} <= {fx.main_goid} | workers
    assert counters["ringbuf_lost"] == 0


def test_short_waits_land_in_histograms(traced):
    src, events, exe = traced
    with StallFixture(exe, "noise", "-n", "10") as fx:
        wait_attached(src, fx.pid)
        (res,) = fx.go()
        hists = [h for h in src.histograms() if h["labels"]["pid"] == str(fx.pid)]
    sleeps = [h for h in hists if h["labels"]["wait_reason"] == "sleep" and h["labels"]["stall"] == "park"]
    assert sleeps, hists
    counts = sleeps[0]["log2_us"]
    # 0.25-10 ms sleeps (slot i holds [2^(i-1), 2^i) us). Each lies inside the fixture's own
    # timing of it, so at least the sleeps it timed under 2^14 us land in slots up to 14, and
    # past 2^16 us (65 ms) only as many as it timed that long itself (none on a quiet host:
    # those are the host's stalls, not lgf's).
    assert sum(counts[:15]) >= res["short_sleeps"] > 100, (counts, res["short_sleeps"])
    long_sleeps = [w for w in res["long_waits"] if w[3] == "sleep" and w[2] - w[1] >= 2**16 * 1000]
    assert sum(counts[17:]) <= len(long_sleeps), (counts, long_sleeps)


def test_stop_leaves_no_probe_behind(bpf_ok, go_toolchains):
    exe = private_build(GO_VERSIONS[-1])
    with StallFixture(exe, "chanrecv") as fx:
        src = UprobeSource(UprobeOptions(goroutine_tier="always"), run_context(pids=[fx.pid]))
        src.start(EventCollector())
        addrs = src.probe_addresses(fx.pid)
        assert {"on_execute", "on_ready", "on_stw_stop", "on_stw_start"} <= set(addrs)
        assert probe_bytes(fx.pid, addrs.values()) == [0xCC] * len(addrs), "breakpoints installed"
        assert os.getpid() in bpftool_perf_pids()
        src.stop()
        assert 0xCC not in probe_bytes(fx.pid, addrs.values()), "a breakpoint was left in the target"
        assert os.getpid() not in bpftool_perf_pids(), "a BPF perf attachment outlived stop()"
        assert not bpfutil.kernel_uprobes(lambda line: str(exe) in line)
        fx.go()


def test_detached_probes_are_given_back_to_bccs_probe_quota(bpf_ok, go_toolchains):
    """BCC refuses any attach once its count of open probes reaches BCC_PROBE_LIMIT (1,000); a
    source that arms and disarms goroutine tiers for days must give each detached probe back,
    or lgf goes blind after about 90 armings (seen: "would exceed global quota" in a long run)."""
    import bcc

    exe = private_build(GO_VERSIONS[-1])
    with StallFixture(exe, "chanrecv") as fx:
        before = bcc._num_open_probes
        for _ in range(3):  # attach and detach the goroutine tier, as arming and disarming do
            src = UprobeSource(UprobeOptions(goroutine_tier="always"), run_context(pids=[fx.pid]))
            src.start(EventCollector())
            assert len(src.probe_addresses(fx.pid)) >= 4
            assert bcc._num_open_probes > before
            src.stop()
            assert bcc._num_open_probes == before, "a detached probe still counts against the quota"
        fx.go()


def test_target_exit_mid_trace_does_not_stop_the_source(bpf_ok, go_toolchains):
    exe = private_build(GO_VERSIONS[0])
    src = UprobeSource(UprobeOptions(goroutine_tier="always"), run_context(exe=[str(exe)]))
    events = EventCollector()
    src.start(events)
    try:
        first = StallFixture(exe, "chanrecv")
        wait_attached(src, first.pid)
        first.proc.kill()
        first.close()
        with StallFixture(exe, "chanrecv") as fx:
            wait_attached(src, fx.pid)
            (res,) = fx.go()
            assert events.wait_for(lambda e: e.pid == fx.pid and e.goid == res["goid"])
        assert not src.is_attached(first.pid)
    finally:
        src.stop()


def test_on_stall_tier_arms_after_a_stop_the_world(bpf_ok, go_toolchains):
    exe = private_build(GO_VERSIONS[1])
    src = UprobeSource(UprobeOptions(goroutine_tier="on_stall"), run_context(exe=[str(exe)]))
    src.start(EventCollector())
    try:
        with StallFixture(exe, "stw") as fx:
            wait_attached(src, fx.pid)
            assert "on_execute" not in src.probe_addresses(fx.pid), "goroutine tier starts unarmed"
            fx.go()
            poll_until(lambda: "on_execute" in src.probe_addresses(fx.pid), 5, 0.05)
            assert "on_execute" in src.probe_addresses(fx.pid), "a long STW arms the goroutine tier"
    finally:
        src.stop()


def test_ring_buffer_losses_are_counted_not_silent(bpf_ok, go_toolchains):
    """A consumer that stalls (here: an emit callback that blocks) fills the ring; every event
    the kernel could not queue is counted, per process and in lgf_ringbuf_lost_total."""
    exe = private_build(GO_VERSIONS[-1])
    ctx = run_context("1us", exe=[str(exe)])
    src = UprobeSource(UprobeOptions(goroutine_tier="always", ringbuf_pages=1), ctx)
    gate = threading.Event()

    def slow_emit(event):
        gate.wait(10)

    src.start(slow_emit)
    try:
        with StallFixture(exe, "noise", "-n", "20") as fx:
            wait_attached(src, fx.pid)
            fx.go()
            lost = src.runtime_counters(fx.pid)["ringbuf_lost"]
            gate.set()
            poll_until(lambda: ctx.stats.total("lgf_ringbuf_lost_total") >= lost, 5, 0.1)
    finally:
        gate.set()
        src.stop()
    assert lost > 0, "a one-page ring with a blocked consumer must overflow"
    assert ctx.stats.total("lgf_ringbuf_lost_total") >= lost


def test_process_that_execs_a_go_binary_is_attached_live(bpf_ok, go_toolchains):
    """A selected pid that starts as a shell and execs the Go fixture is traced from the exec on."""
    import json
    import subprocess

    exe = private_build(GO_VERSIONS[1])
    sh = subprocess.Popen(["/bin/sh", "-c", f"read x; exec {exe} chanrecv"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
    src = UprobeSource(UprobeOptions(goroutine_tier="always"), run_context(pids=[sh.pid]))
    events = EventCollector()
    src.start(events)
    try:
        assert not src.is_attached(sh.pid), "a shell is not a Go process"
        sh.stdin.write("\n")
        sh.stdin.flush()
        assert json.loads(sh.stdout.readline())["ready"]
        wait_attached(src, sh.pid)
        sh.stdin.write("\n")
        sh.stdin.flush()
        res = json.loads(sh.stdout.readline())
        assert events.wait_for(lambda e: e.pid == sh.pid and e.goid == res["goid"]
                               and e.wait_reason == "chan receive"), \
            (res, src.probe_addresses(sh.pid), [(e.goid, e.wait_reason) for e in events.events])
    finally:
        src.stop()
        sh.stdin.close()
        sh.wait(timeout=10)
