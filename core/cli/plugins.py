"""``lgf plugins [--json] [--options]``: every plugin, what it provides and where it came from.

``--options`` adds each component's options: key, type, default and help, read from the field
docstrings of its options dataclass (``lgf.optdoc``; README's tables come from the same place).
"""

from __future__ import annotations

import argparse
import json

HELP = "list plugins and the components they provide"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")
    p.add_argument("--options", action="store_true",
                   help="also list every component's options: key, type, default, meaning")


def run(args: argparse.Namespace) -> int:
    from lgf.manager import make_manager

    manager = make_manager()
    manager.components()  # fills each plugin's component list
    rows = [{"name": i.name, "origin": i.origin, "hooks": i.hooks,
             "components": [f"{c.kind}:{c.use}" for c in i.components]} for i in manager.infos.values()]
    if args.options:
        return _print_options(manager, args.json)
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


def _print_options(manager, as_json: bool) -> int:
    from lgf.optdoc import options_rows

    comps = sorted(manager.components().values(), key=lambda c: (c.kind, c.use))
    table = {f"{c.kind}:{c.use}": [dict(zip(("key", "type", "default", "help"), row, strict=True))
                                   for row in (options_rows(c.options) if c.options else [])]
             for c in comps}
    if as_json:
        print(json.dumps({"options": table}, indent=2, ensure_ascii=False))
        return 0
    for name, rows in table.items():
        print(f"{name}" + ("" if rows else "  (no options)"))
        for r in rows:
            print(f"  {r['key']} = {r['default']}  ({r['type'].replace(chr(92), '')})")
            if r["help"]:
                print(f"      {r['help']}")
    return 0
