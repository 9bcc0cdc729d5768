"""Every hook of lgf, in the order the host calls them. This file is the plugin contract.

A plugin is any object or module with functions marked ``@lgf.hookimpl``. Built-ins are
registered exactly like third-party plugins (see ``lgf.manager``); implementations take only the
arguments they use. Call order is pluggy's: last registered is called first, adjusted by
``tryfirst`` / ``trylast``. Built-ins register first, so a third-party plugin speaks first.

Two kinds of plugin objects meet these hooks:

* **plugin modules** (built-in or from the ``lgf`` entry-point group) answer ``lgf_components``
  to say which ``use = ...`` names they provide;
* **component instances** made from ``plugins.toml`` tables (an enricher, a classifier) are
  registered for the run, so their ``lgf_enrich`` / ``lgf_classify`` methods join the hook calls.
  Sources and sinks are plain objects the host drives itself (see ``lgf.components``): a sink is
  called on its own, so one failing sink never stops the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .components import Component
    from .config import Config
    from .event import Event

hookspec = pluggy.HookspecMarker("lgf")

# --- start-up ------------------------------------------------------------------------------------


@hookspec
def lgf_components() -> list[Component]:
    """Return the components this plugin provides, as a list of :class:`lgf.Component`.

    Called once when the plugin manager is built, before any config is read. Each component names
    its ``kind`` (``"source"``, ``"enricher"``, ``"classifier"`` or ``"sink"``), the ``use`` name a
    ``plugins.toml`` table picks it by, the options dataclass that validates that table, and the
    factory that makes an instance. Two plugins providing the same ``(kind, use)`` is an error
    reported at start-up, naming both.
    """


@hookspec(historic=True)
def lgf_configure(config: Config) -> None:
    """Called once the config is loaded and valid, before any source starts.

    :param config: the validated :class:`lgf.config.Config`.

    Historic: a plugin registered later (a component instance) still receives it.
    """


# --- per event, in pipeline order ----------------------------------------------------------------


@hookspec
def lgf_enrich(event: Event) -> None:
    """Add context to a stall event in place (``stack``, ``gc_phase``, ``poller``, ``sched`` ...).

    :param event: the :class:`lgf.Event`, already decoded from its source.

    Called for every event that crossed the threshold, on the pipeline thread, through pluggy
    (``LGF_TRACE_PLUGINS=1`` traces it; ``wrapper=True`` implementations work). Each plain
    implementation is guarded (``lgf.hookcall``): one that raises is counted in
    ``lgf_plugin_errors_total{plugin,hook}`` and logged by plugin name, and the others still run.
    Must be bounded in time: no blocking I/O per event.
    """


@hookspec(firstresult=True)
def lgf_classify(event: Event) -> str | None:
    """Return the root cause of a stall: one of ``lgf.CAUSES`` or a cause of the plugin's own.

    :param event: the enriched :class:`lgf.Event`.

    Stops at first non-None result. Return ``None`` to let the next classifier decide. Order:
    third-party and configured classifiers first, then the built-in ``waitreason``
    (``trylast``), then the built-in ``unknown`` fallback, a ``trylast`` wrapper that answers
    ``"unknown"`` when nobody else did; so any plugin overrides the built-ins just by answering.
    One that raises is counted and logged, and the next decides. The host writes the answer
    into ``event.cause``.
    """


# --- per batch: the same stages, one call for a batch of events ---------------------------------


@hookspec
def lgf_enrich_batch(events: list[Event]) -> None:
    """Add context to each event of a batch in place: what ``lgf_enrich`` does to one event.

    :param events: the batch, a list of :class:`lgf.Event` in the order they came; every one
        goes through this implementation before the next implementation sees any.

    The pipeline calls this once per batch (up to ``lgf.run.BATCH_EVENTS`` events taken from the
    queue together) instead of ``lgf_enrich`` once per event, when every plugin that implements
    ``lgf_enrich`` implements this hook too: a pluggy call costs a few microseconds, as much as a
    built-in enricher's own work. As long as one registered plugin implements only
    ``lgf_enrich`` (every plugin written before this hook), the pipeline calls ``lgf_enrich`` for
    each event, for every plugin, exactly as before: order, wrappers and per-event isolation
    unchanged. So a plugin that implements this hook implements ``lgf_enrich`` too, and both do
    the same thing (the built-in ``scope`` loops over its ``lgf_enrich``). Order as ``lgf_enrich``
    (``trylast`` etc. apply the same). Guarded like ``lgf_enrich``: an implementation that raises
    is counted in ``lgf_plugin_errors_total{plugin,hook}`` once and the next implementation
    still gets the whole batch; the events after the one that raised miss that implementation,
    so catch per event what one event may cause (the built-ins go on with the rest of the batch
    and raise the first error at the end, counted once).
    """


@hookspec
def lgf_classify_batch(events: list[Event]) -> None:
    """Classify each event of a batch that no classifier has decided yet: what ``lgf_classify``
    does to one event, in place.

    :param events: the batch, a list of :class:`lgf.Event`; an event whose ``cause`` is ``""``
        is undecided. Set ``event.cause`` on those you classify and leave the others alone (a
        ``cause`` already set was decided by a classifier that speaks before you).

    Called once per batch instead of ``lgf_classify`` per event when every plugin that implements
    ``lgf_classify`` implements this hook too (see ``lgf_enrich_batch``: otherwise the pipeline
    calls ``lgf_classify`` per event, for every plugin, as before). Order as ``lgf_classify``:
    third-party and configured classifiers first, the built-in ``waitreason`` (``trylast``),
    then the built-in ``unknown`` wrapper, which sets ``"unknown"`` on every event still
    undecided. The host sets every event's ``cause`` to ``""`` before the call.
    """


# --- shutdown ------------------------------------------------------------------------------------


@hookspec
def lgf_unconfigure(config: Config) -> None:
    """Called once on shutdown, after sources stopped and sinks were flushed.

    :param config: the same :class:`lgf.config.Config` given to ``lgf_configure``.
    """
