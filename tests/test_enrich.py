"""gc_phase, poller and sched enrichers read a real Go process and agree with its own figures.

The fixture (tests/goapps/runtimestate) is built with every supported toolchain, so the struct
offsets and globals of each Go version are exercised. No BPF is loaded here: the enrichers read
process memory, which any parent process may do with its own child.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from lgf import RunContext
from lgf.event import Event
from lgf.plugins.gc_phase import GcPhaseEnricher
from lgf.plugins.poller import PollerEnricher
from lgf.plugins.sched import SchedEnricher
from lgf.stats import Stats
from support.gobuild import GO_VERSIONS, GOAPPS, build_go

MS = 1_000_000


class Fixture:
    def __init__(self, binary, *args):
        self.proc = subprocess.Popen([str(binary), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.first = self.read()
        self.pid = self.proc.pid

    def read(self) -> dict:
        return json.loads(self.proc.stdout.readline())

    def ask(self, line: str) -> dict:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(params=GO_VERSIONS)
def app(request, go_toolchains):
    f = Fixture(build_go(GOAPPS / "runtimestate", request.param), "-procs", "3", "-parked", "40", "-conns", "5")
    f.version = request.param
    yield f
    f.close()


def ctx(sources=()):
    return RunContext(config=None, stats=Stats(), name="test", sources=list(sources))


def stall_now(pid, dur_ms=60, **kw) -> Event:
    """A stall of ``pid`` that ended just now (the enrichers read state right after a stall)."""
    end = time.monotonic_ns()
    return Event(pid=pid, start_ns=end - dur_ms * MS, end_ns=end, duration_ns=dur_ms * MS,
                 extra={"stall": kw.pop("stall", "park")}, **kw)


def test_sched_matches_the_programs_own_counts(app):
    c = ctx()
    enricher = SchedEnricher(None, c)
    ev = stall_now(app.pid)
    enricher.lgf_enrich(ev)
    s = ev.sched
    assert s["gomaxprocs"] == 3 and s["ncpu"] == app.first["ncpu"]
    assert s["goroutines"] - s["system_goroutines"] == app.ask("state")["goroutines"]
    assert s["waiting"] >= 40 + 6  # parked on the channel, plus Accept and 5 Reads
    assert s["threads"] >= 2 and s["idle_p"] <= 3 and s["global_runq"] >= 0
    assert 0 <= s["read_lag_ns"] < 10**12
    assert c.stats.total("lgf_enrich_missing_total") == 0


def test_sched_sees_runnable_goroutines_when_cpu_bound(go_toolchains):
    app = Fixture(build_go(GOAPPS / "runtimestate", GO_VERSIONS[-1]), "-procs", "1", "-busy", "3")
    try:
        ev = stall_now(app.pid)
        SchedEnricher(None, ctx()).lgf_enrich(ev)
        # three spinners on one P: at most one runs, the others wait in a run queue
        assert ev.sched["running"] <= 1 and ev.sched["runnable"] >= 2, ev.sched
    finally:
        app.close()


def test_gc_phase_places_the_stall_against_the_programs_own_gc_cycle(app):
    c = ctx()
    enricher = GcPhaseEnricher(None, c)
    time.sleep(0.1)  # the fixture's start-up runtime.GC() must lie before this 60 ms stall
    first = stall_now(app.pid)
    enricher.lgf_enrich(first)
    g = first.gc_phase
    assert g["phase"] == "off" and g["phase_at_read"] == "off"  # idle: its last GC long finished
    assert g["gc_overlap"] is False and g["stw_overlap_ns"] == 0
    assert g["gc_cycles"] == app.first["numgc"]
    assert g["cycle_start_ns"] < g["cycle_end_ns"] < first.start_ns
    assert c.stats.get("lgf_enrich_missing_total", enricher="gc_phase", value="gc_cycles_during",
                       reason="no_earlier_sample") == 1
    time.sleep(0.01)
    start = time.monotonic_ns()
    numgc = app.ask("gc")["numgc"]  # runtime.GC() inside our stall window
    second = stall_now(app.pid)
    second.start_ns = start
    second.duration_ns = second.end_ns - start
    enricher.lgf_enrich(second)
    g = second.gc_phase
    # the runtime's nanotime stamps are our CLOCK_MONOTONIC: the cycle lies inside the window
    assert start <= g["cycle_start_ns"] < g["cycle_end_ns"] <= second.end_ns
    assert g["phase"] == "off" and g["gc_overlap"] is True
    assert 0 < g["stw_overlap_ns"] < g["cycle_end_ns"] - g["cycle_start_ns"]
    assert g["gc_cycles"] == numgc and g["gc_cycles_during"] == numgc - app.first["numgc"] >= 1


def test_cycle_arithmetic():
    from lgf.plugins.gc_phase import Cycle, overlap_ns
    cyc = Cycle.of((100, 110, 200, 205))
    assert [cyc.phase_at(t) for t in (99, 100, 150, 202, 300)] == \
        [None, "sweep_termination", "mark", "mark_termination", "off"]
    assert cyc.overlaps(50, 100) is True and cyc.overlaps(206, 300) is False
    assert cyc.overlaps(10, 50) is None  # before the latest cycle: an earlier one may have run
    assert cyc.pauses() == [(100, 110), (200, 205)]
    running = Cycle.of((100, 110, 90, 80))  # marking now: tMarkTerm/tEnd are the previous cycle's
    assert running.end is None and running.phase_at(500) == "mark" and running.overlaps(400, 500)
    assert Cycle.of((0, 0, 0, 0)) is None
    assert overlap_ns([(0, 10), (5, 20), (30, 40)], 8, 35) == (20 - 8) + (35 - 30)


def test_gc_phase_measures_overlap_with_stop_the_world_pauses_it_saw(app):
    enricher = GcPhaseEnricher(None, ctx())
    time.sleep(0.15)  # the fixture's start-up GC pauses must lie before this 100 ms window
    end = time.monotonic_ns()
    stw = Event(pid=app.pid, start_ns=end - 80 * MS, end_ns=end - 20 * MS, duration_ns=60 * MS,
                extra={"stall": "stw"})
    lock = Event(pid=app.pid, start_ns=end - 100 * MS, end_ns=end, duration_ns=100 * MS,
                 wait_reason="sync.Mutex.Lock", extra={"stall": "park"})
    other = Event(pid=app.pid + 1, start_ns=end - 100 * MS, end_ns=end, duration_ns=100 * MS,
                  extra={"stall": "park"})
    for ev in (stw, lock, other):
        enricher.lgf_enrich(ev)
    assert lock.gc_phase["stw_overlap_ns"] == 60 * MS
    assert other.gc_phase["stw_overlap_ns"] == 0  # another process's pause is not this one's

    from lgf.plugins.waitreason import WaitReasonClassifier
    assert WaitReasonClassifier(None, ctx()).lgf_classify(lock) == "gc_stw"


def test_poller_counts_goroutines_waiting_on_the_network(app):
    c = ctx()
    enricher = PollerEnricher(None, c)
    want = app.first["net_waiters"]
    for _ in range(50):  # the Read goroutines park right after the fixture reports; look again
        ev = stall_now(app.pid)
        enricher.lgf_enrich(ev)
        if ev.poller.get("waiting", 0) >= want:
            break
        time.sleep(0.01)
    assert ev.poller["waiting"] == want
    # no source in this run counts netpoll calls: left out, and the reason counted
    assert "calls" not in ev.poller
    assert c.stats.get("lgf_enrich_missing_total", enricher="poller", value="calls",
                       reason="source_does_not_count") >= 1


def test_poller_takes_activity_deltas_from_the_sources_counters(app):
    class CountingSource:  # the shape of the BPF source's runtime_counters(pid)
        calls = 100

        def runtime_counters(self, pid):
            self.calls += 7
            return {"netpoll_calls": self.calls, "netpoll_ready": self.calls // 2, "ringbuf_lost": 0}

    enricher = PollerEnricher(None, ctx([CountingSource()]))
    a = stall_now(app.pid)
    enricher.lgf_enrich(a)
    started = time.monotonic_ns()  # b's stall starts after a was enriched (a sample was taken)
    b = stall_now(app.pid)
    b.start_ns, b.duration_ns = started, b.end_ns - started
    enricher.lgf_enrich(b)
    assert a.poller["calls"] == 107 and b.poller["calls"] == 114
    assert b.poller["calls_during"] == 7 and b.poller["ready_during"] == 114 // 2 - 107 // 2


def test_a_stripped_binary_is_enriched_through_code_references(go_toolchains):
    # No .symtab: the runtime globals are found by decoding the runtime code that refers to them.
    from lgf.golang import gobinary
    gobinary.clear_cache()  # else the unstripped twin (same Go build id) lends its symbols
    app = Fixture(build_go(GOAPPS / "runtimestate", GO_VERSIONS[-1], strip=True), "-procs", "3")
    try:
        c = ctx()
        ev = stall_now(app.pid)
        for e in (SchedEnricher(None, c), GcPhaseEnricher(None, c), PollerEnricher(None, c)):
            e.lgf_enrich(ev)
        assert ev.sched["gomaxprocs"] == 3 and ev.sched["ncpu"] == app.first["ncpu"]
        assert ev.gc_phase["phase_at_read"] == "off"
        assert "waiting" in ev.poller
        assert c.stats.get("lgf_enrich_missing_total", enricher="sched", value="gomaxprocs",
                           reason="no_symbol") == 0
    finally:
        app.close()


def test_a_recorded_event_of_a_gone_process_is_left_alone(app):
    c = ctx()
    old = Event(pid=app.pid, start_ns=1, end_ns=2, duration_ns=1, extra={"stall": "park"})  # another boot
    replayed = stall_now(app.pid, gc_phase={"phase": "mark"}, sched={"goroutines": 9})
    for e in (SchedEnricher(None, c), GcPhaseEnricher(None, c), PollerEnricher(None, c)):
        e.lgf_enrich(old)
        e.lgf_enrich(replayed)
    assert old.sched == {} and old.poller == {} and "phase" not in old.gc_phase
    assert replayed.gc_phase == {"phase": "mark"} and replayed.sched == {"goroutines": 9}
    assert c.stats.get("lgf_enrich_missing_total", enricher="sched", value="goroutines", reason="stale") == 1


def test_an_event_from_another_binary_at_the_same_pid_is_refused(app):
    c = ctx()
    ev = stall_now(app.pid, build_id="not-this-binary")
    SchedEnricher(None, c).lgf_enrich(ev)
    assert "goroutines" not in ev.sched
    assert c.stats.get("lgf_enrich_missing_total", enricher="sched", value="goroutines",
                       reason="not_same_process") == 1
