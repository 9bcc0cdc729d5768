"""Clocks: the one place lgf's delivery code reads the time and waits.

Why: the durable queue (``lgf.delivery``) backs off for minutes and the WeCom sink counts a
20-a-minute window. Tests must run an hour of outage or rate limiting in seconds, and a test's
fake server and a child lgf process must agree on what time it is. So every ``now()`` and every
wait goes through a clock object instead of ``time``:

* ``SystemClock``: production; ``time.monotonic`` and ``threading.Event.wait``.
* ``ScaledClock(speed, origin)``: real waits, ``speed`` times shorter; processes given the same
  origin agree on ``now()`` (the kill -9 tests run a child lgf on one).
* ``ManualClock``: virtual time; a timed wait advances it at once, so a backoff costs no real time.

A clock is any object with ``now() -> float`` (seconds) and ``wait(event, seconds) -> bool``
(wait until ``event`` is set or ``seconds`` pass, None meaning no timeout; True if it was set).
Cost: one function call over ``time.monotonic`` per read.
"""

from __future__ import annotations

import threading
import time


class SystemClock:
    """Real time: ``time.monotonic`` and ``Event.wait``."""

    def now(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, seconds: float | None) -> bool:
        """Wait ``seconds`` (None: until set) or until ``event`` is set; True if it was set."""
        return event.wait(seconds)


class ScaledClock:
    """Time running ``speed`` times faster than the wall clock.

    ``now()`` is seconds since ``origin`` (a ``time.time()`` value) times ``speed``, so two
    processes given the same origin and speed agree on it: a test's fake server and a child lgf.
    """

    def __init__(self, speed: float, origin: float | None = None):
        self.speed = speed
        self.origin = time.time() if origin is None else origin

    def now(self) -> float:
        return (time.time() - self.origin) * self.speed

    def wait(self, event: threading.Event, seconds: float | None) -> bool:
        return event.wait(None if seconds is None else max(0.0, seconds) / self.speed)


class ManualClock:
    """Virtual time: ``wait`` with a timeout advances it at once (unless the event is already set)."""

    def __init__(self, start: float = 0.0):
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += max(0.0, seconds)

    def wait(self, event: threading.Event, seconds: float | None) -> bool:
        if seconds is None:
            return event.wait()
        if event.is_set():
            return True
        self.advance(seconds)
        time.sleep(0)  # let other threads run, as a real wait would
        return event.is_set()
