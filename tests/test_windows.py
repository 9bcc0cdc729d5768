"""Stall windows: stalls of one process closer than `window` merge; the ring stays bounded."""

from __future__ import annotations

from lgf.event import Event
from lgf.windows import StallWindows

MS = 1_000_000


def stall(pid, start_ms, dur_ms, goid=1, cause="lock"):
    return Event(pid=pid, comm=f"p{pid}", goid=goid, cause=cause, start_ns=start_ms * MS,
                 end_ns=(start_ms + dur_ms) * MS, duration_ns=dur_ms * MS)


def test_stalls_closer_than_the_window_merge_into_one():
    w = StallWindows(window_ns=200 * MS)
    a = w.add(stall(1, 1000, 60, goid=1))
    b = w.add(stall(1, 1100, 80, goid=2, cause="channel"))  # starts 40 ms after a ended
    assert a is b
    d = a.to_dict()
    assert d["count"] == 2 and d["goroutines"] == 2
    assert d["start_ns"] == 1000 * MS and d["end_ns"] == 1180 * MS
    assert d["worst_ns"] == 80 * MS and d["total_ns"] == 140 * MS
    assert d["causes"] == {"lock": 1, "channel": 1}


def test_a_stall_after_the_window_opens_a_new_one_and_closes_the_old():
    w = StallWindows(window_ns=200 * MS)
    first = w.add(stall(1, 1000, 60))
    second = w.add(stall(1, 1000 + 60 + 201, 60))
    assert first is not second and first.closed and not second.closed
    assert [x["start_ns"] for x in w.recent()] == [1261 * MS, 1000 * MS]  # newest first


def test_processes_never_share_a_window():
    w = StallWindows(window_ns=200 * MS)
    assert w.add(stall(1, 1000, 60)) is not w.add(stall(2, 1010, 60))


def test_the_ring_keeps_only_the_most_recent_windows():
    w = StallWindows(window_ns=10 * MS, capacity=8)
    for i in range(100):
        w.add(stall(i % 3, i * 1000, 60))
    assert len(w.recent()) == 8
    w.close_idle(10**12)
    assert not w.open and all(x["closed"] for x in w.recent())


def test_a_goroutine_stalled_twice_counts_once():
    w = StallWindows(window_ns=200 * MS)
    w.add(stall(1, 1000, 60, goid=7))
    win = w.add(stall(1, 1070, 60, goid=7))
    assert win.count == 2 and win.goroutines == 1
