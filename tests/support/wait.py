"""Waiting for something another thread or process does, without sleeping a fixed time.

The timeout is a guard against a hang, never a measurement: no test asserts on how long it took.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def poll_until(pred: Callable[[], object], timeout: float, interval: float = 0.01) -> object:
    """Call ``pred`` every ``interval`` seconds until it returns something true or ``timeout``
    seconds passed; returns its last answer (the caller asserts on it, with its own message)."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got or time.monotonic() >= deadline:
            return got
        time.sleep(interval)


def wait_until(pred: Callable[[], object], timeout: float = 60.0, interval: float = 0.01,
               what: str = "condition") -> None:
    """Like :func:`poll_until`, but a timeout is an ``AssertionError`` naming ``what``."""
    if not poll_until(pred, timeout, interval):
        raise AssertionError(f"{what} not reached within {timeout} s")
