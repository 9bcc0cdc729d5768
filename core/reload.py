"""Reload: SIGHUP (or ``lgf reload``) re-reads plugins.toml into the running lgf, keeping what did
not change.

What happens, in the host's own loop (between two events, so the pipeline never sees half a
config):

1. The file is read and validated exactly as ``lgf check`` does. Any problem: the reload is
   refused, every problem is logged in ``lgf check``'s words, and the running config stays.
   Changes that need a restart are refused the same way: ``[lgf] spool_dir`` (the durable queues
   and silences live there) and ``[lgf] plugins`` (plugin modules are loaded once).
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
from .errors import ConfigErrors

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


def _write_status(spool_dir: str, outcome: ReloadOutcome) -> None:
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


def _by_name(config: cfg.Config, kind: str) -> dict[str, tuple[cfg.ComponentConfig, object]]:
    return {cc.name: (cc, _table(config, cc)) for cc in config.of_kind(kind)}


def _refusals(old: cfg.Config, new: cfg.Config) -> list[str]:
    out = []
    if new.host.spool_dir != old.host.spool_dir:
        out.append(f"lgf.spool_dir: changed ({old.host.spool_dir} -> {new.host.spool_dir}); the durable "
                   "queues and silences live there: restart lgf to move it")
    if list(new.host.plugins) != list(old.host.plugins):
        out.append("lgf.plugins: changed; plugin modules are loaded once: restart lgf to load others")
    return out


# --- applying -----------------------------------------------------------------------------

def reload(host) -> ReloadOutcome:
    """Re-read ``host.config_path`` and apply it (see the module docstring). Never raises."""
    from .run import load

    old = host.config
    path = getattr(host, "config_path", None)
    if not path:
        outcome = ReloadOutcome(False, errors=["this lgf was not started from a config file"])
    else:
        try:
            _, new = load(path, overrides=getattr(host, "overrides", ()))
        except ConfigErrors as exc:
            outcome = ReloadOutcome(False, errors=[str(e) for e in exc.errors])
        else:
            refused = _refusals(old, new)
            outcome = ReloadOutcome(False, errors=refused) if refused else _apply(host, old, new)
    if outcome.ok:
        log.info("reload: applied %s: kept %s; swapped %s%s", path, ", ".join(outcome.kept) or "nothing",
                 ", ".join(outcome.swapped) or "nothing",
                 "".join(f"; {n}" for n in outcome.notes))
    else:
        log.error("reload refused; the running config stays. %d problem(s) in the config:", len(outcome.errors))
        for err in outcome.errors:
            log.error("  %s", err)
    host.stats.inc("lgf_reloads_total", result="applied" if outcome.ok else "refused")
    _write_status(old.host.spool_dir, outcome)
    return outcome


def _apply(host, old: cfg.Config, new: cfg.Config) -> ReloadOutcome:
    outcome = ReloadOutcome(True)
    host.config = new
    _apply_sinks(host, old, new, outcome)
    _apply_plugins(host, old, new, outcome)
    retune_engine(host.engine, new)
    _apply_sources(host, old, new, outcome)
    # The endpoints' roles and approvals come from [http] and [environments] (lgf.http's guard).
    if any(new.raw.get(k) != old.raw.get(k) for k in ("http", "environments")):
        if host.http is not None:
            host.http.stop()
            host.http = None
        host._start_http()
        outcome.swapped.append("http")
    level = new.host.log_level.upper()
    if new.host.log_level != old.host.log_level and hasattr(logging, level):
        logging.getLogger().setLevel(getattr(logging, level))
    return outcome


def _apply_sinks(host, old, new, outcome) -> None:
    from .pipeline import SinkRoute

    before = _by_name(old, "sink")
    after = _by_name(new, "sink")
    routes = {r.name: r for r in host.routes}
    fresh = []
    for name, (cc, table) in after.items():
        if name in before and before[name][1] == table and name in routes:
            fresh.append(routes.pop(name))
            outcome.kept.append(f"sink {name}")
            continue
        if name in routes:  # changed: stop the old one first, so its queue is free for the new
            _close_route(routes.pop(name))
        sink = cc.component.factory(cc.options, host._ctx(cc.name))
        fresh.append(SinkRoute(cc.name, sink, cc.receive, cc.min_severity, delivery=host._delivery_for(cc, sink)))
        outcome.swapped.append(f"sink {name}")
    for name, route in routes.items():  # removed
        _close_route(route)
        outcome.swapped.append(f"sink {name} (removed)")
    host.routes[:] = fresh  # the pipeline holds this very list


def _close_route(route) -> None:
    try:
        if route.delivery is not None:
            route.delivery.stop(timeout=5.0)
        for method in ("flush", "close"):
            if hasattr(route.sink, method):
                getattr(route.sink, method)()
    except Exception as exc:  # a sink failing to close must not stop the reload
        log.error("reload: sink %r failed to close: %s", route.name, exc)


def _apply_plugins(host, old, new, outcome) -> None:
    """Enrichers and classifiers: a kind whose tables changed is registered again in file order
    (pluggy calls the last registered first), reusing the objects of unchanged tables."""
    pm = host.manager.pm
    for kind in ("enricher", "classifier"):
        before, after = _by_name(old, kind), _by_name(new, kind)
        same = [(n, t) for n, (_, t) in before.items()] == [(n, t) for n, (_, t) in after.items()]
        if same:
            outcome.kept += [f"{kind} {n}" for n in after]
            continue
        objects = {}
        for name in before:
            obj = pm.get_plugin(name)
            if obj is not None:
                pm.unregister(name=name)
                host.manager.infos.pop(name, None)
                objects[name] = obj
        for name, (cc, table) in reversed(list(after.items())):
            if name in before and before[name][1] == table and name in objects:
                obj = objects[name]
                outcome.kept.append(f"{kind} {name}")
            else:
                obj = cc.component.factory(cc.options, host._ctx(cc.name))
                outcome.swapped.append(f"{kind} {name}")
            host.manager.register(obj, cc.name, "config")
        outcome.swapped += [f"{kind} {n} (removed)" for n in before if n not in after]


def _apply_sources(host, old, new, outcome) -> None:
    lower = new.host.threshold < old.host.threshold
    targets_changed = new.raw.get("targets") != old.raw.get("targets")
    before, after = _by_name(old, "source"), _by_name(new, "source")
    old_objects = dict(zip([cc.name for cc in old.of_kind("source")], host.sources, strict=False))
    fresh = []
    for name, (cc, table) in after.items():
        obj = old_objects.pop(name, None)
        if obj is not None and before[name][1] == table and not lower and not targets_changed:
            fresh.append(obj)
            outcome.kept.append(f"source {name}")
            continue
        if obj is not None:
            _stop_source(obj, name)
        src = cc.component.factory(cc.options, host._ctx(cc.name))
        fresh.append(src)
        outcome.swapped.append(f"source {name}")
    for name, obj in old_objects.items():
        _stop_source(obj, name)
        outcome.swapped.append(f"source {name} (removed)")
    started = [s for s in fresh if s not in host.sources]
    host.sources[:] = fresh  # the HTTP server and every RunContext hold this very list
    for src in started:
        try:
            src.start(host.emit)
        except Exception as exc:  # one broken source must not stop the others
            host.stats.inc("lgf_source_errors_total", source=type(src).__name__)
            log.error("reload: source %s failed to start: %s: %s", type(src).__name__, type(exc).__name__, exc)
    # Kept sources may still filter in BPF at an older, lower threshold: the host drops what is
    # now under the threshold in force (the sources' own stalls are never under it).
    host.floor_ns = int(new.host.threshold)
    if new.host.threshold > old.host.threshold and any(s not in started for s in fresh):
        outcome.notes.append(f"threshold raised to {new.host.threshold / 1e6:.1f} ms: applied to the kept "
                             "sources' stalls before the pipeline (their probes stay attached)")
    if lower:
        outcome.notes.append("threshold lowered: the sources were swapped (it is compiled into their BPF)")
    if targets_changed:
        outcome.notes.append("[targets] changed: the sources were swapped")


def _stop_source(src, name: str) -> None:
    try:
        src.stop()
    except Exception as exc:  # keep going: the new config must still be applied
        log.error("reload: source %s failed to stop cleanly: %s", name, exc)


def retune_engine(engine, config: cfg.Config) -> None:
    """Give the running alert policy the new config's settings, keeping its state (open groups,
    windows, recent alerts, run-time silences, learnt baselines). Mirrors the settings part of
    ``AlertEngine.__init__`` (tests/test_reload.py checks they agree)."""
    import re

    from .alerts import AlertsOptions, EnvironmentsOptions
    from .silences import SilencesOptions, SilenceStore

    if engine is None:
        return
    sections = config.sections
    options = sections.get("alerts") or AlertsOptions()
    envs = sections.get("environments") or EnvironmentsOptions()
    env = config.host.env
    if env not in envs.policies:
        log.warning("[lgf] env = %r names no environment: using prod's thresholds", env)
    policy = envs.policy(env)
    rules = (sections.get("silences") or SilencesOptions()).rules
    config_silences = SilenceStore(None, rules)
    with engine._lock:
        engine.env = env
        engine.options = options
        engine.policy = policy
        drift = getattr(engine, "drift", None)
        if drift is not None:  # the baselines keep what they learnt; they grade by the new policy
            drift.policy = policy
        engine.threshold_ns = policy.threshold or config.host.threshold
        engine.report_interval_ns = config.host.report_interval
        engine.tags = dict(options.tags)
        engine.topology = {"host": engine.topology.get("host", ""), **options.topology}
        engine._services = [(name, re.compile(str(rx))) for name, rx in options.services.items()]
        engine._service_cache = {}
        engine.windows.window_ns = config.host.window
        store = engine.silences
        with store._lock:
            for sid in [sid for sid, s in store._silences.items() if s.origin == "config"]:
                del store._silences[sid]
            store._silences.update(config_silences._silences)
