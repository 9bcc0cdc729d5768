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


# --- shutdown ------------------------------------------------------------------------------------


@hookspec
def lgf_unconfigure(config: Config) -> None:
    """Called once on shutdown, after sources stopped and sinks were flushed.

    :param config: the same :class:`lgf.config.Config` given to ``lgf_configure``.
    """
