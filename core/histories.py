"""Histograms of processes that exited, kept with their labels so /metrics never rewrites history.

Why: ``/metrics`` turns each source's BPF log2 histograms into ``lgf_stall_duration_seconds``
series per cause, service and stall kind (``lgf.http``). The labels come from what the source
knows about the process (its name, its binary's wait-reason table). Once the process exited, the
source no longer knew them: the same counts came back as ``cause="unknown", service=""``, the
per-cause series vanished, and Prometheus saw a counter reset and a jump in ``unknown`` at every
deploy.

The choice (documented in the README's HTTP section): the series are per service, not per
process, and a process's counts are **folded into its service's series when it exits**. A source
calls ``retire(rows)`` with the process's rows, labelled while it still knew them, and deletes
them from its BPF map in the same step (under the lock its ``histograms()`` takes, so no scrape
sees them twice or not at all); ``rows()`` returns the folded rows, which the source appends to
its live ones. So a series keeps its labels for its whole life, counts never go down, and a
restarted service continues its series (its new process's counts add to the folded ones). The
BPF maps stay bounded by the processes alive now, not by every process ever traced.

Cost: a dict update per bucket of an exiting process; memory per distinct label set (service x
stall kind x reason), not per process.
"""

from __future__ import annotations

import threading

PER_PROCESS_LABELS = ("pid",)
"""Labels dropped when folding: they name the process, and the series outlive it."""


class RetiredHistograms:
    """Folded log2 histograms of exited processes, by their labels minus ``pid``. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_labels: dict[tuple, list[int]] = {}

    def retire(self, rows: list[dict]) -> None:
        """Fold histogram rows (``{"labels": {...}, "log2_us": [...]}``) of an exited process."""
        with self._lock:
            for row in rows:
                labels = {k: str(v) for k, v in row.get("labels", {}).items() if k not in PER_PROCESS_LABELS}
                slots = self._by_labels.setdefault(tuple(sorted(labels.items())), [])
                for i, n in enumerate(row.get("log2_us", [])):
                    if i >= len(slots):
                        slots.append(0)
                    slots[i] += int(n)

    def rows(self) -> list[dict]:
        """The folded rows, in the shape of ``histograms()`` (``pid`` is ``""``)."""
        with self._lock:
            return [{"labels": {"pid": "", **dict(key)}, "log2_us": list(slots)}
                    for key, slots in sorted(self._by_labels.items())]
