"""What the benchmarks share: timing and the Go tools they compare against.

Each bench script runs from bench/, so this module is importable by its bare name.
"""

from __future__ import annotations

import time


def best_of(n: int, fn) -> float:
    """Seconds of the fastest of ``n`` calls: on a shared host the minimum is the least noisy."""
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
