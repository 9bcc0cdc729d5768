"""The plugin contract: what a component is, and the shapes the host relies on, by kind.

A component is the unit a ``plugins.toml`` table makes (``[[sinks]] use = "file"``). A plugin
declares components through ``lgf_components``; the host validates each table against the
component's options dataclass (``lgf.options``), then calls ``factory(options, ctx)``.

The four protocols below (exported from ``lgf``) list the members the host calls. Required
members are the Protocol's methods; every *optional* member, and what the host does when it is
there or not, is listed in the protocol's docstring and in ``OPTIONAL_MEMBERS``. The host asks
for optional members only through :func:`member` (one place, instead of ``getattr`` scattered
over the host), so this file stays the whole truth.

The required members are enforced when a component is loaded, not at its first event
(:func:`missing`): ``lgf check`` refuses a table whose class lacks one, and the host refuses to
start when an instance a factory made lacks one, naming the table and what is missing. An
enricher's ``lgf_enrich`` and a classifier's ``lgf_classify`` must be marked ``@lgf.hookimpl``
(unmarked, pluggy would never call them).

What a factory receives as ``ctx`` is :class:`lgf.RunContext` (``lgf.context``).

Making a component without a ``Component`` (``use = "pkg.module:Class"``): the class is the
factory, and its ``Options`` attribute, if it is a dataclass, types the table's keys; without one,
any key besides ``use`` and ``name`` is an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .event import Event

KINDS = ("source", "enricher", "classifier", "sink")


@dataclass(frozen=True)
class Component:
    """A ``use`` name a plugin provides, with the options it takes and how to make it."""

    kind: str
    use: str
    factory: Callable[[Any, Any], Any]
    """Called as ``factory(options, ctx)``, ``ctx`` an :class:`lgf.RunContext`; returns the instance."""
    options: type | None = None
    """A dataclass whose fields are the table's keys (besides ``use`` and ``name``)."""
    doc: str = ""
    always: bool = False
    """Made once per host whatever the config says, with no table (a table naming it is an error):
    a built-in step every run needs, such as the ``scope`` enricher. The host makes it with
    ``options=None`` and a :class:`lgf.RunContext` named after ``use``, like any component, so
    its state lives in the host, not in its module."""


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
      instead of ``send`` when present. ``send_batch(events)``: all or nothing, likewise; a sink
      with ``durable = False`` gets each batch the pipeline processes in one ``send_batch`` call.
    * ``flush()`` then ``close()``: called in that order on shutdown, after the queue drained.
    * ``Options`` (class attribute, a dataclass): types the table when the sink is named as
      ``use = "pkg.module:Class"``; a ``Component`` carries its options itself.
    * ``relayed`` (class attribute, default True): False keeps the alerts the relay receives
      from Alertmanager (``POST /api/alertmanager``, ``lgf.relay``) away from this sink; the
      ``alertmanager`` sink says so, or a relay with one would feed Alertmanager its own alerts.
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
             "flush": None, "close": None, "Options": None,
             "relayed": True},
}
"""Every optional member the host looks for, by kind, with what it assumes when it is missing."""


def _required(protocol: type) -> tuple[str, ...]:
    """The protocol's own methods: what every component of its kind must have."""
    return tuple(n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_"))


PROTOCOLS: dict[str, type] = {"source": Source, "sink": Sink, "enricher": Enricher, "classifier": Classifier}
"""Kind -> the protocol its components follow."""
HOOKS = ("lgf_enrich", "lgf_classify")
"""Required members that are hooks: they must be marked ``@lgf.hookimpl`` to be called at all."""


def missing(kind: str, obj: Any) -> list[str]:
    """What ``obj`` (an instance, or its class) lacks of the ``kind`` protocol's required members,
    each said as a user can act on it (``"send()"``, ``"an @lgf.hookimpl lgf_enrich()"``); []
    when nothing is missing."""
    out = []
    for name in _required(PROTOCOLS[kind]):
        value = getattr(obj, name, None)
        if name in HOOKS:
            if value is None or not callable(value):
                out.append(f"an @lgf.hookimpl {name}()")
            elif not hasattr(value, "lgf_impl"):  # pluggy's HookimplMarker("lgf") sets this
                out.append(f"the @lgf.hookimpl mark on {name}() (unmarked, it is never called)")
        elif value is None or not callable(value):
            out.append(f"{name}()")
    return out


def member(obj: Any, kind: str, name: str) -> Any:
    """``obj``'s optional member ``name`` of the ``kind`` protocol, or its documented default.

    The one place the host looks for optional members, so nothing outside this module probes
    components with ``getattr``/``hasattr``. A name not in ``OPTIONAL_MEMBERS`` is a bug (KeyError).
    """
    return getattr(obj, name, OPTIONAL_MEMBERS[kind][name])
