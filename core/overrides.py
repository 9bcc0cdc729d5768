"""Command-line overrides of plugins.toml: ``--latency-threshold=30ms``, ``--set section.key=value``.

``lgf run`` and ``lgf check`` take the same flags::

    --latency-threshold 30ms     same as --set lgf.threshold=30ms
    --window-size 200ms          same as --set lgf.window=200ms
    --report-interval 10s        same as --set lgf.report_interval=10s
    --env dev                    same as --set lgf.env=dev
    --set KEY=VALUE              any key, by the key path lgf check prints: lgf.threshold,
                                 environments.prod.warning, http.listen, sinks[0].format ...

An override is written into the parsed file before validation, so it is checked exactly like the
file (types, units, "did you mean"), and an error it causes says which flag it came from:
``lgf.treshold: unknown key (did you mean 'threshold'?; from --set lgf.treshold=30ms)``.
VALUE is read as a TOML value when it is one (``30``, ``true``, ``["a", "b"]``, ``"x"``) and as
a string otherwise (``30ms``, ``dev``). Later flags win over earlier ones; the named flags are
applied after ``--set``.
"""

from __future__ import annotations

import argparse
import copy
import re
import tomllib

from .errors import ConfigError

NAMED = {"latency_threshold": ("--latency-threshold", "lgf.threshold", "stalls shorter than this are not reported"),
         "window_size": ("--window-size", "lgf.window", "stalls of one process closer than this merge"),
         "report_interval": ("--report-interval", "lgf.report_interval", "how long alerts group stalls"),
         "env": ("--env", "lgf.env", "dev, test, prod or an [environments.NAME]")}
_PART = re.compile(r"^([A-Za-z_][\w-]*)(?:\[(\d+)\])?$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The override flags, for ``lgf run`` and ``lgf check``."""
    for dest, (flag, key, help_text) in NAMED.items():
        parser.add_argument(flag, dest=dest, metavar="VALUE", help=f"{help_text} (= --set {key}=VALUE)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        type=_key_value, help="override one config key by its path, e.g. environments.prod.warning=200ms")


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: write KEY=VALUE, e.g. lgf.threshold=30ms")
    return key.strip(), value


def from_args(args) -> list[tuple[str, str, str]]:
    """``[(key path, value text, flag as the user wrote it)]`` in the order they apply."""
    out = [(k, v, f"--set {k}={v}") for k, v in getattr(args, "overrides", None) or []]
    for dest, (flag, key, _) in NAMED.items():
        value = getattr(args, dest, None)
        if value is not None:
            out.append((key, value, f"{flag}={value}"))
    return out


def parse_value(text: str):
    """A TOML value if ``text`` is one, else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply(raw: dict, overrides: list[tuple[str, str, str]]) -> tuple[dict, list[ConfigError]]:
    """A copy of ``raw`` with the overrides written in, and the ones that could not be."""
    out = copy.deepcopy(raw)
    errors = []
    for key, text, flag in overrides:
        try:
            _set(out, key, parse_value(text))
        except ConfigError as exc:
            errors.append(ConfigError(exc.path, exc.message, f"from {flag}"))
    return out, errors


def _set(raw: dict, key: str, value) -> None:
    parts = key.split(".")
    node, done = raw, []
    for i, part in enumerate(parts):
        m = _PART.match(part)
        if not m:
            raise ConfigError(key, f"{part!r} is not a key (write section.key or sinks[0].key)")
        name, index = m.group(1), m.group(2)
        done.append(part)
        last = i == len(parts) - 1
        if index is not None:
            tables = node.get(name)
            if not isinstance(tables, list) or int(index) >= len(tables):
                have = len(tables) if isinstance(tables, list) else 0
                raise ConfigError(".".join(done), f"no such table (the config has {have} [[{name}]])")
            if last:
                raise ConfigError(key, "cannot replace a whole table; set one of its keys")
            node = tables[int(index)]
            continue
        if last:
            node[name] = value
            return
        child = node.setdefault(name, {})
        if not isinstance(child, dict):
            raise ConfigError(".".join(done), "is a value, not a table")
        node = child


def mark(errors: list[ConfigError], overrides: list[tuple[str, str, str]]) -> list[ConfigError]:
    """Validation errors caused by an override, saying which flag it was."""
    out = []
    for err in errors:
        flag = next((f for k, _, f in reversed(overrides)
                     if err.path == k or k.startswith(err.path + ".") or err.path.startswith(k + ".")), None)
        if flag and err.path:
            err = ConfigError(err.path, err.message, "; ".join(filter(None, (err.hint, f"from {flag}"))))
        out.append(err)
    return out


def describe(config) -> str:
    """The settings overrides most often change, for ``lgf check`` (two lines)."""
    from .environments import policy_of

    h, p = config.host, policy_of(config)
    base = config.sections.get("baselines")
    quiet = ", ".join(f"{what} {ns / 60e9:g} min" for what, ns in (
        ("after a deploy", p.silence_after_deploy), ("after a load test", p.silence_after_loadtest)) if ns) or "none"
    drift = (f"alert at z >= {p.drift_z:g} with sigma x {p.sigma_scale:g} over {base.window / 3600e9:g} h"
             if base is not None and base.enabled and p.drift_z > 0 else "off")
    return (f"env {h.env}, threshold {h.threshold / 1e6:g} ms, window {h.window / 1e6:g} ms, "
            f"report interval {h.report_interval / 1e9:g} s\n"
            f"  alerts from {(p.threshold or h.threshold) / 1e6:g} ms; quiet windows: {quiet}; run-time silences {'need approval' if p.approval else 'apply at once'}; "
            f"baselines: {drift}")
