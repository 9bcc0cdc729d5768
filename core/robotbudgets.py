"""Send budgets of chat robots, one per robot key per host, kept across restarts.

A WeCom group robot takes at most 20 messages a minute per key, whoever sends them: two sinks of
one host using the same key must share one budget. The host owns a :class:`RobotBudgets`
(``ctx.services.robot_budgets``); a sink asks it for the budget of its key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import deque
from pathlib import Path

log = logging.getLogger("lgf")


class MinuteBudget:
    """At most ``per_minute`` sends in any ``window`` seconds (a sliding window of send times).

    With ``state_path`` the send times are also kept in a small file, so a restarted lgf (after a
    crash, or ``kill -9``) does not spend a minute's budget twice. Times are on the sink's clock
    (CLOCK_MONOTONIC in production: it keeps counting across process restarts; times from before
    a reboot are in its future and are ignored).
    """

    def __init__(self, per_minute: int, window: float, state_path: Path | None = None):
        self.per_minute, self.window = per_minute, window
        self.state_path = state_path
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()
        self._loaded = state_path is None

    def _expire(self, now: float) -> None:
        if not self._loaded:  # the first look at the clock decides which saved times still count
            self._loaded = True
            try:
                saved = json.loads(self.state_path.read_text())
                self._sent.extend(sorted(float(t) for t in saved if now - self.window < float(t) <= now))
            except (OSError, ValueError, TypeError):
                pass
        while self._sent and self._sent[0] <= now - self.window:
            self._sent.popleft()

    def remaining(self, now: float) -> int:
        with self._lock:
            self._expire(now)
            return max(0, self.per_minute - len(self._sent))

    def free_in(self, now: float) -> float:
        """Seconds until one more send is allowed (0 if now)."""
        with self._lock:
            self._expire(now)
            if len(self._sent) < self.per_minute:
                return 0.0
            return self._sent[-self.per_minute] + self.window - now

    def record(self, now: float) -> None:
        with self._lock:
            self._expire(now)
            self._sent.append(now)
            self._save()

    def exhaust(self, now: float) -> None:
        """WeCom said 45009: treat the whole budget as spent from now."""
        with self._lock:
            self._expire(now)
            self._sent.extend([now] * max(0, self.per_minute - len(self._sent)))
            self._save()

    def _save(self) -> None:
        if self.state_path is None:
            return
        try:  # a few hundred bytes, at most 20 times a minute
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(list(self._sent)[-self.per_minute:]))
            tmp.replace(self.state_path)
        except OSError as exc:
            log.warning("cannot save the WeCom send times to %s: %s", self.state_path, exc)


class RobotBudgets:
    """One :class:`MinuteBudget` per robot key in this host (two sinks on one key share it)."""

    def __init__(self) -> None:
        self._budgets: dict[str, MinuteBudget] = {}
        self._lock = threading.Lock()

    def budget_for(self, url: str, key: str, per_minute: int, window: float,
                   state_dir: str | os.PathLike | None = None) -> MinuteBudget:
        """The budget of the robot at ``url`` with ``key``; with ``state_dir``, its send times are
        kept in a file named by a digest of the key (the key itself stays secret)."""
        digest = hashlib.sha256(f"{url}\0{key}".encode()).hexdigest()
        with self._lock:
            if digest not in self._budgets:
                state = None
                if state_dir is not None:
                    Path(state_dir).mkdir(parents=True, exist_ok=True)
                    state = Path(state_dir) / f"wecom-{digest[:16]}.sent"
                self._budgets[digest] = MinuteBudget(per_minute, window, state)
            return self._budgets[digest]
