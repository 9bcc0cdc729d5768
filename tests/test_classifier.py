"""The default classifier against the real Go runtimes' wait reasons, through the real plugin manager."""

from __future__ import annotations

import re

import pytest

from lgf import CAUSES, Event, causes, hookimpl
from lgf.golang import gobinary
from lgf.manager import make_manager
from lgf.plugins import waitreason
from lgf.stats import Stats
from support.gobuild import GO_VERSIONS, goroot

ENTRY = re.compile(r'^\s*waitReason\w+:\s*"([^"]*)",', re.M)


def wait_reasons_of_toolchain(version: str) -> list[str]:
    """``runtime.waitReasonStrings`` as written in that toolchain's runtime2.go."""
    src = (goroot(version) / "src" / "runtime" / "runtime2.go").read_text()
    block = src[src.index("var waitReasonStrings"):]
    block = block[: block.index("\n}")]
    texts = ENTRY.findall(block)
    assert len(texts) > 20, f"could not parse waitReasonStrings of Go {version}"
    return texts


def classify(manager, event: Event) -> str:
    return manager.pm.hook.lgf_classify(event=event)


@pytest.fixture
def manager():
    m = make_manager(entry_points=False)
    stats = Stats()
    m.register(waitreason.WaitReasonClassifier(None, type("Ctx", (), {"stats": stats})()),
               "classifiers[0]", "config")
    m.stats = stats
    return m


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_every_wait_reason_of_every_toolchain_has_a_cause_or_a_reason(go_toolchains, version):
    unmapped = []
    for text in wait_reasons_of_toolchain(version):
        if text in causes.NOT_USER_WAITS:
            assert causes.NOT_USER_WAITS[text], f"{text!r} is unknown without a reason"
            continue
        cause = causes.WAIT_REASONS.get(text)
        if cause is None:
            unmapped.append(text)
        else:
            assert cause in CAUSES and cause != "unknown", (text, cause)
    assert not unmapped, f"Go {version}: wait reasons with no cause: {unmapped}"


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_every_wait_reason_classified_through_the_hook(go_toolchains, manager, version):
    for text in wait_reasons_of_toolchain(version):
        ev = Event(wait_reason=text, go_version=version, duration_ns=60_000_000, extra={"stall": "park"})
        cause = classify(manager, ev)
        assert cause == causes.WAIT_REASONS.get(text, "unknown"), text
        if cause == "unknown":
            assert ev.extra["cause_note"], text
    assert manager.stats.total("lgf_classify_unmapped_total") == 0


def test_wait_reasons_read_from_a_built_binary_are_all_known(go_toolchains):

    from support.gobuild import GOAPPS, build_go
    apps = sorted(p for p in GOAPPS.iterdir() if (p / "main.go").exists()) if GOAPPS.exists() else []
    if not apps:
        pytest.skip("no Go fixture program under tests/goapps yet")
    for version in GO_VERSIONS:
        binary = gobinary.open_binary(build_go(apps[0], version))
        reasons = list(binary.wait_reasons.values() if isinstance(binary.wait_reasons, dict)
                       else binary.wait_reasons)
        assert reasons == [r for r in reasons if r in causes.WAIT_REASONS or r in causes.NOT_USER_WAITS]
        assert set(reasons) == set(wait_reasons_of_toolchain(version))


@pytest.mark.parametrize("stall,wait_reason,syscall,cause", [
    ("park", "chan receive", "", "channel"),
    ("park", "sync.Mutex.Lock", "", "lock"),
    ("park", "semacquire", "", "sync"),
    ("park", "IO wait", "", "net_io"),
    ("park", "select", "", "select"),
    ("runnable", "chan receive", "", "sched_latency"),  # the kind decides: it was runnable
    ("stw", "", "", "gc_stw"),
    ("gc_assist", "GC assist wait", "", "gc_assist"),
    ("syscall", "", "read", "syscall"),
    ("syscall", "", "epoll_pwait", "net_io"),
])
def test_stall_kind_and_wait_reason_decide_the_cause(manager, stall, wait_reason, syscall, cause):
    ev = Event(wait_reason=wait_reason, syscall=syscall, duration_ns=60_000_000, extra={"stall": stall})
    assert classify(manager, ev) == cause


def test_lock_wait_mostly_inside_a_stop_the_world_is_blamed_on_the_gc(manager):
    ev = Event(wait_reason="sync.Mutex.Lock", duration_ns=100_000_000, extra={"stall": "park"},
               gc_phase={"phase": "off", "stw_overlap_ns": 80_000_000})
    assert classify(manager, ev) == "gc_stw"
    short_overlap = Event(wait_reason="sync.Mutex.Lock", duration_ns=100_000_000, extra={"stall": "park"},
                          gc_phase={"phase": "off", "stw_overlap_ns": 20_000_000})
    assert classify(manager, short_overlap) == "lock"
    waiting_for_a_cpu = Event(duration_ns=100_000_000, extra={"stall": "runnable"},
                              gc_phase={"stw_overlap_ns": 90_000_000})
    assert classify(manager, waiting_for_a_cpu) == "gc_stw"
    sleeping = Event(wait_reason="sleep", duration_ns=100_000_000, extra={"stall": "park"},
                     gc_phase={"stw_overlap_ns": 90_000_000})
    assert classify(manager, sleeping) == "sleep"  # it chose to wait; the pause is incidental


def frames(*funcs: str) -> list[dict]:
    return [{"func": f, "file": "", "line": 0, "pc": 0, "inlined": False} for f in funcs]


def test_go_1_19_mutex_wait_is_a_lock_by_its_stack_not_a_bare_semacquire(manager):
    """Go 1.19 has no "sync.Mutex.Lock" wait reason: Mutex and RWMutex waits park as "semacquire",
    as WaitGroup's do; the symbolized stack (what Go 1.19.8's stall fixture shows) tells them apart."""
    mutex = frames("runtime.gopark", "runtime.goparkunlock", "runtime.semacquire1",
                   "sync.runtime_SemacquireMutex", "sync.(*Mutex).lockSlow", "sync.(*Mutex).Lock", "main.mutexStall")
    rwmutex = frames("runtime.gopark", "runtime.semacquire1", "sync.runtime_SemacquireMutex",
                     "sync.(*RWMutex).Lock", "main.rwmutexStall")
    waitgroup = frames("runtime.gopark", "runtime.semacquire1", "sync.runtime_Semacquire",
                       "sync.(*WaitGroup).Wait", "main.waitgroupStall")
    for stack, cause in ((mutex, "lock"), (rwmutex, "lock"), (waitgroup, "sync"), ([], "sync")):
        ev = Event(wait_reason="semacquire", go_version="go1.19.8", duration_ns=60_000_000,
                   extra={"stall": "park"}, stack=stack)
        assert classify(manager, ev) == cause, [f["func"] for f in stack]


def test_a_wait_reason_from_a_future_go_falls_back_to_unknown_and_is_counted(manager):
    ev = Event(wait_reason="quantum entanglement", go_version="1.99", extra={"stall": "park"})
    assert classify(manager, ev) == "unknown"
    assert manager.stats.get("lgf_classify_unmapped_total", wait_reason="quantum entanglement") == 1


def test_a_third_party_classifier_speaks_before_the_default(manager):
    class TeamClassifier:
        @hookimpl
        def lgf_classify(self, event):
            return "db_pool" if "pgx" in "".join(event.stack_summary) else None

    manager.register(TeamClassifier(), "team", "config")
    pooled = Event(wait_reason="chan receive", stack_summary=["pgx.(*Pool).Acquire"], extra={"stall": "park"})
    plain = Event(wait_reason="chan receive", stack_summary=["main.worker"], extra={"stall": "park"})
    assert classify(manager, pooled) == "db_pool"
    assert classify(manager, plain) == "channel"


def test_without_any_classifier_the_fallback_answers_unknown():
    m = make_manager(entry_points=False)
    assert classify(m, Event(wait_reason="chan receive", extra={"stall": "park"})) == "unknown"
