"""``lgf plugins [--json]``: every plugin, what it provides and where it came from."""

from __future__ import annotations

import argparse
import json

HELP = "list plugins and the components they provide"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from lgf.manager import make_manager

    manager = make_manager()
    manager.components()  # fills each plugin's component list
    rows = [{"name": i.name, "origin": i.origin, "hooks": i.hooks,
             "components": [f"{c.kind}:{c.use}" for c in i.components]} for i in manager.infos.values()]
    if args.json:
        print(json.dumps({"plugins": rows, "failed": [str(f) for f in manager.failures]}, indent=2))
        return 0
    width = max((len(r["name"]) for r in rows), default=10)
    for r in rows:
        provides = ", ".join(r["components"]) or "hooks: " + ", ".join(r["hooks"])
        print(f"{r['name']:<{width}}  {r['origin']:<24}  {provides}")
    for f in manager.failures:
        print(f"FAILED  {f}")
    return 0
