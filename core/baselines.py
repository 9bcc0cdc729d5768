"""Drift-aware baselines: what is normal for each (service, cause), so an alert says how far from it.

A fixed threshold pages forever for a service that always has a 60 ms GC pause, and never for one
whose stall rate triples while every stall stays under it. So lgf learns, per **series** (service,
cause), three numbers per wall-clock minute:

* ``rate``: stalls in the minute (stalls that crossed the BPF threshold, i.e. every event);
* ``p99``: the 99th percentile of their durations (minutes with stalls only);
* ``share``: their summed duration over the minute's 60 s, e.g. the STW share of wall time for
  ``gc_stw`` (goroutine-time for per-goroutine causes, so it can pass 1).

and keeps them for ``[baselines] window`` (7 days) in SQLite at ``<spool_dir>/baselines.db``
(WAL; one transaction per minute, so a crash or restart loses at most the minute in progress).
A minute in which lgf was watching and the series had no stall counts as rate 0 and share 0: the
store keeps the minutes lgf was running (``coverage``) apart from the minutes with stalls, so a
quiet minute is a zero and a minute lgf was down is missing, not a zero.

**Statistics: median and MAD, not mean and standard deviation.** μ is the median of the window's
minutes, σ is 1.4826 × the median absolute deviation (which equals the standard deviation for
normal data). Why: a baseline must not learn an incident. One bad hour of 100x stalls in a week
moves the mean by 60 % and inflates the standard deviation tenfold, so the next bad hour looks
normal; it moves the median and the MAD by about one rank in 10,080 (the breakdown point is 50 %:
the median moves only once incidents fill half the window). ``tests/test_baselines.py`` checks it.
σ has a floor, because a perfectly steady series has MAD 0 and would make any extra stall an
infinite z: for ``rate`` σ ≥ √μ and ≥ 1 (stall counts are roughly Poisson), for ``p99`` and
``share`` σ ≥ 10 % of μ (and ≥ 1 ms, ≥ 0.1 % of wall time).

**Grading.** ``z = (now - μ) / (σ × sigma_scale)`` with ``sigma_scale`` per environment (dev 1.5,
test 1.0, prod 0.8: a wider band where noise is expected, a narrower one where it costs), ``now``
being the last 60 s (the current minute plus the previous minute's remainder, weighted), and an
alert's z the largest of its series' three. With at least ``min_history`` of watched minutes the
series is **established**: an alert with ``z >= drift_z`` (2 by default, μ ± 2σ) is sent, at
least at ``drift_severity``, even if every stall was under the fixed threshold; one with a
smaller z is held back (``lgf_alerts_within_baseline_total``). A new series, or one with too
little history, is graded by the fixed thresholds as before, and its alert says so
(``baseline.status = "learning"``).

Cost: per stall, a dict look-up and an append to a bounded list; per alert, a p99 of the last
two minutes' kept durations (measured with bench/bench_baselines.py on a loaded 2-core VM: the
alert engine's time per stall went from 40 to 63 µs, 1.56x, with 150 series); per minute, one SQLite
transaction (one row per series that stalled) and one ``coverage`` row; per series at most every
``refresh``, one read of its window (≤ 10,080 rows) to recompute μ and σ. Disk: at most
``max_series`` × window minutes rows of about 35 bytes (256 series stalling every minute for 7
days: about 90 MB, measured by bench/bench_baselines.py; the least recently seen series is
dropped first), pruned hourly.
"""

from __future__ import annotations

import logging
import math
import random
import sqlite3
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .options import Duration

log = logging.getLogger("lgf.baselines")

STORE_FILE = "baselines.db"
MINUTE_S = 60
MAD_TO_SIGMA = 1.4826
"""Scale that makes the MAD estimate σ for normally distributed values."""
MAX_DURATIONS_PER_MINUTE = 512
"""Durations kept per series and minute for its p99 (reservoir-sampled past this)."""
METRICS = ("rate", "p99", "share")
MIN_P99_MINUTES = 10
"""Minutes with stalls needed before p99 is graded (a p99 of three minutes means little)."""


@dataclass
class BaselineOptions:
    """``[baselines]``: the drift-aware baselines."""

    enabled: bool = True
    window: Duration = Duration(7 * 24 * 3600 * 10**9)
    """How much history a baseline covers (sliding)."""
    min_history: Duration = Duration(24 * 3600 * 10**9)
    """Watched minutes a series needs before it is graded by its baseline; until then, by the
    fixed thresholds. A day, so that a daily rhythm is in the baseline before it judges."""
    refresh: Duration = Duration(5 * 60 * 10**9)
    """How often a series' μ and σ are recomputed from the store."""
    max_series: int = 256
    """(service, cause) pairs kept; past it, the least recently seen one is dropped."""

    def __post_init__(self):
        if self.window < 60 * 10**9:
            raise ValueError("window: must be at least 1m")
        if self.min_history > self.window:
            raise ValueError("min_history: must not be longer than window")
        if self.max_series < 1:
            raise ValueError("max_series: must be at least 1")


# --- robust statistics ------------------------------------------------------------------------------

def median_mad(values: list[float]) -> tuple[float, float]:
    """(median, 1.4826 × median absolute deviation): μ and σ that ignore a minority of outliers."""
    if not values:
        return 0.0, 0.0
    mu = statistics.median(values)
    return mu, MAD_TO_SIGMA * statistics.median(abs(v - mu) for v in values)


def sigma_floor(metric: str, mu: float) -> float:
    """The least σ a metric may have (see the module docstring)."""
    if metric == "rate":
        return max(1.0, math.sqrt(mu))
    if metric == "p99":
        return max(0.1 * mu, 1e6)  # ns
    return max(0.1 * mu, 0.001)


def p99_of(durations: list[int]) -> int:
    if not durations:
        return 0
    ordered = sorted(durations)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


# --- live minutes -----------------------------------------------------------------------------------

@dataclass
class Minute:
    """One series' stalls in one wall-clock minute."""

    minute: int
    count: int = 0
    total_ns: int = 0
    durations: list = field(default_factory=list)

    def add(self, duration_ns: int) -> None:
        self.count += 1
        self.total_ns += duration_ns
        if len(self.durations) < MAX_DURATIONS_PER_MINUTE:
            self.durations.append(duration_ns)
        else:  # reservoir sampling keeps the p99 estimate fair in a storm, at bounded memory
            j = random.randrange(self.count)
            if j < MAX_DURATIONS_PER_MINUTE:
                self.durations[j] = duration_ns


@dataclass
class Series:
    service: str
    cause: str
    sid: int
    cur: Minute
    prev: Minute | None = None
    baseline: dict | None = None
    """Cached μ/σ per metric and history, recomputed every ``refresh``."""
    computed_at: float = -1e18

    def roll(self, minute: int) -> list[Minute]:
        """Move to ``minute``; returns the finished minutes to write."""
        done = []
        if self.cur.minute != minute:
            if self.cur.count:
                done.append(self.cur)
            self.prev = self.cur if self.cur.minute == minute - 1 else None
            self.cur = Minute(minute)
        return done

    def now(self, now_s: float) -> dict:
        """The last 60 s: the current minute plus the previous one's remaining part, weighted."""
        minute = int(now_s // MINUTE_S)
        cur = self.cur if self.cur.minute == minute else Minute(minute)
        prev = self.prev if (self.prev and self.prev.minute == minute - 1) else (
            self.cur if self.cur.minute == minute - 1 else None)
        weight = 1.0 - (now_s - minute * MINUTE_S) / MINUTE_S
        rate, total = float(cur.count), float(cur.total_ns)
        durations = list(cur.durations)
        if prev is not None:
            rate += prev.count * weight
            total += prev.total_ns * weight
            durations += prev.durations
        return {"rate": rate, "p99": float(p99_of(durations)), "share": total / (MINUTE_S * 1e9),
                "p99_samples": len(durations)}


# --- the store --------------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS series (id INTEGER PRIMARY KEY, service TEXT NOT NULL, cause TEXT NOT NULL,
    first_minute INTEGER NOT NULL, last_minute INTEGER NOT NULL, UNIQUE (service, cause));
CREATE TABLE IF NOT EXISTS minutes (series INTEGER NOT NULL, minute INTEGER NOT NULL,
    count INTEGER NOT NULL, p99_ns INTEGER NOT NULL, total_ns INTEGER NOT NULL,
    PRIMARY KEY (series, minute)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS coverage (minute INTEGER PRIMARY KEY);
"""


class BaselineStore:
    """Per-series minute buckets on disk and the μ, σ, z computed from them. Thread-safe.

    ``clock`` returns wall-clock Unix seconds (``time.time``): minutes must mean the same thing
    after a reboot, which a monotonic clock does not. Tests inject their own.
    """

    def __init__(self, spool_dir: str | None, options: BaselineOptions | None = None,
                 clock=time.time, stats=None, readonly: bool = False):
        self.options = options or BaselineOptions()
        self.clock = clock
        self.stats = stats
        self.window_min = int(self.options.window // (MINUTE_S * 10**9))
        self.min_history_min = int(self.options.min_history // (MINUTE_S * 10**9))
        self.persist = True
        """False: keep the live minutes in memory only (``lgf replay`` must not teach the baselines)."""
        self._lock = threading.RLock()
        self._series: dict[tuple[str, str], Series] = {}
        self._minute: int | None = None
        self._last_prune = -1
        path = Path(spool_dir) / STORE_FILE if spool_dir else None
        self.path = path
        if readonly:  # `lgf baseline` beside a running lgf: WAL lets it read while lgf writes
            if path is None or not path.exists():
                raise FileNotFoundError(f"no baselines at {path} (has lgf run with this spool_dir?)")
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            self.persist = False
            return
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False,
                                  isolation_level=None)
        if path is not None:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # a power cut may lose the last minutes, never corrupt
        self.db.executescript(SCHEMA)

    # -- recording ---------------------------------------------------------------------------------

    def observe(self, service: str, cause: str, duration_ns: int, now_s: float | None = None) -> None:
        """Count one stall of ``service`` with ``cause`` into the current minute (nothing for a
        series a replay cannot grade: :meth:`ungradable`)."""
        if self.ungradable(service, cause):
            return
        now_s = self.clock() if now_s is None else now_s
        minute = int(now_s // MINUTE_S)
        with self._lock:
            self._advance(minute)
            series = self._series.get((service, cause)) or self._open(service, cause, minute)
            series.roll(minute)
            series.cur.add(duration_ns)

    def tick(self, now_s: float | None = None) -> None:
        """Note that lgf is watching at ``now_s``; writes finished minutes when a minute ends."""
        now_s = self.clock() if now_s is None else now_s
        with self._lock:
            self._advance(int(now_s // MINUTE_S))

    def _advance(self, minute: int) -> None:
        if minute == self._minute:
            return
        done: list[tuple[Series, Minute]] = []
        for series in self._series.values():
            done += [(series, m) for m in series.roll(minute)]
        self._write(done, minute)
        self._minute = minute

    def _write(self, done: list[tuple[Series, Minute]], minute: int) -> None:
        if not self.persist:
            return
        db = self.db
        db.execute("BEGIN")
        try:
            db.execute("INSERT OR IGNORE INTO coverage VALUES (?)", (minute,))
            for series, m in done:
                db.execute(
                    "INSERT INTO minutes VALUES (?, ?, ?, ?, ?) ON CONFLICT (series, minute) DO UPDATE SET "
                    "count = count + excluded.count, total_ns = total_ns + excluded.total_ns, "
                    "p99_ns = max(p99_ns, excluded.p99_ns)",
                    (series.sid, m.minute, m.count, p99_of(m.durations), m.total_ns))
                db.execute("UPDATE series SET last_minute = max(last_minute, ?) WHERE id = ?",
                           (m.minute, series.sid))
            if minute // 60 != self._last_prune:  # hourly
                self._prune(minute)
                self._last_prune = minute // 60
            db.execute("COMMIT")
        except sqlite3.Error as exc:  # a full disk must not stop alerting: log, count, carry on
            db.execute("ROLLBACK")
            if self.stats is not None:
                self.stats.inc("lgf_baseline_errors_total", what="write")
            log.error("baselines: cannot write %s: %s", self.path, exc)

    def _prune(self, minute: int) -> None:
        lo = minute - self.window_min
        for (sid,) in self.db.execute("SELECT id FROM series").fetchall():
            self.db.execute("DELETE FROM minutes WHERE series = ? AND minute < ?", (sid, lo))
        self.db.execute("DELETE FROM coverage WHERE minute < ?", (lo,))
        self.db.execute("DELETE FROM series WHERE last_minute < ?", (lo,))

    def _open(self, service: str, cause: str, minute: int) -> Series:
        row = self.db.execute("SELECT id FROM series WHERE service = ? AND cause = ?",
                              (service, cause)).fetchone()
        if row is None and not self.persist:  # replay: a series the store does not know stays unknown
            sid = -1
        elif row is None:
            (n,) = self.db.execute("SELECT count(*) FROM series").fetchone()
            if n >= self.options.max_series:
                self._evict_oldest()
            cur = self.db.execute("INSERT INTO series (service, cause, first_minute, last_minute) "
                                  "VALUES (?, ?, ?, ?)", (service, cause, minute, minute))
            sid = cur.lastrowid
        else:
            sid = row[0]
        series = self._series[(service, cause)] = Series(service, cause, sid, Minute(minute))
        return series

    def _evict_oldest(self) -> None:
        sid, service, cause = self.db.execute(
            "SELECT id, service, cause FROM series ORDER BY last_minute LIMIT 1").fetchone()
        self.db.execute("DELETE FROM minutes WHERE series = ?", (sid,))
        self.db.execute("DELETE FROM series WHERE id = ?", (sid,))
        self._series.pop((service, cause), None)
        if self.stats is not None:
            self.stats.inc("lgf_baseline_series_evicted_total")
        log.warning("baselines: more than max_series = %d series; dropped the least recently seen, %s/%s",
                    self.options.max_series, service, cause)

    def close(self) -> None:
        """Write the minute in progress (merged with the same minute after a restart) and close."""
        with self._lock:
            partial = [(s, s.cur) for s in self._series.values() if s.cur.count]
            if self._minute is not None:
                self._write(partial, self._minute)
                for s, _ in partial:
                    s.cur = Minute(s.cur.minute)
            self.db.close()

    # -- reading -----------------------------------------------------------------------------------

    def baseline(self, service: str, cause: str, now_s: float | None = None) -> dict | None:
        """μ and σ per metric for a series, and how much history they rest on; None if unknown."""
        now_s = self.clock() if now_s is None else now_s
        with self._lock:
            series = self._series.get((service, cause))
            refresh_s = self.options.refresh / 1e9
            # Cached for ``refresh`` even when there is none: a series the store does not know
            # (a replay's) must not cost a read per stall.
            if series is not None and now_s - series.computed_at < refresh_s:
                return series.baseline
            try:
                result = self._compute(service, cause, int(now_s // MINUTE_S))
            except sqlite3.Error as exc:  # a disk error must not stop alerting: grade as unknown, say why
                if self.stats is not None:
                    self.stats.inc("lgf_baseline_errors_total", what="read")
                log.error("baselines: cannot read %s: %s", self.path, exc)
                result = None
            if series is not None:
                series.baseline, series.computed_at = result, now_s
            return result

    def _compute(self, service: str, cause: str, minute: int) -> dict | None:
        row = self.db.execute("SELECT id, first_minute FROM series WHERE service = ? AND cause = ?",
                              (service, cause)).fetchone()
        if row is None:
            return None
        sid, first = row
        lo = max(minute - self.window_min, first)
        rows = self.db.execute("SELECT count, p99_ns, total_ns FROM minutes WHERE series = ? AND minute >= ? "
                               "AND minute < ?", (sid, lo, minute)).fetchall()
        (covered,) = self.db.execute("SELECT count(*) FROM coverage WHERE minute >= ? AND minute < ?",
                                     (lo, minute)).fetchone()
        covered = max(covered, len(rows))
        zeros = [0.0] * (covered - len(rows))
        out: dict = {"history_minutes": covered, "needed_minutes": self.min_history_min,
                     "established": covered >= self.min_history_min and covered > 0}
        values = {"rate": [float(r[0]) for r in rows] + zeros,
                  "share": [r[2] / (MINUTE_S * 1e9) for r in rows] + zeros,
                  "p99": [float(r[1]) for r in rows]}
        for metric in METRICS:
            vals = values[metric]
            if not vals or (metric == "p99" and len(vals) < MIN_P99_MINUTES):
                continue
            mu, sigma = median_mad(vals)
            floor = sigma_floor(metric, mu)
            if metric == "share" and "rate" in out:  # a share is no more certain than the count behind it
                rate = out["rate"]
                floor = max(floor, mu * rate["sigma"] / max(rate["mu"], 1.0))
            out[metric] = {"mu": mu, "sigma": max(sigma, floor)}
        return out

    def grade(self, service: str, cause: str, sigma_scale: float = 1.0,
              now_s: float | None = None) -> dict:
        """The series' baseline and how far the last 60 s are from it (the ``baseline`` of an alert).

        ``status``: "established" (graded by z), "learning" (too little history: fixed thresholds)
        or "unknown" (lgf has never seen this series).
        """
        now_s = self.clock() if now_s is None else now_s
        base = self.baseline(service, cause, now_s)
        with self._lock:
            series = self._series.get((service, cause))
            current = series.now(now_s) if series else self._last_minute(service, cause, now_s)
        if base is None:
            return {"status": "unknown", "reason": "no history for this service and cause: fixed thresholds"}
        out = {"status": "established" if base["established"] else "learning",
               "history_minutes": base["history_minutes"], "needed_minutes": base["needed_minutes"],
               "sigma_scale": sigma_scale, "metrics": {}}
        best = None
        for metric in METRICS:
            if metric not in base or (metric == "p99" and current["p99_samples"] == 0):
                continue
            mu, sigma = base[metric]["mu"], base[metric]["sigma"] * sigma_scale
            z = (current[metric] - mu) / sigma
            out["metrics"][metric] = {"mu": mu, "sigma": sigma, "now": current[metric], "z": round(z, 3)}
            if best is None or z > out["metrics"][best]["z"]:
                best = metric
        if best is not None:
            m = out["metrics"][best]
            out.update(metric=best, mu=m["mu"], sigma=m["sigma"], now=m["now"], z=m["z"])
        if not base["established"]:
            out["reason"] = (f"{base['history_minutes']} of {base['needed_minutes']} minutes of history: "
                             "fixed thresholds")
        return out

    def _last_minute(self, service: str, cause: str, now_s: float) -> dict:
        """For a reader without the live minutes (``lgf baseline``): the last whole watched minute.

        The newest covered minute is either in progress (lgf running: not written yet) or the one
        lgf stopped in (written, but partial), so the one before it is the last whole minute.
        """
        (last,) = self.db.execute("SELECT max(minute) FROM coverage").fetchone()
        out = {"rate": 0.0, "p99": 0.0, "share": 0.0, "p99_samples": 0}
        if last is None:
            return out
        last = min(last, int(now_s // MINUTE_S)) - 1
        row = self.db.execute("SELECT m.count, m.p99_ns, m.total_ns FROM minutes m JOIN series s ON s.id = m.series "
                              "WHERE s.service = ? AND s.cause = ? AND m.minute = ?",
                              (service, cause, last)).fetchone()
        if row:
            out = {"rate": float(row[0]), "p99": float(row[1]), "share": row[2] / (MINUTE_S * 1e9),
                   "p99_samples": row[0]}
        return out

    def is_established(self, service: str, cause: str, now_s: float | None = None) -> bool:
        """Whether stalls under the fixed threshold should still be grouped for this series."""
        if self.ungradable(service, cause):
            return False
        base = self.baseline(service, cause, now_s)
        return bool(base and base["established"])

    def observe_established(self, service: str, cause: str, duration_ns: int, now_s: float | None = None) -> bool:
        """:meth:`observe`, then :meth:`is_established`: what the alert policy asks of every stall."""
        if self.ungradable(service, cause):
            return False
        self.observe(service, cause, duration_ns, now_s)
        return self.is_established(service, cause, now_s)

    def ungradable(self, service: str, cause: str) -> bool:
        """A series a replay (``persist`` off) opened that the store has no row for: nothing is
        written during a replay, so it stays unknown and every grade of it says "unknown" (fixed
        thresholds) whatever it counts. Its stalls cost a dict look-up, not the minute's
        bookkeeping."""
        series = self._series.get((service, cause))
        return series is not None and series.sid < 0

    def live_series(self) -> list[tuple[str, str]]:
        """The series this process has seen since it started (at most ``max_series``)."""
        with self._lock:
            return sorted(self._series)

    def list_series(self) -> list[tuple[str, str]]:
        with self._lock:
            return [tuple(r) for r in self.db.execute("SELECT service, cause FROM series ORDER BY service, cause")]
