"""What the goroutine sampler keeps per target process and per park it follows.

Records only (:class:`SampledProcess`, :class:`SampledPark`): the passes that fill them are
:mod:`lgf.sources.uprobe.sampler`'s, the run-queue record :mod:`lgf.sources.uprobe.runq`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lgf.golang import httpserve
from lgf.golang.runtime_reader import RuntimeReader
from lgf.idle import Verdict

from .gscan import GoroutineScan

G_FIELDS = (("stack.hi", "Q"), ("atomicstatus", "I"), ("goid", "Q"), ("waitreason", "B"),
            ("trackingSeq", "B"), ("startpc", "Q"), ("sched.sp", "Q"), ("sched.pc", "Q"),
            ("sched.bp", "Q"))
"""What one sample reads of each g (in pages: :mod:`lgf.golang.gtable`)."""


@dataclass
class SampledPark:
    """One park of one goroutine, as the samples saw it."""

    goid: int
    seq: int
    reason: int
    start_after_ns: int
    """When the read of its g before the one that first saw it began (0: unknown): the park
    began after it."""
    first_ns: int
    """End of the first sample that saw it parked: the park began at or before this."""
    last_ns: int
    """Start of the latest sample that still saw it parked."""
    over_threshold: bool = False
    pcs: list[int] = field(default_factory=list)
    labels: dict = field(default_factory=dict)
    """The goroutine's pprof labels, read while it was parked (the event's ``labels``)."""
    verdict: Verdict | None = None
    """Stall or idle wait (:mod:`lgf.idle`), judged once from its stack when it crossed the threshold."""
    request: httpserve.ServedRequest | None = None
    """The HTTP request it serves, found in its frames while it was parked (:mod:`lgf.golang.httpserve`)."""
    traceparent: str | None = None
    """That request's ``traceparent`` header, read then ("" when it has none or it could not be
    read; None when trace_context is off)."""


class SampledProcess:
    """What the sampler keeps per target process."""

    def __init__(self, target, reader: RuntimeReader, runtime_starts: frozenset[int], skipped_reasons,
                 max_goroutines: int):
        self.target = target
        self.reader = reader
        self.runtime_starts = runtime_starts
        binary = target.binary
        self.reasons = list(binary.wait_reasons)
        self.skipped = frozenset(i for i, r in enumerate(self.reasons) if r in skipped_reasons)
        """Wait reasons not followed: the runtime's own, and ``sample_ignore_reasons``."""
        offsets = []
        for name, letter in G_FIELDS:
            if name.startswith("sched."):
                off = binary.field_offset("g", "sched") + binary.field_offset("gobuf", name[6:])
            elif name.startswith("stack."):
                off = binary.field_offset("g", "stack") + binary.field_offset("stack", name[6:])
            else:
                off = binary.field_offset("g", name)
            offsets.append((off, letter, name))
        offsets.sort()
        self.fields = [(off, letter) for off, letter, _ in offsets]
        self.order = [name for _, _, name in offsets]
        self.scan = GoroutineScan(reader, [(name, off, letter) for off, letter, name in offsets], max_goroutines)
        """Which of its g structs to read each pass, and which changed (``gscan.py``)."""
        self.verdicts: dict[tuple[tuple[int, ...], str], Verdict] = {}
        """(stack, wait reason) -> its verdict under ``verdicts_of`` (the host's idle rules)."""
        self.verdicts_of = None
        self.first_pass = True
        """No pass has read the process yet (the first reads every g as new: not the usual cost)."""
        self.unwatched = ""
        """Why the process is not sampled now ("too_many"), "" while it is."""
        self.runq = None
        """The run-queue record (``runq.RunQueues``), made by the first pass that sees one."""
        self.parks: dict[int, SampledPark] = {}
        """g address -> the park the sampler follows there. A park judged an idle wait is dropped
        (unless ``report_idle``): its g is not looked at again until it changes."""
        self.last_full_ns = 0
        """Start of the latest pass (0 after the tier was on)."""
        self.handoff_since: int | None = None
        """The ``tier.since(pid)`` whose hand-off pass is done (see ``GoroutineSampler._sample``)."""
        self.next_ns = 0
        self.cost_ns = 0
        """What one sample of this process costs, on average (ns of lgf's CPU, EWMA of 1/8)."""
        self.interval_ns = 0
        """This process's sampling interval now (longer than the option's if sampling it is dear)."""
        self.light_cost_ns = 0
        """What the light passes since the last pass cost (counted with it against the budget)."""
        self.taken_over: list[tuple[int, SampledPark]] = []
        """Parks the goroutine tier held open when its slice ended (:meth:`GoroutineSampler.take_over`),
        followed from the sampler's next pass (under the sampler's lock until then)."""
        self.watch: dict[int, tuple[int, int]] = {}
        """g address -> (read it every pass until then, it began what it does now after then):
        the goroutines the wake signal saw woken lately that have not parked since."""
        self.quiet_passes = 0
        """Passes in a row that found nothing at all in it (``still``)."""
        self.still = False
        """The latest full pass found nothing: no g changed, none followed or runnable."""
        self.forced = 0
        """Full passes in a row made before their time, while it was quiet (``QUIET_FORCED``)."""
        self.quiet = False
        """Read in full every ``quiet_interval`` now, and in between only what woke (``pacing.Pacer.pace``)."""
        self.quiet_seen_ns = 0
        """The latest pass that found it quiet, or still."""
        self.wants_wakes = False
        """Its wakes were asked for because it was quiet (given back once it is not)."""
        self.gauged: tuple[int, int, int] | None = None
        """(interval, goroutines, cycle) as the per-process gauges last showed them."""
        self.passes = 0
        """Full passes of it so far (``lgf_sampler_samples_total`` counts those of every process)."""
