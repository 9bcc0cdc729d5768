"""Per-event (and per-batch) hooks through pluggy, with one failing implementation isolated
from the others.

pluggy aborts a hook call on the first exception. For ``lgf_enrich`` and ``lgf_classify`` (and
their batch forms, ``lgf_enrich_batch`` and ``lgf_classify_batch``) that would let one buggy
plugin blind every other one, so each plain implementation of those hooks is
wrapped, when it is registered, in a guard that reports the exception (by plugin name and hook)
and answers ``None``: the next implementation runs, and for ``lgf_classify`` (firstresult) the
next classifier decides. The call itself still goes through pluggy, so ``LGF_TRACE_PLUGINS=1``
traces it and ``wrapper=True`` / ``hookwrapper=True`` implementations work as pluggy documents
(a wrapper is not guarded: it sees the guarded results; if the wrapper itself raises, the whole
call fails and the pipeline counts it under the wrapper's hook, see ``lgf.pipeline``).

Cost: pluggy's dispatch plus one extra Python call per implementation per event, a few
microseconds over a direct loop; bench/bench_pipeline.py prints both side by side (figures in
README, "Writing a plugin").
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

ISOLATED_HOOKS = frozenset({"lgf_enrich", "lgf_classify", "lgf_enrich_batch", "lgf_classify_batch"})
"""Hooks called per event or per batch, where one raising implementation must not stop the rest."""

ErrorReport = Callable[[str, str, BaseException], None]
"""``report(plugin_name, hook_name, exc)``: what a guard calls when an implementation raises."""


def for_each(events, call: Callable) -> None:
    """``call(event)`` for each of ``events``: the loop of a batch hook made of its plugin's
    per-event hook (``lgf_enrich_batch`` of ``lgf_enrich``). One event that raises does not cost
    the others their turn: the first error is raised once every event had it, for the guard to
    count once."""
    failed = None
    for event in events:
        try:
            call(event)
        except Exception as exc:  # noqa: BLE001 - re-raised below
            failed = failed or exc
    if failed is not None:
        raise failed


def _guard(function: Callable, plugin_name: str, hook_name: str, report: ErrorReport) -> Callable:
    def guarded(*args):
        try:
            return function(*args)
        except Exception as exc:  # a plugin's bug must not stop the other implementations
            report(plugin_name, hook_name, exc)
            return None
    guarded.__wrapped__ = function  # type: ignore[attr-defined]
    return guarded


class IsolatingPluginManager(pluggy.PluginManager):
    """A ``pluggy.PluginManager`` whose per-event hook implementations are guarded on register."""

    def __init__(self, project_name: str, report: ErrorReport) -> None:
        super().__init__(project_name)
        self._report = report

    def register(self, plugin: object, name: str | None = None) -> str | None:
        name = super().register(plugin, name)
        if name is None:
            return None
        for caller in self.get_hookcallers(plugin) or []:
            if caller.name not in ISOLATED_HOOKS:
                continue
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin and not (impl.wrapper or impl.hookwrapper):
                    impl.function = _guard(impl.function, impl.plugin_name, caller.name, self._report)
        return name
