"""What a component is: the unit a ``plugins.toml`` table makes (``[[sinks]] use = "file"``).

A plugin declares components through ``lgf_components``; the host validates each table against
the component's options dataclass (``lgf.options``), then calls ``factory(options, ctx)``.

Shapes the host relies on, by kind:

* **source**: ``start(emit)`` begins delivering :class:`lgf.Event` objects by calling
  ``emit(event)`` from any thread, and returns promptly; ``stop()`` detaches everything it
  attached (no probe may outlive lgf); ``stats()`` returns a dict of counters (optional).
* **enricher** / **classifier**: an object with ``@hookimpl`` methods ``lgf_enrich(event)`` /
  ``lgf_classify(event)``; it is registered with the plugin manager for the run.
* **sink**: ``send(event)`` delivers one event or alert and raises on failure; ``flush()`` and
  ``close()`` (optional). The host calls every sink on its own, behind its own queue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .config import Config
    from .event import Event
    from .stats import Stats

KINDS = ("source", "enricher", "classifier", "sink")


@dataclass(frozen=True)
class Component:
    """A ``use`` name a plugin provides, with the options it takes and how to make it."""

    kind: str
    use: str
    factory: Callable[[Any, RunContext], Any]
    options: type | None = None
    """A dataclass whose fields are the table's keys (besides ``use`` and ``name``)."""
    doc: str = ""


@dataclass
class RunContext:
    """What every component instance may use: the whole config, counters and a logger."""

    config: Config
    stats: Stats
    name: str = ""
    """The instance's name: the table's ``name``, or ``use`` with its index (``sinks[1]``)."""
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("lgf"))
    sources: list = field(default_factory=list)
    """The running sources (for ``histograms()`` / ``runtime_counters(pid)``); empty in replay."""


class Source(Protocol):
    def start(self, emit: Callable[[Event], None]) -> None: ...
    def stop(self) -> None: ...


class Sink(Protocol):
    def send(self, event: Event) -> None: ...
