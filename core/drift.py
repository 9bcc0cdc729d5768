"""The alert engine's use of baselines (``lgf.baselines``): feed them, and grade each alert by them.

Three calls from ``AlertEngine``:

* ``observe(service, event) -> bool``: count the stall into its series; True when the series is
  established, so the engine groups it even under the fixed threshold (a tripled rate of small
  stalls must still be able to alert);
* ``tick()``: once per ``due``; writes finished minutes and notes that lgf is watching;
* ``judge(alert, group_service, worst_ns, threshold_ns) -> bool``: put the series' ``baseline``
  (μ, σ, z ...) on the alert, raise its severity to ``drift_severity`` when ``z >= drift_z``, and
  say whether to hold it back: an established series with z under ``drift_z`` is normal for that
  service; a learning one is graded by the fixed thresholds, as before baselines existed.

Baselines are off when ``[baselines] enabled = false`` or the environment's ``drift_z = 0``; then
every call is a no-op and alerts are graded by fixed thresholds only.

``lgf replay`` calls ``replay_mode()``: a recording is graded by the baselines in its own time
(each stall's ``ts``), and teaches them nothing. Otherwise replaying an incident file beside a
running lgf would write its burst into the production baseline as if it happened now.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import time
from datetime import UTC, datetime

from .baselines import BaselineOptions, BaselineStore
from .event import SEVERITIES

RANK = {s: i for i, s in enumerate(SEVERITIES)}
MAX_UNREAD = 4096
"""Stamps a replay keeps unread at most (``Drift._unread``) before reading the last one."""
log = logging.getLogger("lgf.drift")


class Drift:
    def __init__(self, config, policy, stats, wall_clock=time.time):
        sections = getattr(config, "sections", {}) or {}
        options = sections.get("baselines") or BaselineOptions()
        self.policy = policy
        self.store = None
        self.event_time: float | None = None
        """In replay mode, the ``ts`` of the last stall seen (Unix seconds); None when live.
        Read it after :meth:`_read_stamps`."""
        self._unread: list[str] = []
        """Replay: the ``ts`` of the stalls seen since ``event_time`` was last brought up to date,
        read only when a time is needed (most stalls of a replay are of series no baseline grades)."""
        if options.enabled and policy.drift_z > 0:
            try:
                self.store = BaselineStore(config.host.spool_dir, options, clock=wall_clock, stats=stats)
            except (OSError, sqlite3.Error) as exc:  # alerting goes on by the fixed thresholds
                stats.inc("lgf_baseline_errors_total", what="open")
                log.error("baselines: cannot open them under %s: %s; alerts use the fixed thresholds only",
                          config.host.spool_dir, exc)

    def replay_mode(self) -> None:
        """Grade in the recording's time, never write to the store (``lgf replay``)."""
        if self.store is not None:
            self.store.persist = False
            self.event_time = 0.0

    def observe(self, service: str, event) -> bool:
        if self.store is None:
            return False
        if self.event_time is None:  # live: the store's own clock
            return self.store.observe_established(service, event.cause, event.duration_ns)
        if self.store.ungradable(service, event.cause):  # nothing to count: only its time matters
            self._unread.append(event.ts)
            if len(self._unread) >= MAX_UNREAD:
                self._read_stamps()
            return False
        self._read_stamps()
        at = self.event_time = _unix(event.ts) or self.event_time or None
        return self.store.observe_established(service, event.cause, event.duration_ns, now_s=at)

    def established(self, service: str, cause: str) -> bool:
        """Whether the series has a baseline that groups stalls under the threshold too (what
        :meth:`observe` answers, without counting a stall in)."""
        if self.store is None:
            return False
        if self.event_time is not None:
            self._read_stamps()
        return self.store.is_established(service, cause, now_s=self.event_time or None)

    def _read_stamps(self) -> None:
        """``event_time`` as if every stall's ``ts`` had been read as it came: the last one that
        reads as a time (an empty or unreadable one leaves the time before it; the first stall of
        a replay without one ends replay timing, as :meth:`observe` always had it)."""
        unread = self._unread
        if unread and self.event_time == 0.0 and not _unix(unread[0]):
            self.event_time = None
        else:
            for ts in reversed(unread):
                at = _unix(ts)
                if at:
                    self.event_time = at
                    break
        unread.clear()

    def tick(self) -> None:
        if self.store is not None and self.event_time is None:
            self.store.tick()

    def judge(self, alert, service: str, worst_ns: int, threshold_ns: int) -> bool:
        """Label ``alert`` with its baseline; True if it is to be held back."""
        if self.store is None:
            return False
        if self.event_time is not None:
            self._read_stamps()
        grade = self.store.grade(service, alert.cause, self.policy.sigma_scale, now_s=self.event_time or None)
        grade["k"] = self.policy.drift_z
        alert.extra["baseline"] = grade
        if grade["status"] != "established" or "z" not in grade:
            return worst_ns < threshold_ns  # fixed thresholds; only stalls over them alert
        if grade["z"] < self.policy.drift_z:
            return True
        if RANK.get(self.policy.drift_severity, 0) > RANK.get(alert.severity, 0):
            alert.severity = self.policy.drift_severity
        grade["reason"] = (f"{grade['metric']} {_fmt(grade['metric'], grade['now'])} vs baseline "
                           f"{_fmt(grade['metric'], grade['mu'])} ± {_fmt(grade['metric'], grade['sigma'])}: "
                           f"z = {grade['z']:.1f} >= {self.policy.drift_z:g}")
        alert.extra["summary"] = f"{alert.extra.get('summary', '')}; {grade['reason']}".lstrip("; ")
        return False

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def _unix(ts: str) -> float:
    """RFC 3339 -> Unix seconds (microseconds kept: Python reads at most six digits); 0.0 if none."""
    if not ts:
        return 0.0
    if len(ts) == 30 and ts[19] == "." and ts[29] == "Z" and ts[20:26].isdigit():
        # the form lgf writes (YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ, lgf.event.wallclock_of): no splitting
        try:
            return _unix_second(ts[:19]) + int(ts[20:26]) / 1e6
        except ValueError:
            return 0.0
    head, dot, frac = ts.rstrip("Z").partition(".")
    try:
        micros = int(frac[:6].ljust(6, "0")) if dot else 0
        return _unix_second(head) + micros / 1e6
    except ValueError:
        return 0.0


@functools.lru_cache(maxsize=64)
def _unix_second(head: str) -> float:
    """``YYYY-MM-DDTHH:MM:SS`` -> Unix seconds: a replayed burst's stalls share a few seconds."""
    return datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp()


def _fmt(metric: str, value: float) -> str:
    if metric == "rate":
        return f"{value:.1f}/min"
    if metric == "p99":
        return f"{value / 1e6:.1f} ms"
    return f"{value * 100:.2f} %"


def metric_families(engine):
    """``/metrics``: μ, σ (scaled), z and history of every live series, from the engine's baselines.

    Units: rate in stalls per minute, p99 in seconds, share as a fraction of wall time.
    Cost per scrape: one ``grade`` per live series (μ and σ come from the cache, refreshed at most
    every ``[baselines] refresh``).
    """
    from prometheus_client.core import Metric

    drift = getattr(engine, "drift", None)
    if drift is None or drift.store is None:
        return
    fams = {name: Metric(name, text, "gauge") for name, text in (
        ("lgf_baseline_mu", "Baseline median of a series (rate: stalls/min, p99: seconds, share: of wall time)"),
        ("lgf_baseline_sigma", "Baseline spread (1.4826 MAD, floored, times the environment's sigma_scale)"),
        ("lgf_baseline_now", "The last 60 s of a series, in the unit of lgf_baseline_mu"),
        ("lgf_baseline_zscore", "How far the last 60 s are from the baseline, in sigmas"),
        ("lgf_baseline_history_minutes", "Watched minutes behind a series' baseline"),
        ("lgf_baseline_established", "1 when a series is graded by its baseline, 0 while it is learning"))}
    for service, cause in drift.store.live_series():
        grade = drift.store.grade(service, cause, drift.policy.sigma_scale)
        labels = {"service": service, "cause": cause}
        fams["lgf_baseline_history_minutes"].add_sample("lgf_baseline_history_minutes", labels,
                                                        grade.get("history_minutes", 0))
        fams["lgf_baseline_established"].add_sample("lgf_baseline_established", labels,
                                                    1 if grade["status"] == "established" else 0)
        for metric, m in grade.get("metrics", {}).items():
            unit = 1e-9 if metric == "p99" else 1.0
            for name, key, scale in (("lgf_baseline_mu", "mu", unit), ("lgf_baseline_sigma", "sigma", unit),
                                     ("lgf_baseline_now", "now", unit), ("lgf_baseline_zscore", "z", 1.0)):
                fams[name].add_sample(name, {**labels, "metric": metric}, m[key] * scale)
    yield from fams.values()
