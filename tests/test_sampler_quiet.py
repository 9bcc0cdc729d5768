"""The goroutine sampler on a quiet process (issue 19, many idle services on a host): real BPF,
the real ``tests/goapps/idleserver`` fixture twice, the uprobe source as shipped
(``goroutine_tier = "on_stall"``, the sampler and its wake signal).

An idle server (ticker and sleep loops, accept loop, idle workers) is found still, gets its wake
signal, and is read in full every ``quiet_interval`` only, with light reads of what woke in
between; the same server kept busy by a keep-alive client is read in full every
``sample_interval`` and never gets the wake signal. Counted in full passes over the same window,
a ratio (not a wall-clock bound). Then the quiet server gets slow requests: the handler's wait and
the worker's sleep mid-job are each reported once, as stalls of at least the threshold, as on a
server read in full every pass (tests/test_idle_server.py), the first by the sampler.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time

import pytest

from lgf.sources.uprobe import UprobeOptions, UprobeSource
from lgf.testing import EventCollector
from support.goapp import http_get
from support.gobuild import GO_VERSIONS, GOAPPS, build_go
from support.stallfixture import run_context, wait_attached
from support.wait import poll_until

pytestmark = pytest.mark.bpf

QUIET_S = 0.2
"""The shipped ``quiet_interval``."""
BUSY_S = 0.02
"""The shipped ``sample_interval``."""
WINDOW_S = 4.0
"""Full passes are counted over this long: a window for a ratio, not a bound."""


class Server:
    """One idleserver: its address, and the lines it prints (one reader thread)."""

    def __init__(self, exe):
        self.proc = subprocess.Popen([str(exe), "-startsleep", "0s"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.pid = json.loads(self.proc.stdout.readline())["pid"]
        self.addr = json.loads(self.proc.stdout.readline())["addr"]
        self.lines: list[dict] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(json.loads(line))
                self._cond.notify_all()

    def get(self, path: str, conn: http.client.HTTPConnection | None = None) -> str:
        return http_get(self.addr, path, conn)

    def close(self):
        self.proc.kill()
        self.proc.wait()


def keep_busy(server: Server, stop: threading.Event) -> threading.Thread:
    """A keep-alive client asking ``/fast`` back to back, a millisecond apart, until ``stop``."""
    def run():
        conn = http.client.HTTPConnection(server.addr, timeout=30)
        while not stop.is_set():
            server.get("/fast", conn)
            time.sleep(0.001)
        conn.close()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("go", GO_VERSIONS)
def test_a_quiet_server_is_read_in_full_far_less_often_than_a_busy_one_and_its_stalls_are_found(
        go, go_toolchains, bpf_ok):
    exe = build_go(GOAPPS / "idleserver", go)
    quiet, busy = Server(exe), Server(exe)
    src = UprobeSource(UprobeOptions(goroutine_tier="on_stall"), run_context("50ms", pids=[quiet.pid, busy.pid]))
    stats, events = src.ctx.stats, EventCollector()
    stop = threading.Event()
    src.start(events.send)
    try:
        wait_attached(src, quiet.pid)
        wait_attached(src, busy.pid)
        load = keep_busy(busy, stop)
        assert poll_until(lambda: stats.get("lgf_sampler_interval_seconds", pid=quiet.pid) == QUIET_S, 60, 0.05), \
            "an idle server is found quiet, gets its wake signal and is read in full every quiet_interval"
        assert stats.get("lgf_sampler_wake_signal", pid=quiet.pid) == 1
        procs = src.sampler._procs
        before = procs[quiet.pid].passes, procs[busy.pid].passes, stats.total("lgf_sampler_light_samples_total")
        time.sleep(WINDOW_S)
        after = procs[quiet.pid].passes, procs[busy.pid].passes, stats.total("lgf_sampler_light_samples_total")
        busy_interval = stats.get("lgf_sampler_interval_seconds", pid=busy.pid)
        busy_wakes = stats.get("lgf_sampler_wake_signal", pid=busy.pid)
        stop.set()
        load.join()

        # The quiet server, woken by nothing but its own timers since: slow requests on new
        # connections (the netpoller, a new goroutine, the worker's ready).
        assert stats.get("lgf_sampler_interval_seconds", pid=quiet.pid) == QUIET_S
        for _ in range(2):
            quiet.get("/job?d=150ms")
        poll_until(lambda: len([o for o in quiet.lines if o.get("route") == "/job"]) == 2, 30, 0.05)
        jobs = [o for o in quiet.lines if o.get("route") == "/job"]
        for o in jobs:
            for g in (o["goid"], o["worker_goid"]):
                events.wait_for(lambda e, g=g: e.pid == quiet.pid and e.goid == g)
        time.sleep(0.3)
        reported = [e for e in events.of_pid(quiet.pid) if e.extra.get("stall") == "park"]
    finally:
        stop.set()
        src.stop()
        quiet.close()
        busy.close()

    quiet_passes, busy_passes = after[0] - before[0], after[1] - before[1]
    assert busy_interval == BUSY_S and not busy_wakes, "a busy server is read in full every pass, without probes"
    assert quiet_passes >= 1 and after[2] > before[2], "the quiet server still gets its full passes, and light ones"
    # At 200 ms against 20 ms: 10x fewer, less the passes brought forward by what woke.
    assert busy_passes >= 4 * quiet_passes, (quiet_passes, busy_passes)

    assert len(jobs) == 2, quiet.lines
    by_goid: dict[int, list] = {}
    for e in reported:
        by_goid.setdefault(e.goid, []).append(e)
    summary = {g: [(e.wait_reason, e.scope, e.extra.get("precision"), e.duration_ns) for e in evs]
               for g, evs in by_goid.items()}
    for o in jobs:
        for g in (o["goid"], o["worker_goid"]):
            assert len(by_goid.get(g, [])) == 1, (g, summary)
            (ev,) = by_goid[g]
            assert ev.duration_ns >= 50_000_000 and ev.extra["verdict"] == "stall", summary
    first = min((e for o in jobs[:1] for e in by_goid[o["worker_goid"]]), key=lambda e: e.start_ns)
    assert first.extra.get("precision") == "sampled", "the first stall of a quiet server is the sampler's"
