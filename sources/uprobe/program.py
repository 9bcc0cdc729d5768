"""The uprobe source's compiled BPF program: its ``-D`` constants from a Go binary, and sharing.

BPF side: ``uprobe.c`` beside this file (``LGF_PRINT_BPF=1`` prints it with its constants).

Every number the program needs is a ``-D`` constant: the threshold, the options' sizes, and what
the target binary says (``runtime.g`` and ``gobuf`` offsets, wait-reason numbers), never a table in
the C. Targets whose binaries give the same constants share one compiled program (:class:`Programs`:
a host running three Go versions compiles at most three); a compile costs about a second of CPU.
Each binary's runtime function entries and idle/request code sites are loaded into the program's
maps once (:meth:`Program.register_binary`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lgf.bpf import loader, sites
from lgf.causes import INTERNAL_WAIT_REASONS, IO_WAIT_REASON
from lgf.errors import TargetRefused
from lgf.golang.gobinary import runtime_function_entries
from lgf.idle import LOOP_HEAD_REASONS, NO_CASES_REASON

from . import runnable, wakes
from .probes import goroutine_tier_functions

C_FILE = Path(__file__).with_name("uprobe.c")

MAX_HIST_PROCS = 64
"""Per-process histogram blocks of uprobe.c's ``fast_hists`` (48 KiB each; block 0 is unused): the
first 63 processes of a program get the per-switch path without a hash; the rest use ``hist``."""


def constants_of(binary, options, threshold_ns: int, report_idle: bool) -> dict[str, int]:
    """The ``-D`` constants of the program that traces ``binary`` (a :class:`GoBinary`) under
    ``options`` (:class:`UprobeOptions`); raises TargetRefused when the binary lacks what it needs."""
    reasons = binary.wait_reasons
    if not reasons:
        raise binary.refuse("no wait-reason table: cannot name what goroutines wait for")
    internal = [i for i, r in enumerate(reasons) if r in INTERNAL_WAIT_REASONS]
    lo, hi = loader.masks_of(internal)
    io_wait = reasons.index(IO_WAIT_REASON) if IO_WAIT_REASON in reasons else 255
    return {
        "THRESHOLD_NS": threshold_ns,
        "G_GOID": binary.field_offset("g", "goid"),
        "G_STATUS": binary.field_offset("g", "atomicstatus"),
        "G_WAITREASON": binary.field_offset("g", "waitreason"),
        "REASON_PREEMPTED": reasons.index("preempted") if "preempted" in reasons else 255,
        "G_SCHED": binary.field_offset("g", "sched"),
        "G_STARTPC": binary.field_offset("g", "startpc"),
        "G_LABELS": _optional_offset(binary, "g", "labels"),
        "G_M": binary.field_offset("g", "m"),
        **_span("G_SPAN", binary, ("m", "atomicstatus", "waitreason")),
        "MAX_RUNTIME_FUNCS": options.max_runtime_funcs,
        "GOBUF_PC": binary.field_offset("gobuf", "pc"),
        "GOBUF_BP": binary.field_offset("gobuf", "bp"),
        "REASON_IO_WAIT": io_wait,
        "INTERNAL_LO": lo,
        "INTERNAL_HI": hi,
        "MAX_FRAMES": options.max_frames,
        "RINGBUF_PAGES": options.ringbuf_pages,
        "MAX_GOROUTINES": options.max_goroutines,
        "MAX_SITES": options.max_sites,
        **runnable.constants(binary),
        **wakes.constants(),
        "MAX_HIST_PROCS": MAX_HIST_PROCS,
        "REPORT_IDLE": int(report_idle),
        "REASON_NO_CASES": reasons.index(NO_CASES_REASON) if NO_CASES_REASON in reasons else 255,
        "STW_REASON_ARG": int(binary.version_tuple[:2] >= (1, 21)),  # stopTheWorldWithSema(reason)
        **dict(zip(("LOOP_HEAD_LO", "LOOP_HEAD_HI"), loader.masks_of(
            i for i, r in enumerate(reasons) if r in LOOP_HEAD_REASONS), strict=True)),
    }


def _optional_offset(binary, struct: str, field: str) -> int:
    """A field only some features read (g.labels for trace_context): -1 when the layout lacks it,
    so the target is still traced without that feature."""
    try:
        return binary.field_offset(struct, field)
    except TargetRefused:
        return -1


def _span(prefix: str, binary, fields: tuple[str, ...]) -> dict[str, int]:
    """``{PREFIX_LO, PREFIX_LEN}``: the bytes of runtime.g holding ``fields``, read at once in BPF
    (one user-memory read costs about as much for 8 bytes as for 150)."""
    offs = [binary.field_offset("g", f) for f in fields]
    lo, hi = min(offs), max(offs) + 8
    if hi - lo > 256:
        raise binary.refuse(f"runtime.g fields {fields} span {hi - lo} bytes (lgf reads at most 256)")
    return {f"{prefix}_LO": lo, f"{prefix}_LEN": hi - lo}


class Program:
    """One compiled BPF object, shared by every target whose Go runtime layout gives the same
    constants; its ring buffer is polled on a thread of its own, each event handed to ``on_event``."""

    def __init__(self, constants: dict[str, int], on_event: Callable[[Program, object], None]):
        self.constants = constants
        self.bpf = loader.load(C_FILE, constants)
        self._verify_goroutine_tier()
        self.bpf[b"events"].open_ring_buffer(lambda _cpu, data, _size: on_event(self, data))
        self.poller = loader.RingPoller(self.bpf, "uprobe")
        self.poller.start()
        self.lost_seen: dict[int, int] = {}
        self.sched_switch = False
        self.binaries: dict[str, int] = {}
        """build id (or path) -> index in the runtime_funcs and sites maps."""
        self.hslots: dict[int, int] = {}
        """pid -> its fast_hists block (1 .. MAX_HIST_PROCS - 1)."""

    def take_hslot(self, pid: int) -> int:
        """A zeroed fast_hists block for ``pid`` (its own again after an exec), 0 when all are taken."""
        if pid in self.hslots:
            return self.hslots[pid]
        free = sorted(set(range(1, MAX_HIST_PROCS)) - set(self.hslots.values()))
        if not free:
            return 0
        table = self.bpf[b"fast_hists"]
        table[table.Key(free[0])] = table.Leaf()
        self.hslots[pid] = free[0]
        return free[0]

    def fast_hist(self, pid: int):
        """``pid``'s fast_hists block (a ctypes struct), or None."""
        slot = self.hslots.get(pid)
        if not slot:
            return None
        try:
            return self.bpf[b"fast_hists"][self.bpf[b"fast_hists"].Key(slot)]
        except Exception:  # noqa: BLE001 - a map torn down under us reads as empty
            return None

    def _verify_goroutine_tier(self) -> None:
        """Load (verify) the goroutine tier's programs now, with the cheap tier, so that arming
        only attaches them: the kernel's verifier walks on_execute's stack-walk loop for about
        20 ms (more on a loaded host), and a park that begins while the tier is still arming is
        seen by neither tier."""
        from bcc import BPF

        for fn in goroutine_tier_functions():
            self.bpf.load_func(fn.encode(), BPF.KPROBE)
        self.bpf.load_func(b"on_sched_switch", BPF.RAW_TRACEPOINT)

    def register_binary(self, binary, rules) -> int:
        """Load ``binary``'s runtime function entries and code sites (``rules``: lgf.idle's
        IdleRules) into BPF once; returns its index."""
        key = binary.build_id or binary.path
        idx = self.binaries.get(key)
        if idx is not None:
            return idx
        idx = len(self.binaries) + 1
        table = self.bpf[b"runtime_funcs"]
        for addr in runtime_function_entries(binary):
            k = table.Key(idx, 0, addr)
            table[k] = table.Leaf(1)
        sites.load(self.bpf[b"sites"], idx, sites.site_ranges(rules, binary))
        self.binaries[key] = idx
        return idx

    def close(self) -> None:
        self.poller.stop()
        self.bpf.cleanup()


class Programs:
    """The compiled programs of one source, one per distinct set of constants."""

    def __init__(self, options, threshold_ns: int, report_idle: bool,
                 on_event: Callable[[Program, object], None]):
        self.options, self.threshold_ns, self.report_idle = options, threshold_ns, report_idle
        self.on_event = on_event
        self._by_constants: dict[tuple, Program] = {}

    def for_binary(self, binary) -> Program:
        """The program for ``binary``, compiled on first need (the caller holds the source's lock)."""
        constants = constants_of(binary, self.options, self.threshold_ns, self.report_idle)
        key = tuple(sorted(constants.items()))
        prog = self._by_constants.get(key)
        if prog is None:
            prog = Program(constants, self.on_event)
            self._by_constants[key] = prog
        return prog

    def all(self) -> list[Program]:
        return list(self._by_constants.values())

    def __len__(self) -> int:
        return len(self._by_constants)

    def clear(self) -> None:
        """Forget every program (after each was closed)."""
        self._by_constants.clear()
