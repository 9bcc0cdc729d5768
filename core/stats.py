"""Counters and gauges every part of lgf writes to; /metrics and `lgf run`'s summary read them.

Kept deliberately tiny and thread-safe: sources count ring-buffer losses from their poll threads,
sinks count deliveries from theirs. A metric is a name plus sorted label pairs.
"""

from __future__ import annotations

import threading
from collections import defaultdict


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple, float] = defaultdict(float)
        self._gauges: dict[tuple, float] = {}

    @staticmethod
    def _key(name: str, labels: dict) -> tuple:
        if not labels:
            return (name, ())
        return (name, tuple(sorted((k, str(v)) for k, v in labels.items())))

    def inc(self, name: str, n: float = 1, **labels) -> None:
        key = self._key(name, labels)
        with self._lock:
            self._counters[key] += n

    def set(self, name: str, value: float, **labels) -> None:
        with self._lock:
            self._gauges[self._key(name, labels)] = value

    def unset(self, name: str, **labels) -> None:
        """Drop a gauge (a per-process one, when its process is gone)."""
        with self._lock:
            self._gauges.pop(self._key(name, labels), None)

    def get(self, name: str, **labels) -> float:
        key = self._key(name, labels)
        with self._lock:
            return self._counters.get(key, self._gauges.get(key, 0))

    def total(self, name: str) -> float:
        """Sum of a counter over all its label values."""
        with self._lock:
            return sum(v for (n, _), v in self._counters.items() if n == name)

    def snapshot(self) -> dict[str, list[tuple[dict, float, str]]]:
        """``{name: [(labels, value, "counter"|"gauge"), ...]}``, for exporters."""
        out: dict[str, list] = defaultdict(list)
        with self._lock:
            for (name, labels), v in self._counters.items():
                out[name].append((dict(labels), v, "counter"))
            for (name, labels), v in self._gauges.items():
                out[name].append((dict(labels), v, "gauge"))
        return dict(out)
