"""Discovery on real processes: the binfacts Go fixture running, a non-Go process beside it."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

import pytest

from lgf.config import TargetOptions
from lgf.golang import discovery
from lgf.golang.discovery import ProcessWatcher, Refusal, Target, examine, find_targets
from support.binfacts import binfacts, binfacts_pie, running


@pytest.fixture
def not_go():
    """A running process that is not Go (coreutils sleep)."""
    proc = subprocess.Popen([shutil.which("sleep"), "60"])
    yield proc
    proc.kill()
    proc.wait()


def pids(found: list[Target]) -> set[int]:
    return {t.pid for t in found}


def test_all_finds_the_go_fixture_and_not_a_non_go_process(go_toolchains, not_go):
    path = binfacts("1.25.5")
    with running(path) as (proc, _):
        found = find_targets(TargetOptions(all=True))
        assert proc.pid in pids(found)
        assert not_go.pid not in pids(found)
        assert os.getpid() not in pids(found)
        target = next(t for t in found if t.pid == proc.pid)
        assert target.exe == str(path)
        assert target.comm == path.name[:15]  # the kernel keeps 15 bytes of the name
        assert target.binary.go_version == "go1.25.5"
        assert target.load_bias() == 0


def test_select_by_comm_exe_and_pid(go_toolchains):
    path = binfacts("1.21.13")
    with running(path) as (proc, _):
        assert proc.pid in pids(find_targets(TargetOptions(comm=["^binfacts-go1\\.21"])))
        assert proc.pid not in pids(find_targets(TargetOptions(comm=["^nothing-like-it$"])))
        assert proc.pid in pids(find_targets(TargetOptions(exe=[str(path.parent / "binfacts-*")])))
        assert proc.pid not in pids(find_targets(TargetOptions(exe=["/usr/bin/*"])))
        assert pids(find_targets(TargetOptions(pids=[proc.pid]))) == {proc.pid}


def test_selected_non_go_process_is_refused_with_one_line(not_go, caplog):
    caplog.set_level(logging.WARNING, logger="lgf.discovery")
    assert find_targets(TargetOptions(pids=[not_go.pid])) == []
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"pid {not_go.pid} ({shutil.which('sleep')}): not traced: not a Go binary (no Go build info)"]


def test_all_mode_is_quiet_about_non_go_processes(not_go, caplog):
    caplog.set_level(logging.WARNING, logger="lgf.discovery")
    find_targets(TargetOptions(all=True))
    assert not any(str(not_go.pid) in r.getMessage() for r in caplog.records)


def test_refused_go_binary_does_not_stop_the_others(go_toolchains, tmp_path, caplog):
    """A Go binary whose layout is unknown (version unknown to the table, no DWARF) is refused by
    name while a good one beside it is found."""
    data = bytearray(binfacts("1.27.3", "sw").read_bytes())
    i = data.find(b"\x08go1.27.3")
    data[i + 1:i + 9] = b"go1.99.3"
    odd = tmp_path / "odd-go"
    odd.write_bytes(bytes(data))
    odd.chmod(0o755)
    caplog.set_level(logging.WARNING, logger="lgf.discovery")
    with running(odd) as (bad, _), running(binfacts("1.25.5")) as (good, _):
        found = find_targets(TargetOptions(pids=[bad.pid, good.pid]))
        assert pids(found) == {good.pid}
    assert [r.getMessage() for r in caplog.records] == [
        f"pid {bad.pid} ({odd}): not traced: go1.99.3 has no DWARF and no known layout "
        "(table covers go1.19, go1.21, go1.22, go1.23, go1.24, go1.25, go1.26, go1.27); rebuild without -w/strip, "
        "or update lgf"]


def test_never_selects_itself():
    assert examine(TargetOptions(pids=[os.getpid()], all=True), os.getpid()) is None
    assert os.getppid() in discovery.excluded_pids()


def test_exited_process_is_skipped_not_an_error(go_toolchains):
    with running(binfacts("1.25.5")) as (proc, _):
        pid = proc.pid
    assert proc.returncode is not None
    assert examine(TargetOptions(pids=[pid]), pid) is None
    assert find_targets(TargetOptions(pids=[pid])) == []


def test_watcher_reports_start_and_exit(go_toolchains, not_go, tmp_path):
    # A copy in a directory of its own, selected by exe glob: other Go processes on a shared host
    # (other tests, other engineers) cannot enter the counts.
    binary = tmp_path / "watched"
    shutil.copy(binfacts("1.27.3", "strip"), binary)
    started, exited = [], []
    watcher = ProcessWatcher(TargetOptions(exe=[str(tmp_path / "*")], comm=["^sleep$"]),
                             started.append, exited.append)
    watcher.poll()
    assert started == []  # sleep matches by comm but is not Go: refused, never started
    with running(binary) as (proc, _):
        watcher.poll()
        assert [t.pid for t in started] == [proc.pid]
        assert started[0].binary.stripped and started[0].binary.offset_source == "table"
        watcher.poll()  # nothing new: reported once
        assert len(started) == 1 and exited == []
    watcher.poll()
    assert [t.pid for t in exited] == [proc.pid]
    assert proc.pid not in watcher.running


def test_watcher_thread_calls_back(go_toolchains):
    import threading
    seen = threading.Event()
    gone = threading.Event()
    with running(binfacts("1.21.13")) as (proc, _):
        watcher = ProcessWatcher(TargetOptions(pids=[proc.pid]),
                                 lambda t: t.pid == proc.pid and seen.set(),
                                 lambda t: t.pid == proc.pid and gone.set(), interval=0.05).start()
        try:
            assert seen.wait(60)  # a hang guard: the first poll comes at once
            proc.stdin.close()
            proc.wait()
            assert gone.wait(60)
        finally:
            watcher.stop()


@pytest.mark.parametrize("stripped", [False, True], ids=["symbols", "stripped"])
def test_pie_load_bias_matches_the_process_own_address(go_toolchains, tmp_path, stripped):
    """The fixture prints the runtime address of main.work; ELF address + load bias must equal it."""
    path = binfacts_pie("1.25.5")
    if stripped:  # function addresses then come from the pclntab
        shutil.copy(path, tmp_path / "pie-stripped")
        path = tmp_path / "pie-stripped"
        subprocess.run([shutil.which("strip") or "strip", str(path)], check=True)
    with running(path) as (proc, work_addr):
        (target,) = find_targets(TargetOptions(pids=[proc.pid]))
        gb = target.binary
        assert gb.is_pie and gb.stripped is stripped
        bias = target.load_bias()
        assert bias != 0 and bias % 0x1000 == 0
        assert gb.func_addr("main.work") + bias == work_addr
        assert gb.probe_offset("main.work") > 0


def test_refusal_reads_as_one_line():
    r = Refusal(42, "/srv/app", "not a Go binary")
    assert str(r) == "pid 42 (/srv/app): not traced: not a Go binary"
