"""The plugin contract: what a component is, and the shapes the host relies on, by kind.

A component is the unit a ``plugins.toml`` table makes (``[[sinks]] use = "file"``). A plugin
declares components through ``lgf_components``; the host validates each table against the
component's options dataclass (``lgf.options``), then calls ``factory(options, ctx)``.

The four protocols below (exported from ``lgf``) list the members the host calls. Required
members are the Protocol's methods; every *optional* member, and what the host does when it is
there or not, is listed in the protocol's docstring and in ``OPTIONAL_MEMBERS``. The host asks
for optional members only through :func:`member` (one place, instead of ``getattr`` scattered
over the host), so this file stays the whole truth.

Making a component without a ``Component`` (``use = "pkg.module:Class"``): the class is the
factory, and its ``Options`` attribute, if it is a dataclass, types the table's keys; without one,
any key besides ``use`` and ``name`` is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .config import Config
    from .event import Event
    from .services import Services
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
    services: Services = field(default_factory=lambda: _services())
    """What the host shares among its plugins (``lgf.services``): symbol cache, idle rules,
    arming, trace capture, robot budgets. One per host; never kept at module level."""


def _services():
    from .services import Services  # noqa: PLC0415 - services import the golang readers

    return Services()


@runtime_checkable
class Source(Protocol):
    """Delivers :class:`lgf.Event` objects; made from a ``[[sources]]`` table.

    Required: ``start(emit)`` begins delivering events by calling ``emit(event)`` from any thread
    and returns promptly (a source that raises here is counted in ``lgf_source_errors_total`` and
    the others still start); ``stop()`` detaches everything it attached (no probe may outlive
    lgf), called on shutdown even if ``start`` failed.

    Optional (the host checks for each):

    * ``name``: shown in /metrics; without it, the class name and index.
    * ``stats() -> dict``: the source's own counters, exported on /metrics as ``lgf_source``
      (``ringbuf_lost`` as ``lgf_ringbuf_lost_total``); without it, nothing is exported.
    * ``histograms() -> list[dict]``: BPF log2 histograms of every stall, also those under the
      threshold, exported on /metrics; without it, /metrics has only events that crossed.
    * ``runtime_counters(pid) -> dict``: live Go runtime counters of a traced process, read by
      enrichers (``gc_phase``, ``poller``) and /metrics; without it, those values are left out.
    """

    def start(self, emit: Callable[[Event], None]) -> None: ...
    def stop(self) -> None: ...


@runtime_checkable
class Sink(Protocol):
    """Receives events and alerts; made from a ``[[sinks]]`` table, called on its own.

    Required: ``send(event)`` delivers one event or alert and raises on failure. What a failure
    means is decided by ``lgf.delivery``: ``OSError`` and ``DeliveryError(retryable=True)`` are
    retried with backoff; *any other exception* (and ``retryable=False``) parks the items on
    disk as failed until ``lgf spool retry NAME``. One sink failing never stops the others.

    Optional (the host checks for each):

    * ``default_receive`` (class attribute): ``"events"``, ``"alerts"`` or ``"both"``, the
      ``receive`` a table gets when it sets none. Without it a sink gets stall *events*, not
      alerts.
    * ``durable`` (class attribute, default True): False means the sink is its own record
      (stdout, file): it is called directly on the pipeline thread, with no spool and no retry.
    * ``send_pending(events, receipt)``: the rich batch protocol (see ``lgf.delivery``); used
      instead of ``send`` when present. ``send_batch(events)``: all or nothing, likewise.
    * ``flush()`` then ``close()``: called in that order on shutdown, after the queue drained.
    * ``Options`` (class attribute, a dataclass): types the table when the sink is named as
      ``use = "pkg.module:Class"``; a ``Component`` carries its options itself.
    """

    def send(self, event: Event) -> None: ...


@runtime_checkable
class Enricher(Protocol):
    """Adds context to each stall event in place; made from an ``[[enrichers]]`` table.

    Required: ``lgf_enrich(event)`` marked ``@lgf.hookimpl``; the instance is registered with the
    plugin manager for the run. It is called through pluggy (traced by ``LGF_TRACE_PLUGINS=1``)
    but guarded: if it raises, ``lgf_plugin_errors_total{plugin,hook}`` counts it, it is logged
    by name, and the other enrichers still run. Bounded work per event; no blocking I/O.
    Optional: ``lgf_configure(config)`` / ``lgf_unconfigure(config)``, like any plugin.
    """

    def lgf_enrich(self, event: Event) -> None: ...


@runtime_checkable
class Classifier(Protocol):
    """Names the cause of a stall; made from a ``[[classifiers]]`` table or a plugin module.

    Required: ``lgf_classify(event) -> str | None`` marked ``@lgf.hookimpl``. The first non-None
    answer wins. Order: third-party and configured classifiers first (in the order of their
    tables), then the built-in ``waitreason`` (``trylast``), then the built-in ``unknown``
    fallback (``trylast``, registered first, so called last). A classifier that raises is
    counted and logged, and the next one decides. ``tryfirst=True`` puts one before the others.
    """

    def lgf_classify(self, event: Event) -> str | None: ...


OPTIONAL_MEMBERS: dict[str, dict[str, Any]] = {
    "source": {"name": "", "stats": None, "histograms": None, "runtime_counters": None},
    "sink": {"default_receive": "events", "durable": True, "send_pending": None, "send_batch": None,
             "flush": None, "close": None, "Options": None},
}
"""Every optional member the host looks for, by kind, with what it assumes when it is missing."""


def member(obj: Any, kind: str, name: str) -> Any:
    """``obj``'s optional member ``name`` of the ``kind`` protocol, or its documented default.

    The one place the host looks for optional members, so nothing outside this module probes
    components with ``getattr``/``hasattr``. A name not in ``OPTIONAL_MEMBERS`` is a bug (KeyError).
    """
    return getattr(obj, name, OPTIONAL_MEMBERS[kind][name])
