"""Walking and judging the parks the sampler saw cross the threshold: stall or idle wait, and the
request a stall serves.

Why apart from the sampler: the sampler (``sampler.py``) decides *when* a park is over the
threshold, from the rows of its passes; this module decides *what* it is, from the goroutine's
stack, read from outside while it is still parked: the host's one symbolize-then-judge
(``ctx.services``: :mod:`lgf.idle`'s rules) and, for a stall serving a net/http request, which
request (:mod:`lgf.golang.httpserve`) and its ``traceparent``.

Cost: one batched read of the stacks per ``JUDGE_BATCH`` parks, a re-read of their g structs (a
goroutine that ran meanwhile rewrote its stack: that copy proves nothing), and a symbol-cache hit
per frame; stacks of one shape (a pool's workers, a server's keep-alive connections) are
symbolized and judged once per process (``VERDICTS_KEPT``): 100,000 idle workers cost 7 s of
lgf's CPU judged one by one, about 1.5 s now, once.
"""

from __future__ import annotations

from collections import Counter

from lgf.errors import TargetRefused
from lgf.golang import goroutine_stack, httpserve
from lgf.golang.gstatus import G_SCAN, G_WAITING
from lgf.golang.httpheader import read_request_headers
from lgf.golang.httpreq import UnknownLayout
from lgf.golang.pproflabels import labels_of_g
from lgf.golang.runtime_reader import Unreadable, read_g_fields

JUDGE_BATCH = 1024
"""Parks walked and judged together (one batched read of their stacks)."""

VERDICTS_KEPT = 4096
"""Distinct (stack, wait reason) verdicts kept per process before the cache starts afresh."""

class ParkJudge:
    """Judges parks for one sampler: ``services`` (the host's, ``ctx.services``), ``stats``, ``log``."""

    def __init__(self, services, stats, log, report_idle: bool = False):
        self.services, self.stats, self.log = services, stats, log
        self.report_idle = report_idle
        """Idle waits are reported too (``[idle] report_idle``): their stacks must be proved read
        while parked, as a stall's are."""

    def judge(self, pid: int, proc, crossed: list[tuple], closing: bool) -> bool:
        """Walk and judge the parks that just crossed the threshold (:mod:`lgf.idle`); returns
        whether one of them is a stall the goroutine tier should be armed for. Idle waits are
        counted (``lgf_idle_waits_total{source="sampler",site}``), never armed on. In batches of
        ``JUDGE_BATCH``: a pool of 100,000 workers crossing at once would otherwise hold every
        stack copy at the same time (200 MB, measured)."""
        arm = False
        for i in range(0, len(crossed), JUDGE_BATCH):
            arm |= self._judge_batch(pid, proc, crossed[i:i + JUDGE_BATCH], closing)
        return arm

    def _judge_batch(self, pid: int, proc, crossed: list[tuple], closing: bool) -> bool:
        order = proc.order
        cols = [order.index(n) + 1 for n in ("sched.pc", "sched.bp", "sched.sp", "stack.hi")]
        bounds: list[list[tuple[int, int]]] = [[] for _ in crossed]
        walks = goroutine_stack.walk_many(proc.reader, [tuple(row[c] for c in cols) for _p, row in crossed],
                                          bounds=bounds)
        rules = self.services.idle_rules
        if proc.verdicts_of is not rules or len(proc.verdicts) > VERDICTS_KEPT:
            proc.verdicts, proc.verdicts_of = {}, rules  # new [idle] rules (a reload), or too many stacks
        verdicts = []
        for (park, _row), (pcs, _complete) in zip(crossed, walks, strict=True):
            reason = reason_name(proc.reasons, park.reason)
            # Many goroutines park on one stack (a pool's workers at their loop head, a server's
            # keep-alive connections): symbolize and judge each stack once (100,000 idle workers:
            # 7 s of lgf's CPU judged one by one, measured).
            key = (tuple(pcs), reason)
            verdict = proc.verdicts.get(key)
            if verdict is None:
                verdict = proc.verdicts[key] = self._verdict(proc, pcs, reason)
            verdicts.append(verdict)
        # Read again whether each is still in the same park, but only where it matters: a copy
        # taken while the goroutine ran proves nothing, and a stall (or a reported idle wait) is
        # only believed of a copy taken while parked. An idle wait is never reported (nor
        # followed) either way: one that ran meanwhile has a new park, judged when seen. (At 200
        # idle services, 1,000 idle parks a second each cost this read: a system call, ~20 us here.)
        proved = [(p, r) for (p, r), v in zip(crossed, verdicts, strict=True) if self.report_idle or not v.idle]
        still = self._still_parked(proc, proved) if proved else set()
        arm = False
        idle_sites: Counter[str] = Counter()
        serving: list[tuple] = []
        captured: list[tuple] = []  # (park, row, what it waited on): kept once seen still parked
        for (park, row), (pcs, _complete), frames, verdict in zip(crossed, walks, bounds, verdicts, strict=True):
            reason = reason_name(proc.reasons, park.reason)
            if (self.report_idle or not verdict.idle) and row[0] not in still:
                park.over_threshold = False  # it ran while its stack was read (the next pass sees
                continue  # the park ended: nothing reported)
            park.pcs = pcs
            park.verdict = verdict
            if verdict.idle:
                idle_sites[verdict.site] += 1
                continue
            self._count("lgf_sampler_stalls_total")
            park.labels = labels_of_g(proc.reader, proc.target.binary, row[0])  # while still parked
            if verdict.scope == "request" and self._request(proc, park, pcs, frames, row):
                serving.append((park, row))
            if self.services.peer_capture.enabled:
                self._peer(pid, proc, park, reason, pcs, frames, row, captured)
            if not closing:
                self.log.info("sampler: pid %d: goroutine %d parked (%s%s) for over %.0f ms: arming",
                              pid, park.goid, reason, ", serving a request" if verdict.scope
                              else ", stack cut" if verdict.cut else "",
                              park.last_ns / 1e6 - park.first_ns / 1e6)
                arm = True
        for site, n in idle_sites.items():
            self.log.debug("sampler: pid %d: %d goroutines idle (%s)", pid, n, site)
            if self.stats is not None:
                self.stats.inc("lgf_idle_waits_total", n, source="sampler", site=site)
        if serving:  # read while parked, or the frame may have been another request's by then
            still = self._still_parked(proc, serving)
            for park, row in serving:
                if row[0] in still:
                    self._count("lgf_sampler_requests_found_total")
                else:
                    park.request = park.traceparent = None
                    self._count("lgf_sampler_request_missing_total", value="request", reason="ran_meanwhile")
        if captured:  # read while parked, or the frames may have been another wait's by then
            still = self._still_parked(proc, [(p, r) for p, r, _f in captured])
            for park, row, facts in captured:
                if row[0] in still:
                    self.services.peer_capture.keep(pid, park.goid, park.first_ns, facts)
                else:
                    self._count("lgf_sampler_peer_missing_total", value="all", reason="ran_meanwhile")
        return arm

    def _peer(self, pid: int, proc, park, reason: str, pcs: list[int], frames: list[tuple[int, int]],
              row: tuple, captured: list[tuple]) -> None:
        """What the stall waited on (:mod:`lgf.golang.peercapture`), read now while it is parked;
        what cannot be read is counted in ``lgf_sampler_peer_missing_total{value,reason}``."""
        order = proc.order
        stack = (row[order.index("sched.sp") + 1], row[order.index("stack.hi") + 1])
        response = park.request.response if park.request is not None else 0
        try:
            facts = self.services.peer_capture.capture(
                proc.reader, proc.target.binary, row[0], reason, pcs, frames, stack, response,
                count=lambda value, why: self._count("lgf_sampler_peer_missing_total", value=value, reason=why))
        except Exception:  # a bug there must not stop the sampler: the stall is reported without it
            self.log.exception("sampler: pid %d: reading what goroutine %d waited on failed", pid, park.goid)
            self._count("lgf_sampler_peer_missing_total", value="all", reason="error")
            return
        if facts:
            captured.append((park, row, facts))

    def _request(self, proc, park, pcs: list[int], frames: list[tuple[int, int]],
                 row: tuple) -> bool:
        """Find the HTTP request a request-scoped stall serves in its own frames, and its
        ``traceparent`` when trace_context asks for headers (:mod:`lgf.golang.httpserve`); a
        failure is counted (``lgf_sampler_request_missing_total{value,reason}``), never guessed."""
        order, binary = proc.order, proc.target.binary
        stack = (row[order.index("sched.sp") + 1], row[order.index("stack.hi") + 1])
        try:
            park.request = httpserve.find_request(proc.reader, binary, pcs, frames, stack)
        except Unreadable as exc:
            self._count("lgf_sampler_request_missing_total", value="request", reason=str(exc))
            return False
        except UnknownLayout:
            self._count("lgf_sampler_request_missing_total", value="request", reason="unknown_layout")
            return False
        capture = self.services.trace_capture
        if capture.enabled and capture.headers:
            # Read now, while the request surely lives; "" on failure, so no one reads it later,
            # when its memory may be another request's.
            park.traceparent = ""
            try:
                values = read_request_headers(proc.reader, binary, park.request.addr, ["traceparent"])
                park.traceparent = (values.get("Traceparent") or [""])[0]
            except Unreadable as exc:
                self._count("lgf_sampler_request_missing_total", value="traceparent", reason=str(exc))
            except TargetRefused:  # UnknownMapLayout
                self._count("lgf_sampler_request_missing_total", value="traceparent", reason="unknown_map_layout")
        return True

    @staticmethod
    def _still_parked(proc, crossed: list[tuple]) -> set[int]:
        """The g addresses among ``crossed`` still in the same park after their stacks were read
        (same status, goid and trackingSeq): a goroutine that ran meanwhile rewrote its stack,
        and a walk of it would end early and look like a cut stack, i.e. a stall."""
        order = proc.order
        i_status, i_goid, i_seq = (order.index(n) + 1 for n in ("atomicstatus", "goid", "trackingSeq"))
        try:
            rows = read_g_fields(proc.reader, [row[0] for _p, row in crossed], proc.fields)
        except Unreadable:
            return set()
        before = {row[0]: row for _p, row in crossed}
        return {r[0] for r in rows if (r[i_status] & ~G_SCAN) == G_WAITING and r[i_goid] == before[r[0]][i_goid]
                and r[i_seq] == before[r[0]][i_seq]}

    def _verdict(self, proc, pcs: list[int], reason: str):
        """The host's verdict on ``pcs`` (lgf.idle, the binary's loops included); a binary that
        cannot be read gives no names, judged as a cut stack: a stall."""
        try:
            return self.services.judge_stack(binary_path(proc.target), pcs, reason, proc.reader.bias)
        except Exception as exc:  # OSError, PclntabError: no names, so no idle verdict either
            self._count("lgf_sampler_unsymbolized_total", reason=type(exc).__name__)
            return self.services.idle_rules.judge([], reason)

    def _count(self, name: str, **labels) -> None:
        if self.stats is not None:
            self.stats.inc(name, **labels)


def binary_path(target) -> str:
    """A path the target's binary can be opened at (for its symbols)."""
    return target.path or target.exe or f"/proc/{target.pid}/exe"


def reason_name(names: list[str], index: int) -> str:
    """The runtime's text for wait reason ``index``."""
    return names[index] if 0 <= index < len(names) else f"reason {index}"
