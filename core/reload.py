"""Reload: SIGHUP (or ``lgf reload``) re-reads plugins.toml into the running lgf, keeping what did
not change.

``lgf.run.Host.reload`` does it, on its own state; this module holds what it decides with (how
tables are matched and compared, what is refused) and the files ``lgf reload`` talks through.
The alert policy takes its new settings itself (``AlertEngine.retune``).

What happens, in the host's own loop (between two events, so the pipeline never sees half a
config):

1. The file is read and validated exactly as ``lgf check`` does. Any problem: the reload is
   refused, every problem is logged in ``lgf check``'s words, and the running config stays.
   Changes that need a restart are refused the same way: ``[lgf] spool_dir`` (the durable queues
   and silences live there), ``[lgf] plugins`` (plugin modules are loaded once) and
   ``[kubernetes]`` (the pod watch is set up at start).
2. Each component table is matched to the running one by kind and name (``name``, else ``use``
   with its position) and compared as written. An unchanged one keeps running as it is: a source
   keeps its probes attached and its armed goroutine tiers armed, a sink its queue, an enricher
   its caches. A changed, added or removed one is swapped: the old one is stopped (a source
   detaches its probes, a sink's queue stays on disk and the new sink of that name delivers it),
   the new one built and started.
3. Sources also depend on ``[targets]`` and ``[lgf] threshold`` (compiled into their BPF
   programs as a constant). A new ``[targets]`` or a *lower* threshold swaps every source; a
   *higher* threshold keeps them and drops the stalls under it before the pipeline (counted in
   ``lgf_events_below_threshold_total``), so no probe is detached for it.
4. The alert policy keeps its open alert groups, stall windows, recent alerts and run-time
   silences; its settings (``[alerts]``, ``[environments]``, ``[lgf] env/window/report_interval/
   threshold``, ``[silences]`` rules) are replaced. A group opened under the old grouping closes
   and alerts as it would have.
5. ``[http]`` changed: the endpoints are restarted on the new address.

``lgf reload CONFIG`` finds the running lgf through ``<spool_dir>/lgf.pid`` (written at start,
removed at stop), checks the file first (printing ``lgf check``'s messages and not signalling
when it is invalid), sends SIGHUP and prints the outcome lgf writes to ``<spool_dir>/reload.json``.

Cost: a reload validates the file and compares tables (milliseconds); only swapped components
pay their own start-up (a source compiles and attaches its BPF programs again).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import config as cfg

log = logging.getLogger("lgf.reload")

PID_FILE = "lgf.pid"
STATUS_FILE = "reload.json"
KINDS = ("source", "enricher", "classifier", "sink")


@dataclass
class ReloadOutcome:
    ok: bool
    kept: list[str] = field(default_factory=list)
    swapped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "kept": self.kept, "swapped": self.swapped, "errors": self.errors,
                "notes": self.notes}


# --- pid and status files -----------------------------------------------------------------

def pid_path(spool_dir: str) -> Path:
    return Path(spool_dir) / PID_FILE


def status_path(spool_dir: str) -> Path:
    return Path(spool_dir) / STATUS_FILE


def write_pid(spool_dir: str) -> None:
    """Say where this lgf is, for ``lgf reload``; a spool that cannot be written is only logged."""
    try:
        Path(spool_dir).mkdir(parents=True, exist_ok=True)
        pid_path(spool_dir).write_text(f"{os.getpid()}\n")
    except OSError as exc:
        log.warning("cannot write %s (lgf reload will not find this lgf; kill -HUP %d works): %s",
                    pid_path(spool_dir), os.getpid(), exc.strerror)


def remove_pid(spool_dir: str) -> None:
    try:
        if pid_path(spool_dir).read_text().strip() == str(os.getpid()):
            pid_path(spool_dir).unlink()
    except OSError:
        pass


def write_status(spool_dir: str, outcome: ReloadOutcome) -> None:
    try:
        Path(spool_dir).mkdir(parents=True, exist_ok=True)
        tmp = status_path(spool_dir).with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "at": time.time(), **outcome.to_dict()}))
        os.replace(tmp, status_path(spool_dir))
    except OSError:
        pass


# --- comparing configs --------------------------------------------------------------------

def _table(config: cfg.Config, cc: cfg.ComponentConfig):
    """The component's table as written (its ``path`` is e.g. ``sinks[1]``)."""
    key, _, index = cc.path.partition("[")
    return config.raw.get(key, [])[int(index.rstrip("]"))]


def tables_by_name(config: cfg.Config, kind: str) -> dict[str, tuple[cfg.ComponentConfig, object]]:
    """``{name: (component config, its table as written)}`` of one kind, in file order."""
    return {cc.name: (cc, _table(config, cc)) for cc in config.of_kind(kind)}


def same_tables(before: dict, after: dict) -> bool:
    """Whether two :func:`tables_by_name` results name the same tables, as written, in one order."""
    return [(n, t) for n, (_, t) in before.items()] == [(n, t) for n, (_, t) in after.items()]


def refusals(old: cfg.Config, new: cfg.Config) -> list[str]:
    """Why ``new`` cannot be applied to a running ``old`` without a restart ([] if it can)."""
    out = []
    if new.host.spool_dir != old.host.spool_dir:
        out.append(f"lgf.spool_dir: changed ({old.host.spool_dir} -> {new.host.spool_dir}); the durable "
                   "queues and silences live there: restart lgf to move it")
    if list(new.host.plugins) != list(old.host.plugins):
        out.append("lgf.plugins: changed; plugin modules are loaded once: restart lgf to load others")
    if new.raw.get("kubernetes") != old.raw.get("kubernetes"):
        # Read once, when the pod watch starts (lgf.services): refused aloud rather than ignored.
        out.append("kubernetes: changed; the pod watch is set up at start: restart lgf to apply it")
    return out


# --- saying what happened ------------------------------------------------------------------

def report(outcome: ReloadOutcome, path: str | None, stats, spool_dir: str) -> None:
    """Log the outcome, count it in ``lgf_reloads_total{result}`` and write it for ``lgf reload``."""
    if outcome.ok:
        log.info("reload: applied %s: kept %s; swapped %s%s", path, ", ".join(outcome.kept) or "nothing",
                 ", ".join(outcome.swapped) or "nothing",
                 "".join(f"; {n}" for n in outcome.notes))
    else:
        log.error("reload refused; the running config stays. %d problem(s) in the config:", len(outcome.errors))
        for err in outcome.errors:
            log.error("  %s", err)
    stats.inc("lgf_reloads_total", result="applied" if outcome.ok else "refused")
    write_status(spool_dir, outcome)
