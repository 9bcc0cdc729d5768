"""The host: turn a validated config into running components, and run them live or on a recording.

``Host`` owns the order of things. Start: plugins are loaded, the config is validated (nothing
starts if it is not), sinks and their queues come up before sources, ``lgf_configure`` fires,
then sources attach. Stop (SIGINT/SIGTERM): sources detach first, so no probe outlives lgf; the
event queue drains; pending alerts are flushed; sinks flush and close; ``lgf_unconfigure`` fires.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Iterable

from . import config as cfg
from . import journal, reload, sinkqueues
from .alerts import AlertEngine
from .components import RunContext, member
from .delivery import Delivery
from .errors import ConfigErrors
from .event import Event
from .http import HttpServer
from .manager import Manager, make_manager
from .overrides import apply as apply_overrides
from .overrides import mark as mark_overrides
from .pipeline import Pipeline, SinkRoute
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


def load(config_path: str, entry_points: bool = True, overrides=()) -> tuple[Manager, cfg.Config]:
    """Plugins and config, validated together. Raises ConfigErrors with every problem.

    ``overrides``: ``[(key path, value, flag)]`` from the command line (``lgf.overrides``), written
    into the file's tables before validation so they are checked exactly like the file.
    """
    raw, problems = apply_overrides(cfg.parse_toml(config_path), list(overrides))
    extra = (raw.get("lgf") or {}).get("plugins", []) if isinstance(raw.get("lgf"), dict) else []
    manager = make_manager(entry_points=entry_points,
                           extra=[p for p in extra if isinstance(p, str)])
    try:
        config = cfg.validate(raw, manager.components(), config_path)
    except ConfigErrors as exc:
        raise ConfigErrors(problems + mark_overrides(exc.errors, list(overrides))) from None
    if problems:
        raise ConfigErrors(problems)
    return manager, config


class Host:
    def __init__(self, manager: Manager, config: cfg.Config, stats: Stats | None = None):
        self.manager = manager
        self.config = config
        self.stats = stats or manager.stats
        manager.stats = self.stats  # the manager counts per-plugin hook errors here
        self.sources: list = []
        self.routes: list[SinkRoute] = []
        self.events: queue.Queue[Event] = queue.Queue(EVENT_QUEUE_SIZE)
        self.stopping = threading.Event()
        self.engine = None
        self.http = None
        self.pipeline: Pipeline | None = None
        self.services = Services.for_config(config)
        """What this host shares among its plugins, handed over as ``ctx.services``."""
        self.history = StallHistory()
        """Recent stalls for the latency page (/ui)."""
        self.config_path: str | None = None
        """The file SIGHUP re-reads (lgf.reload)."""
        self.reload_requested = threading.Event()
        self.floor_ns = 0
        """Stalls shorter than this are dropped at emit: set by a reload that raised the threshold
        while sources compiled with the old one kept running."""

    # -- building --------------------------------------------------------------------------

    def _ctx(self, name: str) -> RunContext:
        return RunContext(config=self.config, stats=self.stats, name=name,
                          log=logging.getLogger(f"lgf.{name}"), sources=self.sources,
                          services=self.services)

    def build(self, with_sources: bool = True) -> None:
        """Make every configured component. A component that fails to start is an error here."""
        queue_problems = sinkqueues.check(self.config)  # a queue of another sink: refuse, before anything runs
        if queue_problems:
            raise ConfigErrors(queue_problems)
        for cc in self.config.of_kind("sink"):
            sink = cc.component.factory(cc.options, self._ctx(cc.name))
            self.routes.append(SinkRoute(cc.name, sink, cc.receive, cc.min_severity,
                                         delivery=self._delivery_for(cc, sink)))
        for kind in ("enricher", "classifier"):
            # Registered in reverse so the first table in the file is called first (pluggy is LIFO).
            for cc in reversed(self.config.of_kind(kind)):
                obj = cc.component.factory(cc.options, self._ctx(cc.name))
                self.manager.register(obj, cc.name, "config")
        self.engine = self._make_engine()
        self.pipeline = Pipeline(self.manager.pm.hook, self.stats, self.routes, self.engine)
        self.pipeline.observers.append(self.history.add)
        self.manager.pm.hook.lgf_configure.call_historic(kwargs={"config": self.config})
        if with_sources:
            for cc in self.config.of_kind("source"):
                self.sources.append(cc.component.factory(cc.options, self._ctx(cc.name)))

    def _delivery_for(self, cc: cfg.ComponentConfig, sink):
        """Each sink behind its own durable queue, unless it is its own record (stdout, file)."""
        if not member(sink, "sink", "durable"):
            return None
        d = Delivery(sink, cc.name, self.config.host.spool_dir, self.stats, limit=cc.queue_limit, use=cc.use)
        d.start()
        return d

    def _make_engine(self) -> AlertEngine:
        return AlertEngine(self.config, self.stats)

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
            from .demo import hint_if_nothing_to_watch
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
                reload.reload(self)
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

    def replay(self, events: Iterable[Event]) -> int:
        """Feed recorded events through the pipeline; flush every alert at the end."""
        if self.engine is not None:
            self.engine.drift.replay_mode()  # graded in the recording's time; teaches the baselines nothing
        n = 0
        for event in events:
            self.pipeline.process(event)
            n += 1
            if n % 1024 == 0:
                self.pipeline.tick(time.monotonic_ns())
        self.shutdown(flush_all_alerts=True)
        return n

    def _start_http(self) -> None:
        if not self.config.sections["http"].enabled:
            return
        self.http = HttpServer(self.config, self.engine, self.stats, self.sources)
        self.http.history = self.history
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
            try:
                if route.delivery is not None:
                    route.delivery.stop(timeout=5.0)
                for method in ("flush", "close"):
                    if (call := member(route.sink, "sink", method)) is not None:
                        call()
            except Exception as exc:  # a sink failing to close must not stop the others
                log.error("sink %r failed to close: %s", route.name, exc)
        if self.http is not None:
            self.http.stop()
        reload.remove_pid(self.config.host.spool_dir)
        if getattr(self, "journal", None) is not None:
            self.journal.close()
        if self.engine is not None:
            self.engine.close()  # the baselines keep the minute in progress
        self.manager.pm.hook.lgf_unconfigure(config=self.config)
        self.services.close()
        log.info("lgf stopped: %d stall event(s), %d alert(s), %d dropped, %d plugin error(s), "
                 "%d sink failure(s)", *(int(self.stats.total(name)) for name in (
                     "lgf_events_total", "lgf_alerts_total", "lgf_events_dropped_total",
                     "lgf_plugin_errors_total", "lgf_sink_failed_total")))


def open_host(config_path: str, with_sources: bool = True, overrides=()) -> Host:
    """Load, validate and build; raises ConfigErrors before anything starts."""
    manager, config = load(config_path, entry_points=True, overrides=overrides)
    host = Host(manager, config)
    host.config_path = config_path
    host.overrides = tuple(overrides)  # a reload re-applies the command line's overrides
    host.build(with_sources=with_sources)
    return host


__all__ = ["ConfigErrors", "Host", "load", "open_host"]
