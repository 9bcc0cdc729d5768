"""plugins.toml: read it, check every key, and say every problem at once with its key path.

Shape (Vector's model: one named table per component, ``use`` picks the implementation)::

    [lgf]                    # host settings: threshold, window, env, spool_dir, extra plugins
    [targets]                # which Go processes: pids, exe globs, comm regexes, all
    [[sources]]    use = "uprobe"
    [[enrichers]]  use = "symbolizer"
    [[classifiers]] use = "waitreason"
    [[sinks]]      use = "file"   path = "/tmp/lgf/stalls.jsonl"

Each component table takes ``use`` (a name some plugin provides, or ``"pkg.module:object"``),
an optional ``name`` (the user's own id, shown in logs and metrics) and the options its component
declares. Other top-level sections are typed by ``SECTIONS``.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import options as opt
from .alerts import AlertsOptions
from .baselines import BaselineOptions
from .components import KINDS, Component, member, missing
from .environments import EnvironmentsOptions, check_env
from .errors import ConfigError, ConfigErrors
from .event import SEVERITIES
from .idle import IdleOptions
from .kubernetes import KubernetesOptions
from .options import Duration
from .roles import check_token_file
from .silences import SilencesOptions

SINK_KEYS = ("receive", "min_severity", "queue_limit")
"""Keys every sink table takes, handled by the host rather than by the sink."""

TABLE_OF_KIND = {"source": "sources", "enricher": "enrichers", "classifier": "classifiers",
                 "sink": "sinks"}


@dataclass
class HostOptions:
    """``[lgf]``: the host itself."""

    threshold: Duration = Duration(50_000_000)
    """A stall shorter than this is counted, never reported."""
    window: Duration = Duration(200_000_000)
    """Stalls of one process closer than this merge into one stall window."""
    report_interval: Duration = Duration(10_000_000_000)
    """How long alerts are grouped before they are sent."""
    env: str = "prod"
    """``dev``, ``test``, ``prod`` or an ``[environments.NAME]`` of yours: picks thresholds, severities,
    quiet windows and who may silence (README "Environments")."""
    spool_dir: str = "/var/lib/lgf"
    """Where durable sink queues and persisted silences live."""
    plugins: list[str] = field(default_factory=list)
    """Extra plugin modules to register, as "pkg.module" or "pkg.module:object"."""
    log_level: str = "info"
    """``debug``, ``info``, ``warning`` or ``error``."""

    def __post_init__(self):
        if self.threshold <= 0:
            raise ValueError("lgf.threshold: must be more than 0")


@dataclass
class TargetOptions:
    """``[targets]``: which processes to watch. Any match selects a process; lgf never traces itself."""

    pids: list[int] = field(default_factory=list)
    """These process ids."""
    exe: list[str] = field(default_factory=list)
    """Globs on the executable's path ("/usr/local/bin/*")."""
    comm: list[str] = field(default_factory=list)
    """Regular expressions on the process name (/proc/PID/comm)."""
    all: bool = False
    """Watch every Go process on the host."""

    def __post_init__(self):
        for i, rx in enumerate(self.comm):
            try:
                re.compile(rx)
            except re.error as exc:
                raise ValueError(f"targets.comm[{i}]: bad regular expression: {exc}") from None


DEFAULT_LISTEN = "127.0.0.1:9464"


@dataclass
class HttpOptions:
    """``[http]``: the local endpoints."""

    listen: str = DEFAULT_LISTEN
    """host:port to bind; keep it on loopback unless something scrapes it from elsewhere."""
    enabled: bool = True
    """``false`` turns the endpoints off."""
    token_env: str = ""
    """Name of an environment variable holding a token that POST/DELETE must present (role operator)."""
    token_file: str = ""
    """A TOML file of identities, roles and tokens (``lgf.roles``); must be root's, mode 600."""
    recent_limit: int = 100
    """How many windows and alerts /debug/latency returns by default."""

    def __post_init__(self):
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"listen: {self.listen!r} is not host:port (e.g. \"127.0.0.1:9464\")")
        if self.token_file:
            check_token_file(self.token_file)



SECTIONS: dict[str, type] = {
    "lgf": HostOptions,
    "targets": TargetOptions,
    "alerts": AlertsOptions,            # grouping, services, tags, topology (lgf.alerts)
    "environments": EnvironmentsOptions,  # per-env thresholds, severities, quiet windows (lgf.environments)
    "baselines": BaselineOptions,       # drift-aware baselines per service and cause (lgf.baselines)
    "silences": SilencesOptions,        # silences shipped with the config (lgf.silences)
    "http": HttpOptions,                # /debug/latency, /metrics, silence API (lgf.http)
    "idle": IdleOptions,                # your own idle sites, report_idle (lgf.idle)
    "kubernetes": KubernetesOptions,    # pods, owners, nodes from the API server or kubelet (lgf.kubernetes)
}
"""Typed top-level sections; the component lists (``sources`` ...) are handled apart."""


@dataclass
class ComponentConfig:
    """One ``[[sinks]]`` (or source, enricher, classifier) table, validated."""

    kind: str
    use: str
    name: str
    path: str
    """Its key path in the file, e.g. ``sinks[1]``."""
    component: Component
    options: Any
    receive: str = "events"
    """Sinks only: "events", "alerts" or "both" (handled by the host for every sink)."""
    min_severity: str = "info"
    """Sinks only: alerts below this severity are not sent to this sink."""
    queue_limit: int = 100_000
    """Sinks only: items the sink's durable queue holds; past it the oldest stall events go first."""
    named: bool = False
    """Whether the table says ``name`` (a sink's name otherwise defaults to its ``use``)."""


@dataclass
class Config:
    path: str
    host: HostOptions
    targets: TargetOptions
    sections: dict[str, Any]
    """Every typed section by name, ``host`` and ``targets`` included."""
    components: list[ComponentConfig]
    raw: dict[str, Any]

    def of_kind(self, kind: str) -> list[ComponentConfig]:
        return [c for c in self.components if c.kind == kind]


def parse_toml(path: str | Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigErrors([ConfigError("", f"cannot read {path}: {exc.strerror}")]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigErrors([ConfigError("", f"{path}: not valid TOML: {exc}")]) from None


def load(path: str | Path, registry: dict[tuple[str, str], Component]) -> Config:
    """Read and validate ``path``. Raises :class:`ConfigErrors` listing every problem."""
    return validate(parse_toml(path), registry, str(path))


def validate(raw: dict[str, Any], registry: dict[tuple[str, str], Component],
             path: str = "<config>") -> Config:
    errors: list[ConfigError] = []
    known_top = set(SECTIONS) | set(TABLE_OF_KIND.values())
    for key in raw:
        if key not in known_top:
            errors.append(ConfigError(key, "unknown section", opt.nearest(key, known_top)
                                      or "sections: " + ", ".join(sorted(known_top))))
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            errors.append(ConfigError(name, "expected a table ([" + name + "])"))
            table = {}
        sections[name] = opt.build(cls, table, name, errors) or cls()
    errors.extend(check_env(sections))

    components: list[ComponentConfig] = []
    for kind in KINDS:
        key = TABLE_OF_KIND[kind]
        tables = raw.get(key, [])
        if not isinstance(tables, list):
            errors.append(ConfigError(key, f"expected an array of tables ([[{key}]])"))
            continue
        for i, table in enumerate(tables):
            cc = _component(kind, table, f"{key}[{i}]", registry, errors)
            if cc:
                components.append(cc)
    _check_names_unique(components, errors)
    if errors:
        raise ConfigErrors(errors)
    return Config(path=path, host=sections["lgf"], targets=sections["targets"], sections=sections,
                  components=components, raw=raw)


def _component(kind: str, table: Any, path: str, registry, errors) -> ComponentConfig | None:
    if not isinstance(table, dict):
        errors.append(ConfigError(path, "expected a table"))
        return None
    use = table.get("use")
    if not isinstance(use, str) or not use:
        errors.append(ConfigError(f"{path}.use", "required: the name of a " + kind))
        return None
    comp = resolve_use(kind, use, f"{path}.use", registry, errors)
    if comp is None:
        return None
    if comp.always:
        errors.append(ConfigError(f"{path}.use", f"{kind} {use!r} is always on, one per host: it takes no table",
                                  "remove this table"))
        return None
    if isinstance(comp.factory, type):  # a class says what it has; a factory function, only at start
        lacking = missing(kind, comp.factory)
        if lacking:
            errors.append(ConfigError(f"{path}.use", f"{kind} {use!r} ({comp.factory.__qualname__}) lacks "
                                      + ", ".join(lacking), "see lgf.components"))
            return None
    named = "name" in table
    name = table.get("name", use if kind == "sink" else path)  # a sink's queue is named after it
    if not isinstance(name, str):
        errors.append(ConfigError(f"{path}.name", "expected a string"))
        return None
    host_keys = ("use", "name") + (SINK_KEYS if kind == "sink" else ())
    routing = _sink_routing(comp, table, path, errors) if kind == "sink" else {}
    options = None
    if comp.options is not None:
        options = opt.build(comp.options, table, path, errors, ignore=host_keys)
        if options is None:
            return None
    else:
        extra = [k for k in table if k not in host_keys]
        for k in extra:
            errors.append(ConfigError(f"{path}.{k}", "unknown key", f"{kind} {use!r} takes no options"))
        if extra:
            return None
    if routing is None:
        return None
    return ComponentConfig(kind=kind, use=use, name=name, path=path, component=comp, options=options,
                           named=named, **routing)


def _sink_routing(comp: Component, table: dict, path: str, errors) -> dict | None:
    """``receive`` and ``min_severity``; a sink class may set ``default_receive``."""
    default = member(comp.factory, "sink", "default_receive")
    before = len(errors)
    out = {}
    for key, choices, dflt in (("receive", ("events", "alerts", "both"), default),
                               ("min_severity", SEVERITIES, "info")):
        value = table.get(key, dflt)
        if value not in choices:
            errors.append(ConfigError(f"{path}.{key}", f"{value!r} is not one of " + ", ".join(choices),
                                      opt.nearest(str(value), choices)))
        out[key] = value
    limit = table.get("queue_limit", 100_000)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        errors.append(ConfigError(f"{path}.queue_limit", f"expected a positive integer, got {limit!r}"))
    out["queue_limit"] = limit
    return out if len(errors) == before else None


def resolve_use(kind: str, use: str, path: str, registry, errors) -> Component | None:
    """The component a ``use`` value names: a registered name, or ``"pkg.module:object"``."""
    if (kind, use) in registry:
        return registry[(kind, use)]
    if ":" in use:
        mod_name, _, attr = use.partition(":")
        try:
            obj = getattr(importlib.import_module(mod_name), attr)
        except Exception as exc:  # any import-time failure of user code is a config error
            errors.append(ConfigError(path, f"cannot load {use!r}: {type(exc).__name__}: {exc}"))
            return None
        if isinstance(obj, Component):
            if obj.kind != kind:
                errors.append(ConfigError(path, f"{use!r} is a {obj.kind}, not a {kind}"))
                return None
            return obj
        if callable(obj):
            opts = member(obj, "sink", "Options")
            return Component(kind, use, obj, opts if dataclasses.is_dataclass(opts) else None)
        errors.append(ConfigError(path, f"{use!r} is neither a Component nor a class"))
        return None
    names = sorted(u for (k, u) in registry if k == kind)
    hint = opt.nearest(use, names) or ("known: " + ", ".join(names) if names else "no plugin provides one")
    errors.append(ConfigError(path, f"unknown {kind} {use!r}", hint))
    return None


def _check_names_unique(components: list[ComponentConfig], errors) -> None:
    seen: dict[str, str] = {}
    for c in components:
        if c.name in seen:
            if c.kind == "sink" and not c.named:  # two sinks of one use, this one unnamed
                errors.append(ConfigError(f"{c.path}.name", f"required: {seen[c.name]} is named {c.name!r} "
                                          f"too (a sink's name defaults to its use, and names its queue)",
                                          "give each sink of one use its own name"))
            else:
                errors.append(ConfigError(f"{c.path}.name", f"{c.name!r} is already the name of {seen[c.name]}"))
            continue
        seen[c.name] = c.path
