"""``lgf baseline [SERVICE]``: the drift-aware baselines lgf has learnt, and how far the present is.

    lgf baseline --config plugins.toml            every (service, cause) series
    lgf baseline checkout --config plugins.toml   one service's series
    lgf baseline --spool-dir /var/lib/lgf --json

Reads ``<spool_dir>/baselines.db`` read-only, so it is safe while ``lgf run`` writes it. The
environment (``[lgf] env`` of ``--config``, or ``--env``) gives σ's scale and the z that alerts.
"now" is the last finished minute lgf watched (the minute in progress is still in lgf's memory).

Exit codes: 0 ok, 1 no baselines there, 2 bad config or usage.
"""

from __future__ import annotations

import argparse
import json
import sys

from lgf import options as opt
from lgf.baselines import BaselineOptions, BaselineStore
from lgf.config import HostOptions, parse_toml
from lgf.environments import EnvironmentsOptions
from lgf.errors import ConfigErrors

HELP = "the learnt baselines per service and cause, and how far the present is (z)"
DESCRIPTION = ("Per (service, cause): the baseline's median and spread of stalls per minute, p99 and share "
               "of wall time, and the z-score of the last finished minute.")
EPILOG = "examples:\n  lgf baseline -c plugins.toml\n  lgf baseline checkout --spool-dir /var/lib/lgf --json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("service", nargs="?", help="only this service")
    p.add_argument("-c", "--config", help="plugins.toml (for spool_dir, env and [baselines])")
    p.add_argument("--spool-dir", help="where lgf keeps baselines.db (default: from --config, /var/lib/lgf)")
    p.add_argument("--env", help="grade as this environment (default: [lgf] env of --config, prod)")
    p.add_argument("--json", action="store_true")


def _settings(args):
    raw = parse_toml(args.config) if args.config else {}
    errors: list = []
    host = opt.build(HostOptions, raw.get("lgf") or {}, "lgf", errors) or HostOptions()
    base = opt.build(BaselineOptions, raw.get("baselines") or {}, "baselines", errors) or BaselineOptions()
    envs = EnvironmentsOptions.from_table(raw.get("environments") or {}, "environments", errors)
    if errors:
        raise ConfigErrors(errors)
    env = args.env or host.env
    return args.spool_dir or host.spool_dir, base, env, envs.policy(env)


def _num(metric: str, value: float) -> str:
    if metric == "rate":
        return f"{value:.1f}/min"
    if metric == "p99":
        return f"{value / 1e6:.1f}ms"
    return f"{value * 100:.2f}%"


def run(args: argparse.Namespace) -> int:
    try:
        spool_dir, options, env, policy = _settings(args)
    except ConfigErrors as exc:
        print(f"lgf baseline: {len(exc.errors)} problem(s) in the config:", file=sys.stderr)
        for err in exc.errors:
            print(f"  {err}", file=sys.stderr)
        return 2
    try:
        store = BaselineStore(spool_dir, options, readonly=True)
    except (FileNotFoundError, OSError) as exc:
        print(f"lgf baseline: {exc}", file=sys.stderr)
        return 1
    rows = []
    for service, cause in store.list_series():
        if args.service and service != args.service:
            continue
        grade = store.grade(service, cause, policy.sigma_scale)
        rows.append({"service": service, "cause": cause, **grade})
    if args.json:
        print(json.dumps({"env": env, "sigma_scale": policy.sigma_scale, "k": policy.drift_z,
                          "series": rows}, indent=2))
        return 0
    print(f"env {env}: sigma x {policy.sigma_scale:g}, alert at z >= {policy.drift_z:g}; "
          f"now = the last finished minute")
    print(f"{'SERVICE':<16} {'CAUSE':<14} {'STATUS':<12} {'HISTORY':>8}  METRIC  {'MU':>11} {'SIGMA':>11} "
          f"{'NOW':>11} {'Z':>7}")
    for r in rows:
        history = f"{r.get('history_minutes', 0) / 60:.1f}h"
        metrics = r.get("metrics") or {}
        if not metrics:
            print(f"{r['service']:<16} {r['cause']:<14} {r['status']:<12} {history:>8}")
        for i, (metric, m) in enumerate(metrics.items()):
            head = (f"{r['service']:<16} {r['cause']:<14} {r['status']:<12} {history:>8}" if i == 0
                    else " " * 53)
            print(f"{head}  {metric:<6}  {_num(metric, m['mu']):>11} {_num(metric, m['sigma']):>11} "
                  f"{_num(metric, m['now']):>11} {m['z']:>7.2f}")
    if not rows:
        print("no series" + (f" for service {args.service!r}" if args.service else ""), file=sys.stderr)
    return 0
