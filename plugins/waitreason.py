"""The default classifier (``use = "waitreason"``): a stall's kind and Go wait reason -> its cause.

The tables live in :mod:`lgf.causes` (shared with /metrics and the sources). A text a newer Go
adds is not guessed at: the classifier answers ``None`` (the ``unknown`` fallback then answers),
counts it in ``lgf_classify_unmapped_total{wait_reason}`` and logs it once. A known non-user wait
maps to ``unknown`` with its reason in ``extra["cause_note"]``.

Cost: two dict look-ups per event; no I/O.
"""

from __future__ import annotations

import logging

from lgf import Component, hookimpl
from lgf.causes import NOT_USER_WAITS, cause_of, decide_with_enrichment

log = logging.getLogger("lgf.waitreason")

class WaitReasonClassifier:
    """The component instance: registered for the run, answers ``lgf_classify``."""

    def __init__(self, options=None, ctx=None):
        self.stats = ctx.stats if ctx is not None else None
        self._logged: set[str] = set()

    @hookimpl(trylast=True)
    def lgf_classify(self, event):
        # trylast: any other classifier (a plugin module's or a configured one) speaks first;
        # among trylast ones pluggy calls the last registered first, and this instance is
        # registered at build, after the ``unknown`` module, so ``unknown`` still answers last.
        stall = event.extra.get("stall", "")
        cause = cause_of(stall, event.wait_reason, event.syscall)
        if cause is None:
            if self.stats is not None:
                self.stats.inc("lgf_classify_unmapped_total", wait_reason=event.wait_reason)
            if event.wait_reason not in self._logged:
                self._logged.add(event.wait_reason)
                log.warning("wait reason %r (Go %s) is not in lgf's table; classified unknown",
                            event.wait_reason, event.go_version or "?")
            return None
        if cause == "unknown":
            event.extra.setdefault("cause_note", NOT_USER_WAITS.get(event.wait_reason, ""))
            return cause
        return decide_with_enrichment(cause, event)

    @hookimpl(trylast=True)
    def lgf_classify_batch(self, events):
        """``lgf_classify`` of each event no classifier before this one decided (lgf.hookspecs).
        One event that raises does not leave the others undecided: raised once they are classified.

        A storm's stalls share a few (kind, wait reason, syscall) triples: each triple's plain
        cause is decided once per batch, and an event that carries nothing enrichment could
        decide by (no symbolized stack, no GC phase) takes it as it is."""
        failed = None
        plain: dict[tuple, str] = {}
        for event in events:
            if event.cause:
                continue
            try:
                triple = (event.extra.get("stall", ""), event.wait_reason, event.syscall)
                cause = plain.get(triple)
                if cause is None or event.stack or event.gc_phase:
                    cause = self.lgf_classify(event)
                    if cause not in (None, "unknown") and not event.stack and not event.gc_phase:
                        plain[triple] = cause  # not "unknown": that one notes why on each event
            except Exception as exc:  # noqa: BLE001 - re-raised below, for the host's guard to count
                failed = failed or exc
                continue
            if cause is not None:
                event.cause = cause
        if failed is not None:
            raise failed


@hookimpl
def lgf_components():
    return [Component("classifier", "waitreason", WaitReasonClassifier,
                      doc="Go wait reason and stall kind -> cause (every supported Go version)")]
