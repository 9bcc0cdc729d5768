"""The host: turn a validated config into running components, and run them live or on a recording.

``Host`` owns the order of things. Start: plugins are loaded, the config is validated (nothing
starts if it is not), sinks and their queues come up before sources, ``lgf_configure`` fires,
then sources attach. Stop (SIGINT/SIGTERM): sources detach first, so no probe outlives lgf; the
event queue drains; pending alerts are flushed; sinks flush and close; ``lgf_unconfigure`` fires.
"""

from __future__ import annotations

import itertools
import logging
import queue
import signal
import threading
import time
from collections.abc import Iterable, Iterator

from . import config as cfg
from . import journal, reload, sinkqueues
from .alerts import AlertEngine
from .components import member, missing
from .context import RunContext
from .delivery import Delivery
from .errors import ConfigError, ConfigErrors
from .event import Event
from .idle import options_of
from .loading import load
from .manager import Manager
from .pipeline import Pipeline, SinkRoute
from .relay import Relay
from .reload import ReloadOutcome
from .services import Services
from .stats import Stats
from .ui import StallHistory

log = logging.getLogger("lgf")

EVENT_QUEUE_SIZE = 65536
"""Events waiting between sources and the pipeline; past this they are counted as dropped."""
TICK_SECONDS = 0.1
"""How often the host asks the alert policy for due alerts (at most, however many events arrive)."""
BATCH_EVENTS = 256
"""Events the host takes from its queue at most in one go: the pipeline processes them as one
batch, the alert journal committing their stalls in one transaction (``lgf.journal``). A
``kill -9`` loses at most the batch in hand, besides what still waits in the queue."""


class Host:
    """One running lgf: its config, plugin manager, components, pipeline, alert policy, journal
    and services. Everything it makes is its own: two hosts in one process share nothing.

    ``config_path`` (the file a reload re-reads) and ``overrides`` (the command line's, applied
    again on each reload) are None and () for a host built from a config in memory (tests)."""

    def __init__(self, manager: Manager, config: cfg.Config, stats: Stats | None = None,
                 config_path: str | None = None, overrides=()):
        self.manager = manager
        self.config = config
        self.stats = stats or manager.stats
        manager.stats = self.stats  # the manager counts per-plugin hook errors here
        self.sources: list = []
        self.routes: list[SinkRoute] = []
        self.events: queue.Queue[Event] = queue.Queue(EVENT_QUEUE_SIZE)
        self.stopping = threading.Event()
        self.engine: AlertEngine | None = None
        self.journal: journal.AlertJournal | None = None
        """Open alert groups' stalls on disk (``lgf.journal``), opened by :meth:`run`."""
        self.http = None
        """The ``[http]`` server (``lgf.http.HttpServer``) once started."""
        self.relay: Relay | None = None
        """Takes Alertmanager's notifications for the alert sinks (``lgf.relay``), made with the HTTP server."""
        self.pipeline: Pipeline | None = None
        self.services = Services.for_config(config)
        """What this host shares among its plugins, handed over as ``ctx.services``."""
        self.history = StallHistory()
        """Recent stalls for the latency page (/ui), kept from the time the HTTP server starts."""
        self.config_path = config_path
        """The file SIGHUP re-reads (:meth:`reload`)."""
        self.overrides = tuple(overrides)
        """The command line's overrides: a reload applies them again over the file."""
        self.reload_requested = threading.Event()
        self.floor_ns = 0
        """Stalls shorter than this are dropped at emit: set by a reload that raised the threshold
        while sources compiled with the old one kept running."""

    # -- building --------------------------------------------------------------------------

    def _ctx(self, name: str) -> RunContext:
        return RunContext(config=self.config, stats=self.stats, name=name,
                          log=logging.getLogger(f"lgf.{name}"), sources=self.sources,
                          services=self.services)

    def _make(self, cc: cfg.ComponentConfig):
        """The instance a table makes, refused (ConfigErrors, naming the table) when it lacks a
        member its kind requires (``lgf.components.missing``): at start, not at its first event."""
        obj = cc.component.factory(cc.options, self._ctx(cc.name))
        lacking = missing(cc.kind, obj)
        if lacking:
            if cc.kind == "sink" and (close := member(obj, "sink", "close")) is not None:
                close()
            raise ConfigErrors([ConfigError(f"{cc.path}.use", f"{cc.kind} {cc.use!r} ({cc.name}) lacks "
                                            + ", ".join(lacking), "see lgf.components")])
        return obj

    def _register(self, cc: cfg.ComponentConfig, obj) -> None:
        """Register an enricher or classifier instance under its table's name; a name a plugin
        already has is refused (pluggy would keep the first and drop this one without a word)."""
        if not self.manager.register(obj, cc.name, "config"):
            raise ConfigErrors([ConfigError(f"{cc.path}.name", f"{cc.name!r} is already the name of a "
                                            "registered plugin", "give the table another name")])

    def build(self, with_sources: bool = True) -> None:
        """Make every configured component. A component that fails to start, or lacks a member
        its kind requires, is an error here."""
        queue_problems = sinkqueues.check(self.config)  # a queue of another sink: refuse, before anything runs
        if queue_problems:
            raise ConfigErrors(queue_problems)
        try:
            self._build(with_sources)
        except ConfigErrors:  # refused at start: nothing made so far keeps running
            for route in self.routes:
                _close_route(route)
            self.routes.clear()
            raise

    def _build(self, with_sources: bool) -> None:
        for cc in self.config.of_kind("sink"):
            sink = self._make(cc)
            self.routes.append(SinkRoute(cc.name, sink, cc.receive, cc.min_severity,
                                         delivery=self._delivery_for(cc, sink)))
        # Always-on components (the scope step): one per host, registered first so they are called
        # after the configured ones (pluggy is LIFO), as the built-in modules were. Named after the
        # plugin that provides them ("lgf.plugins.scope:scope"), a name no table takes by chance.
        for plugin, comp in self.manager.always():
            self.manager.register(comp.factory(None, self._ctx(comp.use)), f"{plugin}:{comp.use}",
                                  "built-in (per host)")
        for kind in ("enricher", "classifier"):
            # Registered in reverse so the first table in the file is called first (pluggy is LIFO).
            for cc in reversed(self.config.of_kind(kind)):
                self._register(cc, self._make(cc))
        self.engine = AlertEngine(self.config, self.stats)
        self.engine.keep_windows = False  # until an HTTP server can show them (_start_http)
        self.pipeline = Pipeline(self.manager.pm.hook, self.stats, self.routes, self.engine,
                                 report_idle=options_of(self.config).report_idle,
                                 identities=self.services.identities if with_sources else None)
        if with_sources:  # /metrics names a process's series as its alerts do (lgf.identity)
            self.engine.identities = self.services.identities
            self.services.watch_pods()
        self.manager.pm.hook.lgf_configure.call_historic(kwargs={"config": self.config})
        if with_sources:
            for cc in self.config.of_kind("source"):
                self.sources.append(self._make(cc))

    def _delivery_for(self, cc: cfg.ComponentConfig, sink):
        """Each sink behind its own durable queue, unless it is its own record (stdout, file)."""
        if not member(sink, "sink", "durable"):
            return None
        d = Delivery(sink, cc.name, self.config.host.spool_dir, self.stats, limit=cc.queue_limit, use=cc.use)
        d.start()
        return d

    # -- running ---------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """What sources call, from any thread. Never blocks a source's poll loop."""
        if event.duration_ns < self.floor_ns and event.kind == "stall":
            self.stats.inc("lgf_events_below_threshold_total")
            return
        try:
            self.events.put_nowait(event)
        except queue.Full:
            self.stats.inc("lgf_events_dropped_total", reason="queue_full")

    def run(self) -> int:
        """Run until SIGINT/SIGTERM. Returns the exit code."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stopping.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload_requested.set())
        reload.write_pid(self.config.host.spool_dir)
        self._start_http()
        self.journal = journal.attach(self.engine, self.pipeline, self.config.host.spool_dir, self.stats)
        started = 0
        for src in self.sources:
            try:
                src.start(self.emit)
                started += 1
            except Exception as exc:  # one broken source must not stop the others
                self.stats.inc("lgf_source_errors_total", source=type(src).__name__)
                log.error("source %s failed to start: %s: %s", type(src).__name__, type(exc).__name__, exc)
        if self.sources and not started:
            log.error("no source could start; exiting")
            self.shutdown()
            return 1
        log.info("lgf running: %d source(s), %d sink(s), threshold %.1f ms", started, len(self.routes),
                 self.config.host.threshold / 1e6)
        if started:
            hint_if_nothing_to_watch(self.sources, log)
        next_tick = 0
        while not self.stopping.is_set():
            try:
                batch = [self.events.get(timeout=TICK_SECONDS)]
            except queue.Empty:
                batch = []
            if batch:
                self.pipeline.process_batch(self._take_more(batch))
            if self.reload_requested.is_set():  # SIGHUP: applied here, between two events
                self.reload_requested.clear()
                self.reload()
            # Alerts are due on a report_interval scale; asking after every event would scan the
            # open groups per event during a storm, exactly when the pipeline is busiest.
            now = time.monotonic_ns()
            if now >= next_tick:
                self.pipeline.tick(now)
                next_tick = now + int(TICK_SECONDS * 1e9)
        self.shutdown()
        return 0

    def _take_more(self, batch: list[Event]) -> list[Event]:
        """``batch`` and what else waits in the queue, up to ``BATCH_EVENTS`` events."""
        while len(batch) < BATCH_EVENTS:
            try:
                batch.append(self.events.get_nowait())
            except queue.Empty:
                break
        return batch

    def replay(self, events: Iterable[Event], with_journal: bool = False) -> int:
        """Feed recorded events through the pipeline in batches of ``BATCH_EVENTS``, as
        :meth:`run` takes them from its queue in a burst; flush every alert at the end.

        ``with_journal``: keep open alert groups in the alert journal of ``spool_dir`` as
        :meth:`run` does (``lgf.journal``, recovering first what a crashed lgf left there); off,
        a replay never touches the journal a live lgf on the same ``spool_dir`` owns."""
        self.services.recorded = True  # the recording's pids are not this host's processes: no symbols from them
        if self.engine is not None:
            self.engine.drift.replay_mode()  # graded in the recording's time; teaches the baselines nothing
            self.engine.recorded = True  # nor are they named as services from them
            if with_journal:
                self.journal = journal.attach(self.engine, self.pipeline, self.config.host.spool_dir, self.stats)
        n = next_tick = 0
        for batch in _batches(events, BATCH_EVENTS):
            self.pipeline.process_batch(batch)
            n += len(batch)
            now = time.monotonic_ns()
            if now >= next_tick:  # alerts due by the wall clock, at most every TICK_SECONDS, as live
                self.pipeline.tick(now)
                next_tick = now + int(TICK_SECONDS * 1e9)
        self.shutdown(flush_all_alerts=True)
        return n

    def _start_http(self) -> None:
        if not self.config.sections["http"].enabled:
            return
        if self.history.add not in self.pipeline.observers:
            # Kept only where a page can show it: a replay, or lgf without [http], has no reader.
            self.pipeline.observers.append(self.history.add)
        self.engine.keep_windows = True  # the stall windows of /debug/latency, likewise
        if self.relay is None:
            self.relay = Relay(self.config.host.spool_dir, self.pipeline.relay, self.stats)
        # Imported here: http.server, email and ssl are 20 ms of every start without [http].
        from .http import HttpServer

        self.http = HttpServer(self.config, self.engine, self.stats, self.sources, history=self.history,
                               relay=self.relay)
        self.http.start()

    def shutdown(self, flush_all_alerts: bool = False) -> None:
        for src in self.sources:
            try:
                src.stop()
            except Exception as exc:  # keep detaching the others
                log.error("source %s failed to stop cleanly: %s", type(src).__name__, exc)
        while batch := self._take_more([]):
            self.pipeline.process_batch(batch)
        # Close every open group: alerts pending at shutdown are sent, not forgotten.
        self.pipeline.tick(2**63 - 1 if flush_all_alerts or self.stopping.is_set() else time.monotonic_ns())
        for route in self.routes:
            _close_route(route)
        if self.http is not None:
            self.http.stop()
        if self.relay is not None:
            self.relay.close()
        reload.remove_pid(self.config.host.spool_dir)
        if self.journal is not None:
            self.journal.close()
        if self.engine is not None:
            self.engine.close()  # the baselines keep the minute in progress
        self.manager.pm.hook.lgf_unconfigure(config=self.config)
        self.services.close()
        log.info("lgf stopped: %d stall event(s), %d alert(s), %d dropped, %d plugin error(s), "
                 "%d sink failure(s)", *(int(self.stats.total(name)) for name in (
                     "lgf_events_total", "lgf_alerts_total", "lgf_events_dropped_total",
                     "lgf_plugin_errors_total", "lgf_sink_failed_total")))

    # -- reload (SIGHUP, `lgf reload`; what it keeps and swaps: lgf.reload) -------------------

    def reload(self) -> ReloadOutcome:
        """Re-read ``config_path`` and apply it (see ``lgf.reload``). Never raises: a config that
        is invalid, or changes what needs a restart, is refused and the running one stays."""
        old, path = self.config, self.config_path
        if not path:
            outcome = ReloadOutcome(False, errors=["this lgf was not started from a config file"])
        else:
            try:
                _, new = load(path, overrides=self.overrides)
            except ConfigErrors as exc:
                outcome = ReloadOutcome(False, errors=[str(e) for e in exc.errors])
            else:
                refused = reload.refusals(old, new)
                outcome = ReloadOutcome(False, errors=refused) if refused else self._apply(old, new)
        reload.report(outcome, path, self.stats, old.host.spool_dir)
        return outcome

    def _apply(self, old: cfg.Config, new: cfg.Config) -> ReloadOutcome:
        outcome = ReloadOutcome(True)
        self.config = new
        self._reload_sinks(old, new, outcome)
        self._reload_plugins(old, new, outcome)
        if self.engine is not None:
            self.engine.retune(new)
        if new.raw.get("idle") != old.raw.get("idle"):
            # Every tier judges through the host's services: the new [idle] rules apply at once.
            self.services.idle_rules = options_of(new).rules()
            if self.pipeline is not None:
                self.pipeline.report_idle = options_of(new).report_idle
            outcome.swapped.append("idle rules")
        self._reload_sources(old, new, outcome)
        # The endpoints' roles and approvals come from [http] and [environments] (lgf.http's guard).
        if any(new.raw.get(k) != old.raw.get(k) for k in ("http", "environments")):
            if self.http is not None:
                self.http.stop()
                self.http = None
            self._start_http()
            outcome.swapped.append("http")
        level = new.host.log_level.upper()
        if new.host.log_level != old.host.log_level and hasattr(logging, level):
            logging.getLogger().setLevel(getattr(logging, level))
        return outcome

    def _reload_sinks(self, old: cfg.Config, new: cfg.Config, outcome: ReloadOutcome) -> None:
        before, after = reload.tables_by_name(old, "sink"), reload.tables_by_name(new, "sink")
        routes = {r.name: r for r in self.routes}
        fresh = []
        for name, (cc, table) in after.items():
            if name in before and before[name][1] == table and name in routes:
                fresh.append(routes.pop(name))
                outcome.kept.append(f"sink {name}")
                continue
            if name in routes:  # changed: stop the old one first, so its queue is free for the new
                _close_route(routes.pop(name))
            sink = self._make(cc)
            fresh.append(SinkRoute(cc.name, sink, cc.receive, cc.min_severity, delivery=self._delivery_for(cc, sink)))
            outcome.swapped.append(f"sink {name}")
        for name, route in routes.items():  # removed
            _close_route(route)
            outcome.swapped.append(f"sink {name} (removed)")
        self.routes[:] = fresh  # the pipeline holds this very list

    def _reload_plugins(self, old: cfg.Config, new: cfg.Config, outcome: ReloadOutcome) -> None:
        """Enrichers and classifiers: a kind whose tables changed is registered again in file order
        (pluggy calls the last registered first), reusing the objects of unchanged tables."""
        for kind in ("enricher", "classifier"):
            before, after = reload.tables_by_name(old, kind), reload.tables_by_name(new, kind)
            if reload.same_tables(before, after):
                outcome.kept += [f"{kind} {n}" for n in after]
                continue
            objects = {name: obj for name in before if (obj := self.manager.unregister(name)) is not None}
            for name, (cc, table) in reversed(list(after.items())):
                if name in before and before[name][1] == table and name in objects:
                    obj = objects[name]
                    outcome.kept.append(f"{kind} {name}")
                else:
                    obj = self._make(cc)
                    outcome.swapped.append(f"{kind} {name}")
                self._register(cc, obj)
            outcome.swapped += [f"{kind} {n} (removed)" for n in before if n not in after]

    def _reload_sources(self, old: cfg.Config, new: cfg.Config, outcome: ReloadOutcome) -> None:
        lower = new.host.threshold < old.host.threshold
        targets_changed = new.raw.get("targets") != old.raw.get("targets")
        # The goroutine tier's idle sites are PC ranges loaded into BPF per binary: new [idle]
        # sites reach the kernel only through a fresh source.
        idle_changed = new.raw.get("idle") != old.raw.get("idle")
        before, after = reload.tables_by_name(old, "source"), reload.tables_by_name(new, "source")
        old_objects = dict(zip([cc.name for cc in old.of_kind("source")], self.sources, strict=False))
        fresh = []
        for name, (cc, table) in after.items():
            obj = old_objects.pop(name, None)
            if obj is not None and before[name][1] == table and not (lower or targets_changed or idle_changed):
                fresh.append(obj)
                outcome.kept.append(f"source {name}")
                continue
            if obj is not None:
                _stop_source(obj, name)
            fresh.append(self._make(cc))
            outcome.swapped.append(f"source {name}")
        for name, obj in old_objects.items():
            _stop_source(obj, name)
            outcome.swapped.append(f"source {name} (removed)")
        started = [s for s in fresh if s not in self.sources]
        self.sources[:] = fresh  # the HTTP server and every RunContext hold this very list
        for src in started:
            try:
                src.start(self.emit)
            except Exception as exc:  # one broken source must not stop the others
                self.stats.inc("lgf_source_errors_total", source=type(src).__name__)
                log.error("reload: source %s failed to start: %s: %s", type(src).__name__, type(exc).__name__, exc)
        # Kept sources may still filter in BPF at an older, lower threshold: the host drops what is
        # now under the threshold in force (the sources' own stalls are never under it).
        self.floor_ns = int(new.host.threshold)
        if new.host.threshold > old.host.threshold and any(s not in started for s in fresh):
            outcome.notes.append(f"threshold raised to {new.host.threshold / 1e6:.1f} ms: applied to the kept "
                                 "sources' stalls before the pipeline (their probes stay attached)")
        if lower:
            outcome.notes.append("threshold lowered: the sources were swapped (it is compiled into their BPF)")
        if targets_changed:
            outcome.notes.append("[targets] changed: the sources were swapped")
        if idle_changed:
            outcome.notes.append("[idle] changed: the sources were swapped (idle sites are loaded into their BPF)")


def _batches(events: Iterable[Event], size: int) -> Iterator[list[Event]]:
    """``events`` in lists of ``size`` (the last one shorter), cut by ``islice`` in C: no Python
    step per event."""
    events = iter(events)
    while batch := list(itertools.islice(events, size)):
        yield batch


def _close_route(route: SinkRoute) -> None:
    """Stop a sink's queue, then flush and close the sink; a failure is logged, never raised."""
    try:
        if route.delivery is not None:
            route.delivery.stop(timeout=5.0)
        for method in ("flush", "close"):
            if (call := member(route.sink, "sink", method)) is not None:
                call()
    except Exception as exc:  # a sink failing to close must not stop the others
        log.error("sink %r failed to close: %s", route.name, exc)


def _stop_source(src, name: str) -> None:
    try:
        src.stop()
    except Exception as exc:  # keep going: the new config must still be applied
        log.error("reload: source %s failed to stop cleanly: %s", name, exc)


def hint_if_nothing_to_watch(sources, logger: logging.Logger = log) -> bool:
    """Say once, after the sources started, that no process matches ``[targets]`` (yet), and how to
    see lgf at work; returns whether it said so. Sources that do not count targets are trusted."""
    counts = []
    for src in sources:
        try:
            counts.append(int((src.stats() or {}).get("targets", 1)))
        except Exception:  # a source without a count is assumed to watch something
            counts.append(1)
    if not counts or any(counts):
        return False
    logger.info("no Go process to watch yet: none matches [targets]; lgf attaches to each one as it "
                "starts. To see lgf at work now: `sudo lgf demo` (or `make demo` in a checkout)")
    return True


def open_host(config_path: str, with_sources: bool = True, overrides=()) -> Host:
    """Load, validate and build; raises ConfigErrors before anything starts."""
    manager, config = load(config_path, entry_points=True, overrides=overrides)
    host = Host(manager, config, config_path=config_path, overrides=overrides)
    host.build(with_sources=with_sources)
    return host


__all__ = ["ConfigErrors", "Host", "load", "open_host"]
