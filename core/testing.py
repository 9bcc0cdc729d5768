"""Test a plugin against the real host: ``lgf.testing`` is for plugin authors (and lgf's own tests).

No mocks of lgf itself: the manager, config validation, enrichers, classifiers, alert policy and
sinks are the ones ``lgf run`` uses; only installed third-party entry points are left out, so
plugins on a developer's machine never change a test's result. Typical use::

    from lgf import Event
    from lgf.testing import PipelineRun

    def test_db_classifier():
        with PipelineRun('[[classifiers]]\\nuse = "db"\\n', plugins=[mypkg]) as run:
            [event] = run.feed(Event(wait_reason="chan receive", stack_summary=["database/sql.(*DB).conn"]))
            assert event.cause == "db_wait"
            assert run.collected.stalls == [event]

What it gives:

* :class:`EventCollector`: a thread-safe list of events that is both a source's ``emit``
  callback and a sink (``send``), with ``wait_for(pred, timeout)`` for events from threads.
* :func:`make_manager`: the plugin manager with the built-ins and the given plugins, no entry
  points.
* :func:`make_context`: the :class:`lgf.RunContext` a component factory receives, over a config
  validated from TOML text.
* :class:`PipelineRun`: a config built into a real host (sinks, their queues, enrichers,
  classifiers, alert policy; no sources, no HTTP), fed events by hand; everything the sinks got is
  also in ``collected``.
"""

from __future__ import annotations

import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

from . import config as cfg
from .context import RunContext
from .event import Event
from .manager import Manager
from .manager import make_manager as _make_run_manager
from .pipeline import SinkRoute
from .run import Host
from .services import Services
from .stats import Stats

__all__ = ["EventCollector", "PipelineRun", "make_context", "make_manager"]


class EventCollector:
    """Keeps every event it is given, from any thread; a source's ``emit`` and a sink in one.

    As a sink it receives both stall events and alerts (``default_receive = "both"``) and needs no
    durable queue (``durable = False``).
    """

    durable = False
    default_receive = "both"

    def __init__(self, options: Any = None, ctx: Any = None) -> None:
        self.events: list[Event] = []
        self._cond = threading.Condition()

    def send(self, event: Event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    __call__ = send  # a source's emit(event)

    @property
    def stalls(self) -> list[Event]:
        with self._cond:
            return [e for e in self.events if e.kind == "stall"]

    @property
    def alerts(self) -> list[Event]:
        with self._cond:
            return [e for e in self.events if e.kind == "alert"]

    def of_pid(self, pid: int) -> list[Event]:
        with self._cond:
            return [e for e in self.events if e.pid == pid]

    def wait_for(self, pred: Callable[[Event], bool], timeout: float = 60.0) -> list[Event]:
        """Events matching ``pred`` once at least one arrived (or ``[]`` after ``timeout``).

        The timeout only guards against a hang: it returns as soon as a match arrives, and a busy
        2-core host has taken over 5 s (the old default) to get a real event through."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [e for e in self.events if pred(e)]
                left = deadline - time.monotonic()
                if found or left <= 0:
                    return found
                self._cond.wait(left)


def _plugin_name(plugin: object) -> str:
    if isinstance(plugin, ModuleType):
        return plugin.__name__
    return getattr(plugin, "__name__", None) or f"{type(plugin).__name__}@{id(plugin):x}"


def make_manager(plugins: Iterable[object] = (), stats: Stats | None = None) -> Manager:
    """The built-ins plus ``plugins`` (modules, objects, or ``"pkg.module[:object]"`` strings),
    registered as third-party plugins are; installed entry points are not scanned. A plugin that
    fails to register raises here (a test wants to see it), with the reason."""
    manager = _make_run_manager(entry_points=False, stats=stats)
    for plugin in plugins:
        before = len(manager.failures)
        if isinstance(plugin, str):
            manager.import_and_register(plugin, "test")
        else:
            manager.register(plugin, _plugin_name(plugin), "test")
        if len(manager.failures) > before:
            raise manager.failures[-1]
    return manager


def _validated(manager: Manager, toml_text: str, spool_dir: str) -> cfg.Config:
    raw = tomllib.loads(toml_text)
    host = raw.setdefault("lgf", {})
    host.setdefault("spool_dir", spool_dir)
    raw.setdefault("http", {}).setdefault("enabled", False)
    return cfg.validate(raw, manager.components(), "<test config>")


def make_context(toml_text: str = "", plugins: Iterable[object] = (), name: str = "test",
                 spool_dir: str | None = None) -> RunContext:
    """The context a factory receives, over ``toml_text`` validated as ``lgf check`` would
    (``ConfigErrors`` if it is not valid); ``spool_dir`` defaults to a fresh temporary one."""
    manager = make_manager(plugins)
    config = _validated(manager, toml_text, spool_dir or tempfile.mkdtemp(prefix="lgf-test-"))
    return RunContext(config=config, stats=manager.stats, name=name, services=Services.for_config(config))


class PipelineRun:
    """A real host built from ``toml_text`` (no sources), fed events with :meth:`feed`.

    Use as a context manager (or call :meth:`close`): closing shuts the host down as ``lgf run``
    does (sinks flushed and closed, pending alerts sent, ``lgf_unconfigure``).
    """

    def __init__(self, toml_text: str = "", plugins: Iterable[object] = (),
                 spool_dir: str | None = None) -> None:
        self._tmp = None
        if spool_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="lgf-test-")
            spool_dir = self._tmp.name
        self.manager = make_manager(plugins)
        self.config = _validated(self.manager, toml_text, spool_dir)
        self.host = Host(self.manager, self.config)
        self.host.build(with_sources=False)
        self.collected = EventCollector()
        """Every stall event and alert, whatever the configured sinks did with them."""
        self.host.routes.append(SinkRoute("lgf.testing", self.collected, receive="both"))
        self._closed = False

    @property
    def stats(self) -> Stats:
        return self.host.stats

    def sink(self, name: str) -> Any:
        """The instance a ``[[sinks]]`` table made, by its name (``sinks[0]`` when unnamed)."""
        for route in self.host.routes:
            if route.name == name:
                return route.sink
        raise KeyError(f"no sink named {name!r}: " + ", ".join(r.name for r in self.host.routes))

    def feed(self, *events: Event) -> list[Event]:
        """Each event through enrichers, classifiers, alert policy and sinks; returns them."""
        return [self.host.pipeline.process(e) for e in events]

    def flush_alerts(self) -> list[Event]:
        """Close every open alert group now and send its alert; returns the alerts."""
        return self.host.pipeline.tick(2**63 - 1)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.host.shutdown(flush_all_alerts=True)
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> PipelineRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
