"""Which processes to trace: scan /proc, keep the Go ones the ``[targets]`` table selects.

A process is Go when its executable carries Go build info (``.go.buildinfo``), whatever its name.
Selection (``TargetOptions``): any of ``pids``, ``exe`` globs on the executable path, ``comm``
regular expressions, or ``all``; lgf never selects itself nor its parent (the python or shell that
started it). A selected process whose binary cannot be traced (not Go, unknown layout, corrupt)
is logged once, as one line naming the pid, the binary and why, and the others go on.

The executable is read through ``/proc/PID/exe`` when its path is not the same file from here
(deleted since start, or in another mount namespace), so a replaced binary on disk is never
mistaken for the one running.

Cost of :class:`ProcessWatcher`: one ``listdir("/proc")`` and one ``readlink`` per process per
poll, about 6 µs per process (0.4-0.6 ms for 93 processes here, 1.3x the bare listdir+readlink
floor: ``bench/bench_gobinary.py``); /proc/PID/stat, comm and the binary are read only for pids
not seen before or whose executable changed (exec), and binaries are parsed once per file
(:func:`lgf.golang.gobinary.open_binary` caches them). At the default 250 ms interval that is
about 0.2 % of one core per 100 processes, plus, per Go process followed, its start time read
each poll (pid reuse): at 200 idle Go services discovery took about 3.4 % of a core in all (py-spy,
bench/bench_many_processes.py). Starts shorter than the interval can be missed; that is the price of polling
without kprobes (this host has none, so no exec/exit tracepoint program is used here).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from lgf.config import TargetOptions
from lgf.errors import TargetRefused

from .gobinary import GoBinary, NotGoBinary, open_binary

log = logging.getLogger("lgf.discovery")


@dataclass
class Target:
    """One selected Go process."""

    pid: int
    exe: str
    """The executable's path as the process sees it (``/proc/PID/exe``); may end in " (deleted)"."""
    comm: str
    binary: GoBinary
    path: str = ""
    """A path from which this process's executable can be opened now (for uprobe attach)."""
    start_time: int = 0
    """Clock ticks after boot the process started (/proc/PID/stat field 22): tells pid reuse apart."""

    def load_bias(self) -> int:
        """Runtime address minus ELF address of this process's executable (0 unless PIE)."""
        return self.binary.load_bias(self.pid)


@dataclass
class Refusal:
    pid: int
    exe: str
    reason: str

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.exe}): not traced: {self.reason}"


@dataclass
class _Proc:
    """What /proc says about a process, read cheaply, before its binary is opened."""

    pid: int
    exe: str
    comm: str = ""
    start_time: int = 0
    stat_key: tuple = field(default=())


def excluded_pids() -> set[int]:
    """lgf itself and the process that started it."""
    return {os.getpid(), os.getppid()}


def list_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def read_exe(pid: int) -> str | None:
    """Executable path of ``pid``, or None for kernel threads and processes that just exited."""
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def read_start_time(pid: int) -> int | None:
    """``pid``'s start time (clock ticks after boot), None if it exited: all a poll asks of a
    process it follows already, read with one open and one read (read_proc's three files, through
    Python's io, were most of a poll's CPU at 200 Go services: 7 % of a core)."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
        try:
            stat = os.read(fd, 4096)
        finally:
            os.close(fd)
    except OSError:
        return None
    rest = stat[stat.rfind(b")") + 2:].split()
    return int(rest[19]) if len(rest) > 19 else 0


def read_proc(pid: int, exe: str) -> _Proc | None:
    """comm, start time and executable identity of ``pid``; None if it exited meanwhile."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().rstrip("\n")
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        st = os.stat(f"/proc/{pid}/exe")
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: fields after it start at the last ")".
    rest = stat[stat.rfind(")") + 2:].split()
    start_time = int(rest[19]) if len(rest) > 19 else 0
    return _Proc(pid, exe, comm, start_time, (st.st_dev, st.st_ino))


def selects(targets: TargetOptions, proc: _Proc, count_all: bool = True) -> bool:
    """Whether the ``[targets]`` table selects this process (before knowing whether it is Go).

    With ``count_all=False`` only an explicit pid, exe or comm match counts: a refusal of such a
    process is worth a log line, while "all" passes over non-Go processes quietly.
    """
    if (count_all and targets.all) or proc.pid in targets.pids:
        return True
    exe = proc.exe.removesuffix(" (deleted)")
    if any(fnmatch.fnmatchcase(exe, pattern) for pattern in targets.exe):
        return True
    return any(re.search(rx, proc.comm) for rx in targets.comm)


def openable_path(proc: _Proc) -> str:
    """A path naming this process's executable file from here: its own path when that is the same
    file, else through its mount namespace, else the /proc/PID/exe link itself."""
    exe = proc.exe.removesuffix(" (deleted)")
    for candidate in (exe, f"/proc/{proc.pid}/root{exe}"):
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == proc.stat_key:
            return candidate
    return f"/proc/{proc.pid}/exe"


def examine(targets: TargetOptions, pid: int, exe: str | None = None) -> Target | Refusal | None:
    """Target if ``pid`` is selected and traceable, Refusal if selected but not traceable, None if
    not selected, exited, or not Go under ``all`` alone."""
    if pid in excluded_pids():
        return None
    exe = exe if exe is not None else read_exe(pid)
    if exe is None:
        return None
    proc = read_proc(pid, exe)
    if proc is None or not selects(targets, proc):
        return None
    path = openable_path(proc)
    try:
        binary = open_binary(path)
    except NotGoBinary as exc:
        if not selects(targets, proc, count_all=False):
            return None
        return Refusal(pid, exe, _reason(exc, path))
    except TargetRefused as exc:
        return Refusal(pid, exe, _reason(exc, path))
    if not os.path.exists(f"/proc/{pid}"):
        return None  # exited while its binary was being read
    return Target(pid, exe, proc.comm, binary, path, proc.start_time)


def _reason(exc: Exception, path: str) -> str:
    return str(exc).removeprefix(f"{path}: ")


def scan(targets: TargetOptions) -> tuple[list[Target], list[Refusal]]:
    """One pass over /proc: the selected Go processes, and the selected ones that were refused."""
    found: list[Target] = []
    refused: list[Refusal] = []
    pids = targets.pids if _only_pids(targets) else list_pids()
    for pid in pids:
        result = examine(targets, pid)
        if isinstance(result, Target):
            found.append(result)
        elif isinstance(result, Refusal):
            refused.append(result)
    return found, refused


def _only_pids(targets: TargetOptions) -> bool:
    return bool(targets.pids) and not (targets.all or targets.exe or targets.comm)


def find_targets(targets: TargetOptions, logger: logging.Logger | None = None) -> list[Target]:
    """The selected, traceable Go processes now; each refused one is logged as one warning line."""
    found, refused = scan(targets)
    for r in refused:
        (logger or log).warning("%s", r)
    return found


class ProcessWatcher:
    """Polls /proc every ``interval`` seconds; calls ``on_start(Target)`` for each selected Go
    process that appears (and, on the first poll, for those already running) and
    ``on_exit(Target)`` when it goes (or execs another binary). Refusals are logged once per
    process. Callbacks run on the watcher's thread; an exception in one is logged, not raised.
    """

    def __init__(self, targets: TargetOptions, on_start: Callable[[Target], None],
                 on_exit: Callable[[Target], None], interval: float = 0.25,
                 logger: logging.Logger | None = None):
        self.targets, self.on_start, self.on_exit = targets, on_start, on_exit
        self.interval = interval
        self.log = logger or log
        self.running: dict[int, Target] = {}
        self._seen: dict[int, str] = {}
        """pid -> executable path when last looked at (targets, refused and unselected alike)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> None:
        """One scan: report what started and what exited since the last one."""
        try:
            pids = set(list_pids())
        except OSError as exc:  # /proc unreadable: nothing to compare against this time
            self.log.warning("cannot list /proc: %s", exc)
            return
        for pid in list(self._seen):
            if pid not in pids:
                self._forget(pid)
        for pid in sorted(pids):
            exe = read_exe(pid)
            if exe is None:
                continue
            if self._seen.get(pid) == exe and not self._reused(pid):
                continue
            if pid in self._seen:
                self._forget(pid)  # exec'd another binary, or the pid was reused
            self._seen[pid] = exe
            result = examine(self.targets, pid, exe)
            if isinstance(result, Target):
                self.running[pid] = result
                self._call(self.on_start, result)
            elif isinstance(result, Refusal):
                self.log.warning("%s", result)

    def _reused(self, pid: int) -> bool:
        target = self.running.get(pid)
        if target is None:
            return False
        start_time = read_start_time(pid)
        return start_time is not None and start_time != target.start_time

    def _forget(self, pid: int) -> None:
        self._seen.pop(pid, None)
        target = self.running.pop(pid, None)
        if target is not None:
            self._call(self.on_exit, target)

    def _call(self, callback, target: Target) -> None:
        try:
            callback(target)
        except Exception:  # a callback's bug must not stop discovery of the other processes
            self.log.exception("discovery callback failed for pid %d", target.pid)

    def start(self) -> ProcessWatcher:
        self._thread = threading.Thread(target=self._run, name="lgf-discovery", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
