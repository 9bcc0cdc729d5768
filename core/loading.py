"""Plugins and config, validated together: what ``lgf run``, ``lgf check`` and a reload read.

The plugin manager must exist before the config is validated (a table's ``use`` names a
component some plugin provides, and its keys are that component's options), and ``[lgf]
plugins`` names more plugin modules to load: :func:`load` does both, in that order, and raises
:class:`lgf.errors.ConfigErrors` with every problem, the command line's overrides marked as such.
"""

from __future__ import annotations

from . import config as cfg
from .errors import ConfigErrors
from .manager import Manager, make_manager
from .overrides import apply as apply_overrides
from .overrides import mark as mark_overrides


def load(config_path: str, entry_points: bool = True, overrides=()) -> tuple[Manager, cfg.Config]:
    """Plugins and config, validated together. Raises ConfigErrors with every problem.

    ``overrides``: ``[(key path, value, flag)]`` from the command line (``lgf.overrides``), written
    into the file's tables before validation so they are checked exactly like the file.
    """
    raw, problems = apply_overrides(cfg.parse_toml(config_path), list(overrides))
    extra = (raw.get("lgf") or {}).get("plugins", []) if isinstance(raw.get("lgf"), dict) else []
    manager = make_manager(entry_points=entry_points,
                           extra=[p for p in extra if isinstance(p, str)])
    try:
        config = cfg.validate(raw, manager.components(), config_path)
    except ConfigErrors as exc:
        raise ConfigErrors(problems + mark_overrides(exc.errors, list(overrides))) from None
    if problems:
        raise ConfigErrors(problems)
    return manager, config
