"""What the uprobe source measures besides events: per-process counters and log2 histograms.

Every duration the BPF side measures, under the threshold too, lands in a histogram map: the
shared ``hist`` hash (lgf_maps.h) and, for the per-switch path, each process's ``fast_hists``
block (an array indexed by kind, wait reason and log2 bucket, laid out by ``FH_*`` of
:mod:`lgf.bpf.constants`); loop-head waits judged idle in Python are added from
:class:`lgf.sources.uprobe.verdict.LoopHeadJudge`. Processes that exited are folded in by their
labels (``pid=""``, :mod:`lgf.histories`). Reading them costs a map walk per scrape, nothing per
event.
"""

from __future__ import annotations

from lgf.bpf import constants as bpf_constants
from lgf.bpf import loader
from lgf.histories import RetiredHistograms

from . import runnable
from .program import Program
from .targets import Targets

STALL_NAMES = bpf_constants.STALL_NAMES
COUNTER_NAMES = bpf_constants.COUNTER_NAMES
GOROUTINE_TIER_COUNTERS = ("netpoll_ready", "netpoll_waiting", "idle_waits", "stack_cut")
FH_KINDS = tuple(bpf_constants.STALL_KINDS[k] for k in bpf_constants.FAST_HIST_KINDS)
"""The stall kind of each third of a fast_hists block (park, runnable, idle)."""
FH_REASONS, FH_SLOTS = bpf_constants.FH_REASONS, bpf_constants.FH_SLOTS


class Metrics:
    """Counters and histograms of one uprobe source's targets (see the module docstring)."""

    def __init__(self, targets: Targets, verdicts, options, stats, log, budget=None):
        self.targets, self.verdicts, self.options = targets, verdicts, options
        self.budget = budget
        """The goroutine tier's measured cost per target (``lgf.sources.uprobe.budget``), or None."""
        self.stats, self.log = stats, log
        self.retired = RetiredHistograms()
        """Histograms of exited targets, folded by labels (``lgf.histories``)."""

    def retire(self, pid: int) -> None:
        """``pid`` exits: its counts join its service's series before they leave the maps."""
        self.retired.retire(self.histogram_rows(only_pid=pid))

    def collect_lost(self, prog: Program) -> None:
        for pid, n in read_counters(prog, "ringbuf_lost").items():
            delta = n - prog.lost_seen.get(pid, 0)
            if delta > 0:
                prog.lost_seen[pid] = n
                self.stats.inc("lgf_ringbuf_lost_total", delta, source="uprobe")
                self.log.warning("uprobe: ring buffer full: %d stall events of pid %d lost "
                                 "(raise ringbuf_pages)", delta, pid)

    def runtime_counters(self, pid: int) -> dict:
        """Netpoller, GC and ring-buffer counters of ``pid`` (a missing key = not measured)."""
        with self.targets.lock:
            att = self.targets.attached.get(pid)
            if att is None:
                return {}
            values = read_counters(att.program)
            out = {name: 0 for name in ("gc_cycles", "stw_count", "ringbuf_lost", "wait_slot_reused")}
            if att.goroutine_tier_seen:
                out.update({name: 0 for name in GOROUTINE_TIER_COUNTERS})
                if self.options.netpoll_calls:
                    out["netpoll_calls"] = 0
            for (p, name), v in values.items():
                if p == pid and name in out:
                    out[name] = max(v, 0)
            if self.budget is not None:  # the tier's price, measured: lgf_go_runtime{counter="tier_cost_share"}...
                out.update(self.budget.counters(pid))
            if "idle_waits" in out:  # loop heads are judged idle in Python (lgf.sources.uprobe.verdict)
                out["idle_waits"] += self.verdicts.idle_waits.get(pid, 0)
            block = att.program.fast_hist(pid) if att.goroutine_tier_seen else None
            if block is not None:
                out["netpoll_waiting"] = max(out["netpoll_waiting"] + int(block.netpoll_waiting), 0)
                out["netpoll_ready"] += int(block.netpoll_ready)
            return out

    def histograms(self) -> list[dict]:
        """Every duration measured in BPF, per process, stall kind and wait reason: log2(us) buckets.
        Processes that exited are folded in by their labels (``pid=""``, ``lgf.histories``)."""
        with self.targets.lock:
            return self.histogram_rows() + self.retired.rows()

    def histogram_rows(self, only_pid: int | None = None) -> list[dict]:
        """The rows of live processes (``only_pid``: of that one); called with the targets' lock held."""
        out = []
        programs = self.targets.programs.all()
        attached = dict(self.targets.attached)
        names_of = {name: kind for kind, name in STALL_NAMES.items()}
        python_side = self.verdicts.hist_items()
        for prog in programs:
            groups: dict[tuple, dict[int, int]] = {}
            for key, value in loader.read_map_items(prog.bpf[b"hist"]):
                if only_pid is not None and int(key.tgid) != only_pid:
                    continue
                g = groups.setdefault((int(key.tgid), int(key.kind), int(key.reason)), {})
                g[int(key.slot)] = g.get(int(key.slot), 0) + int(value.value)
            for pid in list(prog.hslots):  # the per-switch path's blocks
                if only_pid is not None and pid != only_pid:
                    continue
                block = prog.fast_hist(pid)
                if block is not None:
                    _add_fast_hist(groups, pid, block)
            for (pid, stall, reason), slots in python_side:  # loop-head waits judged in Python
                if only_pid is not None and pid != only_pid:
                    continue
                if attached.get(pid) is not None and attached[pid].program is prog:
                    g = groups.setdefault((pid, names_of[stall], reason), {})
                    for slot, n in slots.items():
                        g[slot] = g.get(slot, 0) + n
            for (pid, kind, reason), slots in sorted(groups.items()):
                att = attached.get(pid)
                stall = STALL_NAMES.get(kind, str(kind))
                names = (att.stw_reasons if stall == "stw" else att.wait_reasons) if att else []
                if stall == "runnable":  # the high byte says what made it runnable (runnable.py)
                    reason &= 0xFF
                comm = att.target.comm if att else loader.comm_of(pid)
                out.append({"labels": {"pid": str(pid), "comm": comm, "exe": att.target.exe if att else "",
                                       "stall": stall,
                                       "wait_reason": "" if (reason == runnable.NO_REASON and stall == "runnable")
                                       or (stall == "stw" and not names) else reason_name(names, reason)},
                            "log2_us": loader.log2_buckets(slots)})
        return out


def read_counters(prog: Program, only: str | None = None) -> dict:
    """``{pid: value}`` of one counter (``only``), or of every counter keyed ``(pid, name)``."""
    out: dict = {}
    for key, value in loader.read_map_items(prog.bpf[b"counters"]):
        name = COUNTER_NAMES[key.which] if key.which < len(COUNTER_NAMES) else str(key.which)
        if only is None:
            out[(int(key.tgid), name)] = int(value.value)
        elif name == only:
            out[int(key.tgid)] = int(value.value)
    return out


def gc_cycles(prog: Program, pid: int) -> int:
    """GC cycles ``pid`` has started (the gcStart probe's counter), stamped on an event that carries
    addresses into the heap: trace_context reads them only if no cycle has started since, so an
    object the goroutine let go of cannot have been freed and reused (one map lookup)."""
    table = prog.bpf[b"counters"]
    value = table.get(table.Key(pid, COUNTER_NAMES.index("gc_cycles")))
    return int(value.value) if value is not None else 0


def _add_fast_hist(groups: dict, pid: int, block) -> None:
    """Add one fast_hists block's nonzero cells to ``groups`` ({(pid, kind, reason): {slot: n}})."""
    cells = memoryview(bytes(block.cells)).cast("Q")
    per_kind = FH_REASONS * FH_SLOTS
    for i, n in enumerate(cells):
        if n:
            k, rest = divmod(i, per_kind)
            reason, slot = divmod(rest, FH_SLOTS)
            g = groups.setdefault((pid, FH_KINDS[k], reason), {})
            g[slot] = g.get(slot, 0) + n


def reason_name(names: list[str], index: int) -> str:
    return names[index] if 0 <= index < len(names) else f"reason {index}"
