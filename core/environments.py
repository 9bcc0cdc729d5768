"""Environments: what ``[lgf] env`` means for thresholds, severities, quiet windows, silences and drift.

The design document's table, as the defaults (every key can be changed in ``[environments.NAME]``):

| env  | alerts from | warning / critical | automatic quiet window            | run-time silences        | loopback without a token | σ scale |
| ---- | ----------- | ------------------ | --------------------------------- | ------------------------ | ------------------------ | ------- |
| dev  | 200 ms      | 1 s / 10 s         | 2 h after every deploy            | active at once           | may change things        | 1.5     |
| test | 100 ms      | 500 ms / 5 s       | 30 min from a load test's start   | active at once           | may change things        | 1.0     |
| prod | threshold   | 100 ms / 1 s       | none                              | pending until approved   | read only                | 0.8     |

A deploy is a new ``build_id`` seen for a service (``AlertEngine._notice_deploy``) or ``lgf silence
deploy SERVICE``; a load test starts with ``lgf silence loadtest SERVICE`` (``POST /api/loadtests``).
A user may name more environments: ``[environments.staging] like = "test"`` starts from test's
defaults (``like`` defaults to prod, the strictest) and overrides what it lists; ``[lgf] env =
"staging"`` then picks it. An ``[lgf] env`` that names no environment is a config error with a
"did you mean".

Cost: none per event; the table is read once at start-up.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Literal

from . import options as opt
from .errors import ConfigError
from .options import Duration

BUILTIN = ("dev", "test", "prod")
MIN = 60 * 10**9


@dataclass
class EnvPolicy:
    """One ``[environments.<name>]`` table."""

    like: str = ""
    """For a user-named environment: the built-in one whose defaults it starts from (prod if unset)."""
    threshold: Duration = Duration(0)
    """Stalls shorter than this make no alert (they are still events). 0 = ``[lgf] threshold``."""
    warning: Duration = Duration(100_000_000)
    """An alert whose worst stall reaches this is a warning (below: info)."""
    critical: Duration = Duration(1_000_000_000)
    """An alert whose worst stall reaches this is critical."""
    min_count: int = 1
    """Fewer stalls than this in a report interval make no alert."""
    silence_after_deploy: Duration = Duration(0)
    """Hold back a service's alerts for this long after its binary changed (or ``lgf silence deploy``)."""
    silence_after_loadtest: Duration = Duration(0)
    """Hold back a service's alerts for this long after ``lgf silence loadtest SERVICE``."""
    approval: bool = False
    """Silences added at run time are pending until a second identity with the approver role approves."""
    loopback_changes: bool = False
    """Without any configured token, changes from loopback are allowed (lgf's original rule)."""
    sigma_scale: float = 1.0
    """Baselines: σ is multiplied by this before z is computed (wider band: fewer drift alerts)."""
    drift_z: float = 2.0
    """Baselines: an established series alerts when z reaches this (μ ± 2σ); 0 turns drift grading off."""
    drift_severity: Literal["info", "warning", "critical"] = "warning"
    """The least severity of an alert sent because of its z."""

    def __post_init__(self):
        if self.critical < self.warning:
            raise ValueError("critical must be at least warning")
        if self.sigma_scale <= 0:
            raise ValueError("sigma_scale must be more than 0")
        if self.drift_z < 0:
            raise ValueError("drift_z must not be negative")


DEFAULT_POLICIES = {
    "dev": EnvPolicy(threshold=Duration(200_000_000), warning=Duration(1_000_000_000),
                     critical=Duration(10_000_000_000), silence_after_deploy=Duration(120 * MIN),
                     loopback_changes=True, sigma_scale=1.5),
    "test": EnvPolicy(threshold=Duration(100_000_000), warning=Duration(500_000_000),
                      critical=Duration(5_000_000_000), silence_after_loadtest=Duration(30 * MIN),
                      loopback_changes=True, sigma_scale=1.0),
    "prod": EnvPolicy(approval=True, sigma_scale=0.8),
}
"""What each environment means when plugins.toml says nothing about it."""


@dataclass
class EnvironmentsOptions:
    """``[environments]``: one table per environment, built-in (dev, test, prod) or named by the user."""

    policies: dict = field(default_factory=lambda: dict(DEFAULT_POLICIES))

    @classmethod
    def from_table(cls, table: dict, path: str, errors: list) -> EnvironmentsOptions | None:
        """Build from ``[environments]``; problems go to ``errors`` with their key paths."""
        before = len(errors)
        hints = typing.get_type_hints(EnvPolicy)
        policies = dict(DEFAULT_POLICIES)
        for name, sub in table.items():
            where = f"{path}.{name}"
            if not isinstance(sub, dict):
                errors.append(ConfigError(where, "expected a table ([environments." + str(name) + "])"))
                continue
            like = sub.get("like") or (name if name in BUILTIN else "prod")
            if like not in BUILTIN or (name in BUILTIN and like != name):
                errors.append(ConfigError(f"{where}.like", f"{like!r}: only an environment of your own may be "
                                          "like dev, test or prod", opt.nearest(str(like), BUILTIN)))
                continue
            values = {}
            for key, raw in sub.items():
                if key not in hints:
                    errors.append(ConfigError(f"{where}.{key}", "unknown key", opt.nearest(key, hints)))
                    continue
                try:
                    values[key] = opt.coerce(raw, hints[key], f"{where}.{key}")
                except ConfigError as exc:
                    errors.append(exc)
            base = DEFAULT_POLICIES[like]
            try:  # unset keys keep the environment's default, not EnvPolicy's
                policies[name] = dataclasses.replace(base, **values)
            except (ValueError, TypeError) as exc:
                errors.append(ConfigError(where, str(exc)))
        return cls(policies) if len(errors) == before else None

    def policy(self, env: str) -> EnvPolicy:
        return self.policies.get(env) or DEFAULT_POLICIES["prod"]

    def names(self) -> list[str]:
        return sorted(self.policies)


def check_env(sections: dict) -> list[ConfigError]:
    """``[lgf] env`` must name an environment (built-in or ``[environments.NAME]``)."""
    host, envs = sections.get("lgf"), sections.get("environments")
    if host is None or not isinstance(envs, EnvironmentsOptions):
        return []
    if host.env in envs.policies:
        return []
    return [ConfigError("lgf.env", f"unknown environment {host.env!r} (known: {', '.join(envs.names())})",
                        opt.nearest(host.env, envs.policies))]


def policy_of(config) -> EnvPolicy:
    """The policy of the config's ``[lgf] env``."""
    envs = (getattr(config, "sections", {}) or {}).get("environments")
    env = config.host.env
    return envs.policy(env) if isinstance(envs, EnvironmentsOptions) else DEFAULT_POLICIES.get(env, DEFAULT_POLICIES["prod"])
