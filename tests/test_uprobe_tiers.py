"""The uprobe source's one arming path, without BPF: every cheap tier calls
``ctx.services.arming.notify_stall(pid)``; the goroutine tier's registered request arms on a thread
of its own, one per pid at a time, so the caller (a sampler pass, a ring-buffer callback) never
waits for an attach."""

from __future__ import annotations

import threading
import time
import types

from lgf.services import Services
from lgf.sources.uprobe.handoff import GoroutineTierView, NoGoroutineTier
from lgf.sources.uprobe.options import UprobeOptions
from lgf.sources.uprobe.tiers import GoroutineTier


def _tier(mode: str) -> tuple[GoroutineTier, list[tuple[int, str]], threading.Event]:
    targets = types.SimpleNamespace(attached={}, lock=threading.RLock())
    tier = GoroutineTier(UprobeOptions(goroutine_tier=mode), targets, log=types.SimpleNamespace(
        info=lambda *a: None, warning=lambda *a: None))
    calls: list[tuple[int, str]] = []
    release = threading.Event()

    def slow_arm(pid: int) -> None:  # an attach on a loaded host
        calls.append((pid, threading.current_thread().name))
        release.wait(5)

    tier.arm = slow_arm
    return tier, calls, release


def _until(cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
    return cond()


def test_a_stall_arms_on_its_own_thread_once_per_pid_at_a_time():
    tier, calls, release = _tier("on_stall")
    services = Services()
    services.arming.register(tier.request)
    t0 = time.monotonic()
    for _ in range(3):  # the sampler, a stop-the-world event and the tracepoint source, at once
        services.arming.notify_stall(41)
    services.arming.notify_stall(42)
    assert time.monotonic() - t0 < 0.5, "notify_stall never waits for the attach"
    assert _until(lambda: len(calls) == 2)
    assert sorted(pid for pid, _ in calls) == [41, 42]
    assert all(name.startswith("lgf-arm-") for _, name in calls)
    services.arming.notify_stall(41)  # still arming: no second thread
    time.sleep(0.1)
    assert len(calls) == 2
    release.set()
    assert _until(lambda: not tier._arming)
    release.clear()
    services.arming.notify_stall(41)  # done arming: a new stall asks again (extends arm_for)
    assert _until(lambda: len(calls) == 3)
    release.set()
    services.arming.unregister(tier.request)
    services.close()


def test_only_on_stall_arms():
    for mode in ("always", "never"):
        tier, calls, release = _tier(mode)
        tier.request(7)
        time.sleep(0.05)
        assert calls == [], mode
        release.set()


def test_a_sampler_on_its_own_holds_every_wait():
    view: GoroutineTierView = NoGoroutineTier()
    assert view.since(1) is None and view.park_start(1, 0xC000) is None
    assert view.holds_runnable(1, 0xC000, 0) is False
