"""Three structural rules of lgf's product code, checked by ``make lint``.

**1. Layering: every import points into core.**

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
Imports are read with ``ast`` (relative ones resolved against the module's own package), so
nothing is imported to check them.

**2. No import cycle among lgf's modules.** An import cycle means two modules can only be read
(and loaded) together: neither is a layer the other stands on. Every import statement counts, at
module level, inside a function (a "lazy" import hides a cycle, it does not break it) and under
``if TYPE_CHECKING:`` (the types still say each module needs the other). An edge goes from a
module to the module it names: ``from lgf import hookimpl`` to ``lgf`` (the package's
``__init__``), ``from lgf import config`` and ``from . import config`` to ``lgf.config`` (a
submodule), ``import lgf.golang.symbols`` to ``lgf.golang.symbols``; the parent packages a
submodule import also loads are not counted (Python loads them first, before the submodule, so
they never close a cycle unless they import back, which is then an edge of their own). Each cycle
is reported once, as one closed path through the modules of a strongly connected component.

**3. No module-level state.** Two hosts in one process (tests, ``lgf replay`` beside ``lgf run``)
must share nothing; live objects belong to the host (``lgf.services``), never to a module. In
product code (core/ sources/ plugins/ sinks/, except ``core/demo/``, which is a demo program):

* a ``global`` statement is an error;
* a name bound at module level (also inside a top-level ``if``/``try``/``with``), or as a class
  attribute of a top-level class, to a mutable container is an error: a dict, list or set display
  or comprehension, or a call of ``dict``, ``list``, ``set``, ``bytearray``, ``deque``,
  ``defaultdict``, ``OrderedDict``, ``Counter``, ``ChainMap``, ``WeakValueDictionary``,
  ``WeakKeyDictionary`` or ``WeakSet`` (bare or qualified, ``collections.deque``);
* unless the name is an UPPER_CASE constant (``SECTIONS``, ``_SCHEMA``; also ``__all__`` and
  ctypes' ``_fields_``, whose names Python fixes) that the module never
  mutates: no ``NAME.append/extend/insert/add/update/setdefault/pop/popitem/remove/discard/clear/
  sort/reverse/appendleft/extendleft/...(...)``, no ``NAME[k] = v``, ``del NAME[k]``,
  ``NAME[k] += v`` or ``NAME += ...`` anywhere in the module. A constant table is configuration
  written in code; a mutated one is a registry, and a registry of live objects is state.

Allowed by name (``ALLOWED_STATE``, each with its reason): ``lgf.golang.gobinary``'s cache of
parsed binaries, keyed by the file's identity and its Go build id. What it holds are facts of a
file (the same for every host that reads it, like the page cache), and every tier of every host,
sources included, reaches it through ``open_binary``; a per-host cache would parse each binary
once per host for nothing. Its size is bounded (``MAX_CACHED``).

Not covered, on purpose: ``functools.cache`` on a pure function of its arguments (a fact about
the machine or a class, the same for every host); objects that are not containers (a module-level
``Foo()``), which are reviewed by hand; mutation of a constant from another module.

``make lint`` runs this file; tests/test_layering.py checks each rule on the real tree and shows
it failing on a small tree made to break it.

Usage: python tests/support/layering.py [ROOT]   (exit 1 and one line per problem)
"""

from __future__ import annotations

import ast
import re
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


def from_module(node: ast.ImportFrom, package: str) -> str:
    """The absolute module a ``from ... import`` in ``package`` names (relative ones resolved)."""
    if not node.level:
        return node.module or ""
    base = package.split(".")
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path, package: str) -> list[tuple[int, str]]:
    """``(line, absolute module)`` for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = from_module(node, package)
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


# --- 2. import cycles ------------------------------------------------------------------------------

def modules(root: Path) -> dict[str, Path]:
    """Every lgf module of the tree: dotted name -> file."""
    out = {}
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            out[module_name(root, path)[0]] = path
    return out


def import_edges(root: Path) -> dict[str, dict[str, int]]:
    """``{module: {imported lgf module: first line}}`` for every import statement of every module
    (module level, in functions, under ``TYPE_CHECKING``), see rule 2 of the docstring."""
    mods = modules(root)
    edges: dict[str, dict[str, int]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        out = edges.setdefault(name, {})
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mod = from_module(node, package)
                # `from pkg import sub` imports the submodule pkg.sub; `from pkg import name` pkg
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names]
            for target in targets:
                if target in mods and target != name:
                    out.setdefault(target, node.lineno)
    return edges


def _components(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, {}))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def _cycle_in(graph: dict[str, dict[str, int]], comp: list[str]) -> list[str]:
    """One closed path through ``comp``, from its first module back to it (breadth-first)."""
    members = set(comp)
    start = comp[0]
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph.get(node, {})):
                if child not in members:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if child not in came_from:
                    came_from[child] = node
                    nxt.append(child)
        frontier = nxt
    return comp


def import_cycles(root: Path) -> list[str]:
    """One line per import cycle: ``a (core/a.py:3) -> b (core/b.py:7) -> a``."""
    graph = import_edges(root)
    mods = modules(root)
    problems = []
    for comp in _components(graph):
        path = _cycle_in(graph, comp)
        steps = [f"{a} ({mods[a].relative_to(root)}:{graph[a][b]})" for a, b in zip(path, path[1:], strict=False)]
        extra = f" [{len(comp)} modules in the knot: {', '.join(comp)}]" if len(comp) > len(path) - 1 else ""
        problems.append("import cycle: " + " -> ".join([*steps, path[-1]]) + extra)
    return problems


# --- 3. module-level state -------------------------------------------------------------------------

STATE_FOLDERS = ("core", "sources", "plugins", "sinks")
EXEMPT = ("core/demo/",)
"""Folders (relative, with a trailing slash) rule 3 does not apply to: the demo is a Go program's
driver, not product code a host runs."""

ALLOWED_STATE = {
    ("core/golang/gobinary.py", "_by_build_id"): "parsed facts of files, by Go build id: the same for every host",
    ("core/golang/gobinary.py", "_by_file"): "parsed facts of files, by file identity: the same for every host",
}
"""``(file, name)`` -> why this module-level container is not per-host state (see the docstring)."""

MUTABLE_CALLS = {"dict", "list", "set", "bytearray", "deque", "defaultdict", "OrderedDict", "Counter",
                 "ChainMap", "WeakValueDictionary", "WeakKeyDictionary", "WeakSet"}
MUTATORS = {"append", "extend", "insert", "add", "update", "setdefault", "pop", "popitem", "remove",
            "discard", "clear", "sort", "reverse", "appendleft", "extendleft", "popleft", "rotate",
            "difference_update", "intersection_update", "symmetric_difference_update", "move_to_end",
            "__setitem__", "__delitem__"}
_CONSTANT = re.compile(r"^(_*[A-Z][A-Z0-9_]*|__[a-z_]+__|_fields_)$")
"""UPPER_CASE, or a name Python or ctypes gives a meaning (``__all__``, ``_fields_``)."""


def _is_mutable(value: ast.expr | None) -> bool:
    if isinstance(value, (ast.Dict, ast.List, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)):
        return True
    if isinstance(value, ast.Call):
        func = value.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        return name in MUTABLE_CALLS
    return False


def _top_level(body: list[ast.stmt]):
    """Statements run at module level: the body, and the bodies of top-level if/try/with/for."""
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.For, ast.While, ast.With)):
            yield from _top_level(node.body)
            yield from _top_level(getattr(node, "orelse", []))
        elif isinstance(node, ast.Try):
            for part in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                yield from _top_level(part)


def _bound(node: ast.stmt) -> list[tuple[str, ast.expr | None]]:
    if isinstance(node, ast.Assign):
        return [(t.id, node.value) for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [(node.target.id, node.value)]
    return []


def _mutated(tree: ast.AST) -> set[str]:
    """Names the module mutates in place: ``N.append(...)``, ``N[k] = v``, ``del N[k]``, ``N += x``
    (also ``self.N``/``cls.N``/``Class.N`` for class attributes: the last name counts)."""

    def root(expr: ast.expr) -> str:
        if isinstance(expr, ast.Name):
            return expr.id
        if isinstance(expr, ast.Attribute):
            return expr.attr
        return ""

    out = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in MUTATORS):
            out.add(root(node.func.value))
        targets = []
        if isinstance(node, (ast.Assign, ast.Delete)):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
            if isinstance(node, ast.AugAssign):
                out.add(root(node.target))
        for t in targets:
            if isinstance(t, ast.Subscript):
                out.add(root(t.value))
    out.discard("")
    return out


def module_state(root: Path) -> list[str]:
    """One line per ``global`` statement or module-level mutable binding (rule 3)."""
    problems = []
    for folder in STATE_FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel.startswith(EXEMPT):
                continue
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Global):
                    problems.append(f"{rel}:{node.lineno}: global {', '.join(node.names)}: module-level "
                                    "state; keep it on an object the host makes (lgf.services)")
            mutated = _mutated(tree)
            scopes = [("", tree.body)] + [(f"{n.name}.", n.body) for n in tree.body if isinstance(n, ast.ClassDef)]
            for prefix, body in scopes:
                for node in _top_level(body) if not prefix else body:
                    for name, value in _bound(node):
                        if not _is_mutable(value) or (rel, prefix + name) in ALLOWED_STATE:
                            continue
                        if not _CONSTANT.match(name):
                            problems.append(f"{rel}:{node.lineno}: {prefix}{name} is a mutable container at "
                                            f"{'class' if prefix else 'module'} level: state shared by every host "
                                            "(make it per host, or an UPPER_CASE constant never mutated)")
                        elif name in mutated:
                            problems.append(f"{rel}:{node.lineno}: {prefix}{name} is UPPER_CASE but mutated in "
                                            "the module: a registry, not a constant (make it per host)")
    return problems


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[2]
    failed = 0
    for check, what in ((wrong_way_imports, "wrong-way import(s): every import must point into core"),
                        (import_cycles, "import cycle(s) among lgf's modules"),
                        (module_state, "global statement(s) or module-level mutable state")):
        problems = check(root)
        for p in problems:
            print(p)
        if problems:
            print(f"layering: {len(problems)} {what}", file=sys.stderr)
            failed = 1
    if not failed:
        print("layering: ok (imports point into core, no import cycle, no module-level state)")
    return failed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
