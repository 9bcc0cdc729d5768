"""The layering rule, checked: every import points into core.

    core/      (``lgf``, ``lgf.golang``, ``lgf.bpf``, ``lgf.cli`` ...) imports only core
    sources/   (``lgf.sources``)  imports core and its own folder
    plugins/   (``lgf.plugins``)  imports core and its own folder
    sinks/     (``lgf.sinks``)    imports core and its own folder

and inside core, ``lgf.golang`` (core/golang/) reads Go binaries and processes as data: it decides
nothing and emits nothing, so it imports no event, idle verdict, BPF program or host service
(``READER_MAY_NOT``); the goroutine sampler and the run-queue reader, which do, are the uprobe
source's (``lgf.sources.uprobe``).

Why: a folder says the layer. A plugin that imports a source, or core that imports a plugin, ties
parts together that a user configures separately (``use = ...``) and hides what each needs.
``make lint`` runs this file; tests/test_layering.py checks it on the real tree and shows it
failing on a wrong-way import. Imports are read with ``ast`` (relative ones resolved against the
module's own package), so nothing is imported to check them.

Usage: python tests/support/layering.py [ROOT]   (exit 1 and one line per wrong-way import)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

FOLDERS = {"core": "lgf", "sources": "lgf.sources", "plugins": "lgf.plugins", "sinks": "lgf.sinks"}
"""Top-level folder -> the package it is installed as (pyproject's package-dir)."""

LEAVES = ("lgf.sources", "lgf.plugins", "lgf.sinks")
"""The component layers: each may import core and itself, nothing of another leaf."""

READER = "lgf.golang"
READER_MAY_NOT = ("lgf.event", "lgf.Event", "lgf.idle", "lgf.bpf", "lgf.services")
"""What the Go reading library must not import: emitting, judging and probing are a source's jobs."""


def module_name(root: Path, path: Path) -> tuple[str, str]:
    """``(module, package)`` of a .py file under one of FOLDERS."""
    rel = path.relative_to(root)
    parts = list(rel.with_suffix("").parts)
    pkg_parts = [FOLDERS[parts[0]], *parts[1:-1]]
    package = ".".join(pkg_parts)
    name = package if parts[-1] == "__init__" else f"{package}.{parts[-1]}"
    return name, package


def imports_of(path: Path, package: str) -> list[tuple[int, str]]:
    """``(line, absolute module)`` for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from lgf import arming` imports lgf.arming: judge the submodule, not the package
            out += [(node.lineno, f"{mod}.{a.name}" if mod in ("lgf", *LEAVES) else mod) for a in node.names]
    return out


def layer_of(module: str) -> str:
    """``lgf.sources`` / ``lgf.plugins`` / ``lgf.sinks`` for a component module, ``lgf`` for core,
    ``""`` for anything not lgf's."""
    if module != "lgf" and not module.startswith("lgf."):
        return ""
    for leaf in LEAVES:
        if module == leaf or module.startswith(leaf + "."):
            return leaf
    return "lgf"


def wrong_way_imports(root: Path) -> list[str]:
    """One line per import that breaks the rule, ``path:line: A imports B (why)``."""
    problems = []
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            name, package = module_name(root, path)
            mine = layer_of(name)
            for line, target in imports_of(path, package):
                if (name == READER or name.startswith(READER + ".")) and any(
                        target == m or target.startswith(m + ".") for m in READER_MAY_NOT):
                    problems.append(f"{path.relative_to(root)}:{line}: {name} imports {target} "
                                    f"({READER} reads Go binaries and processes as data: emitting, "
                                    "judging and probing are a source's jobs)")
                    continue
                theirs = layer_of(target)
                if not theirs or theirs == "lgf" or theirs == mine:
                    continue
                who = "core" if mine == "lgf" else mine
                problems.append(f"{path.relative_to(root)}:{line}: {name} imports {target} "
                                f"({who} may import only core{'' if mine == 'lgf' else ' and its own folder'})")
    return problems


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[2]
    problems = wrong_way_imports(root)
    for p in problems:
        print(p)
    if problems:
        print(f"layering: {len(problems)} wrong-way import(s): every import must point into core", file=sys.stderr)
        return 1
    print("layering: ok (every import points into core)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
