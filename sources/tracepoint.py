"""The tracepoint source: blocking syscalls of target Go processes, with the goroutine that waited.

BPF side: ``tracepoint.c`` beside this file (``LGF_PRINT_BPF=1`` prints it with its constants).

The ``sys_enter``/``sys_exit`` raw tracepoints (the ``raw_syscalls`` events, without the format
conversion and without needing tracefs) time every syscall of the target processes in the kernel
(other processes cost one hash lookup per syscall and are dropped there). At exit the thread's
current goroutine is read through thread-local storage (``task->thread.fsbase - 8`` for pure-Go
binaries; the fsbase offset comes from the running kernel's BTF). A syscall on ``g0`` is the
runtime's own thread idling (an idle M in futex, the netpoller in epoll_wait, sysmon sleeping):
neither a stall nor counted. A user goroutine's syscall of at least the threshold is reported
with ``stall = "syscall"``, the syscall's name, pid, tid, goid and user stack; shorter ones go to
per-process, per-syscall log2(us) histograms.

Binaries built with cgo keep ``g`` elsewhere in TLS; for them goid is not read (0, with
``extra["goid_known"] = False``) and every long syscall is reported, idle runtime threads included.

Cost: every syscall of a target runs both programs (and a raw-tracepoint attachment puts every
thread of the host on the kernel's syscall slow path). Measured by bench/bench_probe_cost.py on
this 2-CPU VM: nil on a channel ping-pong (no syscalls), +13 % to +20 % CPU per request on a
net/http hello server under wrk (several syscalls per tiny request; a real handler that does work
pays proportionally less). That is why the shipped plugins.toml leaves this source out and the
uprobe source's stop-the-world probes are the always-on tier. Each reported syscall stall that
lgf.idle judges a stall (not an idle wait) also arms the uprobe source's goroutine tier for that
process (``goroutine_tier = "on_stall"``).

Processes are attached and detached live: the tracepoints are attached once; a target starting or
exiting only adds or removes its entry in the ``targets`` map.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lgf import Component, Event, hookimpl
from lgf.bpf import constants as bpf_constants
from lgf.bpf import loader
from lgf.histories import RetiredHistograms

C_FILE = Path(__file__).with_name("tracepoint.c")
STALL_SYSCALL = bpf_constants.STALL_KINDS["syscall"]

log = logging.getLogger("lgf.tracepoint")


@dataclass
class TracepointOptions:
    """``[[sources]] use = "tracepoint"``."""

    max_frames: int = 32
    """User stack frames captured for each reported syscall stall."""
    ringbuf_pages: int = 64
    """Ring buffer size in pages (a power of two); a full ring counts lgf_ringbuf_lost_total."""
    rescan_interval: float = 0.25
    """Seconds between /proc scans for target processes starting and exiting."""

    def __post_init__(self):
        if self.ringbuf_pages <= 0 or self.ringbuf_pages & (self.ringbuf_pages - 1):
            raise ValueError("ringbuf_pages: must be a power of two")
        if not 1 <= self.max_frames <= 127:
            raise ValueError("max_frames: must be between 1 and 127")


def syscall_name(nr: int) -> str:
    try:
        from bcc.syscall import syscall_name as _name
        return _name(nr).decode()
    except Exception:  # noqa: BLE001 - an unknown number is still worth reporting
        return f"syscall_{nr}"


class TracepointSource:
    """See the module docstring. Made by the host as ``TracepointSource(options, ctx)``."""

    def __init__(self, options: TracepointOptions | None, ctx):
        self.options = options or TracepointOptions()
        self.ctx = ctx
        self.log = getattr(ctx, "log", None) or log
        self.threshold_ns = int(ctx.config.host.threshold)
        self.bpf = None
        self._targets: dict[int, object] = {}
        self._retired = RetiredHistograms()
        """Histograms of exited targets, folded by labels (``lgf.histories``)."""
        self._lock = threading.RLock()
        self._emit: Callable[[Event], None] | None = None
        self._watcher = None
        self._poller = None
        self._lost_seen = 0
        self._stop = threading.Event()
        self._housekeeper: threading.Thread | None = None

    def start(self, emit: Callable[[Event], None]) -> None:
        from lgf.golang.discovery import ProcessWatcher

        self._emit = emit
        self.bpf = loader.load(C_FILE, {
            "THRESHOLD_NS": self.threshold_ns, "FSBASE_OFF": loader.fsbase_offset(),
            "MAX_FRAMES": self.options.max_frames, "RINGBUF_PAGES": self.options.ringbuf_pages})
        self.bpf[b"events"].open_ring_buffer(lambda _cpu, data, _size: self._on_ring_event(data))
        self._poller = loader.RingPoller(self.bpf, "tracepoint")
        self._poller.start()
        self._watcher = ProcessWatcher(self.ctx.config.targets, self._on_start, self._on_exit,
                                       interval=self.options.rescan_interval, logger=self.log)
        self._watcher.poll()
        self._watcher.start()
        self._housekeeper = threading.Thread(target=self._housekeep, name="lgf-tp-house", daemon=True)
        self._housekeeper.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.stop()
        if self._housekeeper is not None:
            self._housekeeper.join(timeout=5)
        if self._poller is not None:
            self._poller.stop()
        if self.bpf is not None:
            self._collect_lost()
            self.bpf.cleanup()
            self.bpf = None

    def stats(self) -> dict:
        with self._lock:
            return {"targets": len(self._targets)}

    def is_attached(self, pid: int) -> bool:
        with self._lock:
            return pid in self._targets

    # -- targets ------------------------------------------------------------------------------

    def _on_start(self, target) -> None:
        binary = target.binary
        try:
            goid_off = binary.field_offset("g", "goid")
        except Exception as exc:  # TargetRefused: an unknown layout is refused, others go on
            self.ctx.stats.inc("lgf_targets_refused_total", source="tracepoint")
            self.log.warning("tracepoint: not tracing pid %d: %s", target.pid, exc)
            return
        cgo = binary.info.settings.get("CGO_ENABLED") == "1"
        entry = self.bpf[b"targets"].Leaf(goid_off, 0 if cgo else 1)
        with self._lock:
            self.bpf[b"targets"][self.bpf[b"targets"].Key(target.pid)] = entry
            self._targets[target.pid] = target
        self.ctx.stats.set("lgf_targets_attached", len(self._targets), source="tracepoint")
        if self.ctx.services is not None:
            self.ctx.services.note_process(target.pid, target.exe)
        self.log.info("tracepoint: tracing syscalls of pid %d (%s)", target.pid, target.exe)

    def _on_exit(self, target) -> None:
        with self._lock:
            if target.pid not in self._targets or self.bpf is None:
                return
            # Its counts join its service's series before they leave the map (lgf.histories).
            self._retired.retire(self._histogram_rows(only_pid=target.pid))
            self._targets.pop(target.pid, None)
            try:
                del self.bpf[b"targets"][self.bpf[b"targets"].Key(target.pid)]
            except KeyError:
                pass
            loader.delete_pid_entries(self.bpf[b"hist"], target.pid)
        self.ctx.stats.set("lgf_targets_attached", len(self._targets), source="tracepoint")

    def _housekeep(self) -> None:
        while not self._stop.wait(1.0):
            self._collect_lost()

    def _collect_lost(self) -> None:
        total = sum(int(v.value) for k, v in loader.read_map_items(self.bpf[b"counters"]))
        if total > self._lost_seen:
            self.ctx.stats.inc("lgf_ringbuf_lost_total", total - self._lost_seen, source="tracepoint")
            self.log.warning("tracepoint: ring buffer full: %d syscall events lost (raise ringbuf_pages)",
                             total - self._lost_seen)
            self._lost_seen = total

    # -- events -------------------------------------------------------------------------------

    def _on_ring_event(self, data) -> None:
        raw = self.bpf[b"events"].event(data)
        pid = int(raw.pid)
        target = self._targets.get(pid)
        extra: dict = {"stall": "syscall", "syscall_ret": int(raw.ret)}
        ev = Event(source="tracepoint", pid=pid, tid=int(raw.tid), comm=raw.comm.decode("utf-8", "replace"),
                   goid=int(raw.goid), start_ns=int(raw.start_ns), end_ns=int(raw.end_ns),
                   duration_ns=int(raw.end_ns) - int(raw.start_ns), syscall=syscall_name(int(raw.reason)),
                   pcs=loader.pcs_of(raw), extra=extra)
        if target is not None:
            ev.exe, ev.go_version, ev.build_id = target.exe, target.binary.go_version, target.binary.build_id
            if target.binary.info.settings.get("CGO_ENABLED") == "1":
                extra["goid_known"] = False
            bias = target.load_bias() if target.binary.is_pie else 0
            if bias:
                extra["load_bias"] = bias
        ev.finish()
        services = self.ctx.services
        if target is None or services.is_stall(target.path or target.exe, ev.pcs, "", extra.get("load_bias", 0)):
            services.arming.notify_stall(pid)  # only a stall arms (lgf.idle); an idle wait never does
        if self._emit is not None:
            self._emit(ev)

    # -- maps ---------------------------------------------------------------------------------

    def histograms(self) -> list[dict]:
        """Syscall durations of user goroutines, per process and syscall (``wait_reason`` holds the
        syscall's name), in log2(us) buckets; processes that exited are folded in (``pid=""``,
        ``lgf.histories``)."""
        with self._lock:
            return self._histogram_rows() + self._retired.rows()

    def _histogram_rows(self, only_pid: int | None = None) -> list[dict]:
        if self.bpf is None:
            return []
        groups: dict[tuple, dict[int, int]] = {}
        for key, value in loader.read_map_items(self.bpf[b"hist"]):
            if only_pid is not None and int(key.tgid) != only_pid:
                continue
            g = groups.setdefault((int(key.tgid), int(key.reason)), {})
            g[int(key.slot)] = g.get(int(key.slot), 0) + int(value.value)
        out = []
        for (pid, nr), slots in sorted(groups.items()):
            target = self._targets.get(pid)
            comm = target.comm if target is not None else loader.comm_of(pid)
            out.append({"labels": {"pid": str(pid), "comm": comm, "exe": getattr(target, "exe", ""),
                                   "stall": "syscall", "wait_reason": syscall_name(nr)},
                        "log2_us": loader.log2_buckets(slots)})
        return out

    def runtime_counters(self, pid: int) -> dict:
        """Only ``ringbuf_lost`` is measured here (the uprobe source has the runtime's counters)."""
        if self.bpf is None or pid not in self._targets:
            return {}
        lost = sum(int(v.value) for k, v in loader.read_map_items(self.bpf[b"counters"]) if k.tgid == pid)
        return {"ringbuf_lost": lost}


@hookimpl
def lgf_components():
    return [Component("source", "tracepoint", TracepointSource, TracepointOptions,
                      doc="blocking syscalls of target Go processes via raw_syscalls tracepoints")]
