"""The plugin manager: register built-ins, third-party entry points and config-named modules.

Built-ins go through the same door as everything else (tox's habit): they are dotted module
names in ``BUILTIN_PLUGINS``, registered first; then the ``lgf`` entry-point group; then modules
named in ``[lgf] plugins``. Under pluggy's LIFO order a third-party plugin therefore speaks
before a built-in. A plugin that fails to import or declares a bad hook is reported by name and
skipped; the rest still start.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
from dataclasses import dataclass, field

import pluggy

from . import hookspecs
from .components import KINDS, Component
from .errors import PluginError
from .hookcall import IsolatingPluginManager
from .stats import Stats

log = logging.getLogger("lgf")

ENTRY_POINT_GROUP = "lgf"

BUILTIN_PLUGINS = (
    "lgf.sources.uprobe",
    "lgf.sources.tracepoint",
    "lgf.plugins.symbolizer",
    "lgf.plugins.gc_phase",
    "lgf.plugins.poller",
    "lgf.plugins.sched",
    "lgf.plugins.trace_context",
    "lgf.plugins.peer",
    "lgf.plugins.waitreason",
    "lgf.plugins.scope",
    "lgf.plugins.unknown",
    "lgf.sinks.stdout",
    "lgf.sinks.file",
    "lgf.sinks.wecom",
    "lgf.sinks.alertmanager",
)
"""Dotted names of the built-in plugins, in registration order."""


@dataclass
class PluginInfo:
    """What ``lgf plugins`` shows about one registered plugin."""

    name: str
    origin: str
    """"built-in", "entry point (dist version)" or "config"."""
    components: list[Component] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)


class Manager:
    """A pluggy manager plus what was registered, where from, and what failed.

    ``stats`` receives ``lgf_plugin_errors_total{plugin,hook}`` when a per-event implementation
    raises (see ``lgf.hookcall``); the host passes its own.
    """

    def __init__(self, stats: Stats | None = None) -> None:
        self.stats = stats if stats is not None else Stats()
        self.pm: pluggy.PluginManager = IsolatingPluginManager("lgf", self._hook_raised)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.failures: list[PluginError] = []
        if os.environ.get("LGF_TRACE_PLUGINS"):
            self.pm.trace.root.setwriter(lambda msg: log.warning("trace: %s", msg.rstrip()))
            self.pm.enable_tracing()

    # -- registration -----------------------------------------------------------------------

    def register(self, plugin: object, name: str, origin: str) -> bool:
        """Register one plugin; a failure is recorded by name, never raised."""
        if self.pm.has_plugin(name) or self.pm.is_blocked(name):
            return False
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except Exception as exc:  # pluggy raises several types; all mean "this plugin is bad"
            if self.pm.has_plugin(name):
                self.pm.unregister(name=name)
            self._fail(name, f"rejected: {exc}")
            return False
        self.infos[name] = PluginInfo(name, origin, hooks=[
            h.name for h in self.pm.get_hookcallers(plugin) or []])
        return True

    def unregister(self, name: str) -> object | None:
        """Take the plugin registered as ``name`` out (a reload swapping an enricher); returns it,
        or None when none is registered by that name."""
        obj = self.pm.get_plugin(name)
        if obj is not None:
            self.pm.unregister(name=name)
            self.infos.pop(name, None)
        return obj

    def import_and_register(self, ref: str, origin: str) -> bool:
        """``"pkg.module"`` or ``"pkg.module:object"``."""
        mod_name, _, attr = ref.partition(":")
        try:
            obj = importlib.import_module(mod_name)
            if attr:
                obj = getattr(obj, attr)
        except Exception as exc:  # a broken third-party import must not stop the host
            self._fail(ref, f"failed to load: {type(exc).__name__}: {exc}")
            return False
        return self.register(obj, ref, origin)

    def load_builtins(self) -> None:
        for ref in BUILTIN_PLUGINS:
            self.import_and_register(ref, "built-in")

    def load_entry_points(self) -> None:
        disabled = set(filter(None, os.environ.get("LGF_DISABLE_PLUGINS", "").split(",")))
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in disabled or self.pm.has_plugin(ep.name):
                continue
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "?"
            try:
                obj = ep.load()
            except Exception as exc:  # one broken package must not stop the others
                self._fail(ep.name, f"({dist}) failed to load: {type(exc).__name__}: {exc}")
                continue
            self.register(obj, ep.name, f"entry point ({dist})")

    def _hook_raised(self, plugin_name: str, hook_name: str, exc: BaseException) -> None:
        self.stats.inc("lgf_plugin_errors_total", plugin=plugin_name, hook=hook_name)
        log.error("plugin %r raised in %s: %s: %s", plugin_name, hook_name, type(exc).__name__, exc)

    def _fail(self, name: str, message: str) -> None:
        err = PluginError(name, message)
        self.failures.append(err)
        log.error("%s", err)

    # -- what the plugins provide -----------------------------------------------------------

    def components(self) -> dict[tuple[str, str], Component]:
        """Every ``(kind, use)`` any plugin provides. A duplicate is reported, first one kept."""
        registry: dict[tuple[str, str], Component] = {}
        owner: dict[tuple[str, str], str] = {}
        for impl in reversed(self.pm.hook.lgf_components.get_hookimpls()):  # registration order
            try:
                declared = impl.function() or []
            except Exception as exc:  # a plugin's own bug: report it, keep the others
                self._fail(impl.plugin_name, f"lgf_components raised {type(exc).__name__}: {exc}")
                continue
            info = self.infos.get(impl.plugin_name)
            for comp in declared:
                key = (comp.kind, comp.use)
                if comp.kind not in KINDS:
                    self._fail(impl.plugin_name, f"component {comp.use!r} has unknown kind {comp.kind!r}")
                    continue
                if key in registry:
                    self._fail(impl.plugin_name, f"{comp.kind} {comp.use!r} is already provided by "
                                                 f"{owner[key]!r}; ignored")
                    continue
                registry[key], owner[key] = comp, impl.plugin_name
                if info is not None and comp not in info.components:
                    info.components.append(comp)
        return registry


    def always(self) -> list[tuple[str, Component]]:
        """``(plugin name, component)`` of every component a host makes with no table
        (``Component.always``), in registration order. Asks the plugin modules alone (component
        instances declare no components), so a failure already reported by :meth:`components`
        is not reported twice."""
        out: list[tuple[str, Component]] = []
        for impl in reversed(self.pm.hook.lgf_components.get_hookimpls()):
            try:
                declared = impl.function() or []
            except Exception:  # noqa: BLE001 - reported by components(), which validation ran first
                continue
            out += [(impl.plugin_name, c) for c in declared
                    if c.always and c.kind in KINDS and all(c.use != o.use or c.kind != o.kind for _, o in out)]
        return out


def make_manager(entry_points: bool = True, extra: list[str] = (), stats: Stats | None = None) -> Manager:
    """The manager a run uses: built-ins, then entry points, then ``extra`` module references.

    ``entry_points=False`` leaves installed third-party plugins out (tests, ``lgf.testing``).
    """
    m = Manager(stats)
    m.load_builtins()
    if entry_points:
        m.load_entry_points()
    for ref in extra:
        m.import_and_register(ref, "config")
    return m
