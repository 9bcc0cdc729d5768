"""What one host shares among its plugins: made by the host, handed over in the run context.

A plugin never keeps live objects at module level: two hosts in one process (tests, ``lgf
replay`` beside ``lgf run``) must not see each other's symbol cache, arming, trace capture or
robot budgets. :class:`Services` is made once per :class:`lgf.run.Host` and reaches every
component as ``ctx.services`` (``lgf.RunContext``), the way pytest hands a run's state over in
``config.stash``.

- ``symbolizers``: one cache of open binaries for every tier and enricher of this host.
- ``idle_rules``: the ``[idle]`` rules every tier judges waits with (:mod:`lgf.idle`).
- ``arming``: cheap tiers that saw a stall ask for the goroutine tier through it.
- ``trace_capture``: reads labels and ``traceparent`` the moment a stall is reported, when the
  ``trace_context`` enricher switched it on.
- ``peer_capture``: what a stalled goroutine waited on, read by the sampler while it is parked,
  when the ``peer`` enricher switched it on (:mod:`lgf.golang.peercapture`).
- ``robot_budgets``: one send budget per WeCom robot key, shared by the sinks using that key.
- ``identities``: each process's container, pod, own pid and OpenTelemetry naming
  (:mod:`lgf.identity`), read once per process: by a source when it attaches (so a process
  that exits before its events are processed still has one), by the pipeline for every stall;
  with ``[kubernetes]``, the pods of this node it names them by (:mod:`lgf.kubernetes`, watched
  from :meth:`Services.watch_pods` on, by a host that runs sources).

:meth:`Services.functions` and :meth:`Services.judge` are the one place where a stack of PCs is
symbolized and then judged stall or idle.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Sequence

from .golang.loops import LoopIndex
from .golang.pclntab_cache import CACHE_SUBDIR
from .golang.peercapture import PeerCapture
from .golang.procfs import process_binary
from .golang.symbols import IndexCache, Symbolizers
from .golang.tracecapture import TraceCapture
from .identity import ProcessIdentities
from .idle import IdleRules, Verdict, rules_of
from .kubernetes import pods_of
from .robotbudgets import RobotBudgets

log = logging.getLogger("lgf")

SYMBOLIZER_MAX_OPEN = 64
"""Binaries kept open at once by a host's shared symbol cache (least recently used closed)."""


class Arming:
    """Cheap tiers that saw a stall in a process ask for the costly goroutine tier there.

    The uprobe source owns the goroutine tier (``goroutine_tier = "on_stall"``) and registers a
    request that arms on a thread of its own, one per pid at a time, so :meth:`notify_stall`
    returns at once; every cheap tier (the tracepoint source's blocking syscalls, the uprobe
    source's stop-the-world probes and goroutine sampler) calls :meth:`notify_stall`. Only stalls arm: a cheap tier with a goroutine's stack asks
    :meth:`Services.is_stall` first, so an idle wait never makes a process pay for the tier.
    Cost: one lock and a loop over the (one or two) registered sources per reported stall.
    """

    def __init__(self) -> None:
        self._armers: list[Callable[[int], None]] = []
        self._lock = threading.Lock()

    def register(self, arm: Callable[[int], None]) -> None:
        """Let ``arm(pid)`` be called whenever a cheap tier sees a stall in ``pid``."""
        with self._lock:
            self._armers.append(arm)

    def unregister(self, arm: Callable[[int], None]) -> None:
        """Undo :meth:`register`; a callable never registered is ignored."""
        with self._lock:
            if arm in self._armers:
                self._armers.remove(arm)

    def notify_stall(self, pid: int) -> None:
        """A cheap tier saw a stall in ``pid``: ask every registered source to arm it."""
        with self._lock:
            armers = list(self._armers)
        for arm in armers:
            arm(pid)


class Services:
    """The shared services of one host (see the module docstring)."""

    def __init__(self, idle_rules: IdleRules | None = None, pods=None, symbol_cache_dir: str | None = None) -> None:
        self.symbolizers = Symbolizers(max_open=SYMBOLIZER_MAX_OPEN,
                                       index_cache=IndexCache(symbol_cache_dir) if symbol_cache_dir else None)
        self.idle_rules = idle_rules or IdleRules()
        self.arming = Arming()
        self.trace_capture = TraceCapture()
        self.peer_capture = PeerCapture()
        self.robot_budgets = RobotBudgets()
        self.identities = ProcessIdentities(pods=pods)
        self._pods_watched = False
        self._loops: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        """Pclntab -> its :class:`lgf.golang.loops.LoopIndex` (rule 6 of lgf.idle), gone with the table."""
        self._loops_lock = threading.Lock()
        self.recorded = False
        """The host replays a recording (``lgf replay``): an event's pid names another host's or
        another time's process, never one to look up in this host's ``/proc`` (:meth:`binary_of`)."""

    @classmethod
    def for_config(cls, config) -> Services:
        """The services of a host running ``config``: its ``[idle]`` rules, its ``[kubernetes]``,
        and the decoded symbol tables of each build kept in ``<spool_dir>/symcache``
        (lgf.golang.pclntab_cache), so a restarted lgf, or ``lgf symbolize`` beside it, does not
        decode a build again."""
        sections = getattr(config, "sections", None) or {}
        return cls(rules_of(config), pods_of(sections.get("kubernetes")), f"{config.host.spool_dir}/{CACHE_SUBDIR}")

    def binary_of(self, pid: int, exe: str) -> str | None:
        """The file to read the binary of an event's process from (:func:`binary_path`); for a
        recorded event (:attr:`recorded`), ``exe`` if this host has that file, never the process
        that holds the same pid here now. None when there is none to read."""
        if self.recorded:
            return process_binary(0, exe)
        return binary_path(exe, pid)

    def watch_pods(self) -> None:
        """Start reading this node's pods (``[kubernetes]``; nothing without it)."""
        if self.identities.pods is not None and not self._pods_watched:
            self._pods_watched = True
            self.identities.pods.start()

    def symbolize(self, path: str, pcs: Sequence[int], bias: int = 0) -> list[str]:
        """:meth:`functions`, raising what reading the binary raised (OSError, PclntabError), for a
        caller that counts why a stack went unsymbolized."""
        sym = self.symbolizers.get(path)
        return [f.func for pc in pcs for f in sym.frames(int(pc) - bias)]

    def judge_stack(self, path: str, pcs: Sequence[int], wait_reason: str = "", bias: int = 0) -> Verdict:
        """Symbolize ``pcs`` and judge them with the host's idle rules, the binary's loops included
        (rule 6 of :mod:`lgf.idle`); raises what reading the binary raised (OSError, PclntabError)."""
        sym = self.symbolizers.get(path)
        frames = [f for pc in pcs for f in sym.frames(int(pc) - bias)]
        names = [f.func for f in frames]
        return self.idle_rules.judge(names, wait_reason, StackCalls(frames, bias, self._loops_of(sym.table)))

    def functions(self, path: str, pcs: Sequence[int], bias: int = 0) -> list[str] | None:
        """Function names of ``pcs`` (innermost first, inlined frames expanded) in the binary at
        ``path``, ``bias`` its PIE load bias; None when the binary cannot be read."""
        try:
            return self.symbolize(path, pcs, bias)
        except Exception:  # noqa: BLE001 - an unreadable or vanished binary: no names
            return None

    def _loops_of(self, table) -> LoopIndex:
        """The loop index of an open binary's table, kept as long as the table is open."""
        with self._loops_lock:
            got = self._loops.get(table)
            if got is None:
                got = self._loops[table] = LoopIndex(table)
            return got

    def judge(self, path: str, pcs: Sequence[int], wait_reason: str = "", bias: int = 0) -> Verdict | None:
        """:class:`lgf.idle.IdleRules`'s verdict on a wait whose stack is ``pcs``; None when the
        stack cannot be symbolized (the caller decides: lgf would rather report than go blind)."""
        try:
            return self.judge_stack(path, pcs, wait_reason, bias)
        except Exception:  # noqa: BLE001 - an unreadable or vanished binary: no verdict
            return None

    def is_stall(self, path: str, pcs: Sequence[int], wait_reason: str = "", bias: int = 0) -> bool:
        """False only when the wait is idle. An empty or unreadable stack is a stall: lgf would
        rather arm once too often than go blind."""
        if not pcs:
            return True
        verdict = self.judge(path, pcs, wait_reason, bias)
        return verdict is None or not verdict.idle

    def note_process(self, pid: int, exe: str = "") -> None:
        """A source attached to ``pid``: read its identity now, while its /proc entry is there
        (:mod:`lgf.identity`; at most once per process, the pipeline reuses it)."""
        try:
            self.identities.of(pid, exe)
        except Exception:  # noqa: BLE001 - an unreadable /proc entry: the pipeline tries again
            log.debug("cannot read the identity of pid %d", pid, exc_info=True)

    def close(self) -> None:
        """Unmap every binary and drop every process reader (the host is stopping)."""
        self.symbolizers.close()
        self.trace_capture.close()
        if self._pods_watched:
            self.identities.pods.stop()


class StackCalls:
    """The :class:`lgf.idle.CallSites` of a symbolized stack: ``frames`` (the symbolizer's, innermost
    first, inlined ones included), their PCs biased by ``bias``, looked up in ``loops``
    (:class:`lgf.golang.loops.LoopIndex`). Inlined frames share their PC with the frame they were
    inlined into: a loop anywhere in that function counts for all of them."""

    def __init__(self, frames, bias: int, loops: LoopIndex):
        self.frames, self.bias, self.loops = frames, bias, loops

    def inlined(self, i: int) -> bool:
        return self.frames[i].inlined

    def in_loop(self, i: int) -> bool | None:
        return self.loops.call_in_loop(self.frames[i].pc - self.bias)


def binary_path(exe: str, pid: int) -> str:
    """The file to read a live process's binary from: the file it runs (``lgf.golang.procfs``),
    even deleted, replaced or in another mount namespace; ``/proc/PID/exe`` when nothing is found."""
    return process_binary(pid, exe) or f"/proc/{pid}/exe"
