"""Option help at run time, from the attribute docstrings the option dataclasses already have.

An options dataclass documents a field with a string right after it (PEP 257's "attribute
docstring", as Sphinx reads them)::

    threshold: Duration = Duration(50_000_000)
    "A stall shorter than this is counted, never reported."

Python drops those strings at run time; :func:`option_help` reads them back from the class's
source with ``ast``, so the help is written once, beside the field, and is what
``lgf plugins --options`` prints and what README's option tables are generated from
(``make docs``; ``tests/test_docs.py`` fails when README is stale). Cost: one parse of the
class's source per call; nothing on the event path.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import re
import textwrap
import types
import typing
from typing import Any, Literal, get_args, get_origin

from .options import Duration, Size


@functools.cache
def option_help(cls: type) -> dict[str, str]:
    """``{field: help}`` for every field of the dataclass ``cls`` (and its dataclass bases) that
    has an attribute docstring; whitespace is folded to single spaces."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):  # no source (built in a REPL): no help
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for stmt, after in zip(body, body[1:], strict=False):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                out[stmt.target.id] = " ".join(after.value.value.split()).replace("``", "`")
    return out


def format_duration(ns: int) -> str:
    for unit, size in (("h", 3_600_000_000_000), ("m", 60_000_000_000), ("s", 1_000_000_000),
                       ("ms", 1_000_000), ("us", 1_000)):
        if ns and ns % size == 0:
            return f"{ns // size}{unit}"
    if ns >= 1_000_000_000:
        return f"{ns / 1e9:g}s"
    return f"{ns}ns"


def format_size(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def type_name(tp: Any) -> str:
    """How a field's type reads in the docs: ``duration``, ``"a" | "b"``, ``list of str`` ..."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Duration:
        return "duration"
    if tp is Size:
        return "size"
    if origin is Literal:
        return " \\| ".join(f'"{a}"' if isinstance(a, str) else repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        inner = [type_name(a) for a in args if a is not type(None)]
        return " \\| ".join(inner) + (" or none" if type(None) in args else "")
    if origin is list:
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict or tp is dict:
        return "table"
    return getattr(tp, "__name__", str(tp))


def default_text(f: dataclasses.Field, tp: Any) -> str:
    """The default as it would be written in TOML, or ``required``."""
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    base = [a for a in get_args(tp) if a is not type(None)] or [tp]
    if value is None:
        return "none"
    if base[0] is Duration or tp is Duration:
        return f'"{format_duration(value)}"'
    if base[0] is Size or tp is Size:
        return f'"{format_size(value)}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict) and not value:
        return "{}"
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def options_rows(cls: type) -> list[tuple[str, str, str, str]]:
    """``(key, type, default, help)`` for each field of ``cls``, in declaration order."""
    hints = typing.get_type_hints(cls)
    helps = option_help(cls)
    return [(f.name, type_name(hints[f.name]), default_text(f, hints[f.name]), helps.get(f.name, ""))
            for f in dataclasses.fields(cls)]


def markdown_table(cls: type) -> str:
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key, tname, default, text in options_rows(cls):
        text = text.replace("|", "\\|")
        lines.append(f"| `{key}` | {tname} | `{default}` | {text} |")
    return "\n".join(lines)


# -- README blocks -------------------------------------------------------------------------------

BLOCK = re.compile(r"(<!-- options: (?P<key>[\w:-]+) -->\n)(?P<body>.*?)(<!-- /options -->)", re.S)
"""``<!-- options: KEY -->`` ... ``<!-- /options -->`` in README: regenerated, never edited."""


def _builtin_components() -> dict:
    from .manager import make_manager
    return make_manager(entry_points=False).components()


def render_block(key: str, components: dict | None = None) -> str:
    """The text of one README block: ``section:NAME`` (a typed top-level section), ``components``
    (the table of built-in components) or ``component-options`` (a table per component)."""
    from .config import SECTIONS
    kind, _, name = key.partition(":")
    if kind == "section":
        return markdown_table(SECTIONS[name]) + "\n"
    comps = components if components is not None else _builtin_components()
    order = {k: i for i, k in enumerate(("source", "enricher", "classifier", "sink"))}
    # What a table can name: an always-on component (the scope step) takes no table.
    ordered = sorted((c for c in comps.values() if not c.always), key=lambda c: (order[c.kind], c.use))
    if kind == "components":
        lines = ["| kind | `use` | what it does | options |", "| --- | --- | --- | --- |"]
        for c in ordered:
            keys = ", ".join(f"`{f.name}`" for f in dataclasses.fields(c.options)) if c.options else "none"
            lines.append(f"| {c.kind} | `{c.use}` | {c.doc} | {keys} |")
        return "\n".join(lines) + "\n"
    if kind == "component-options":
        parts = [f"`{c.kind}` `{c.use}`:\n\n{markdown_table(c.options)}\n" for c in ordered if c.options]
        return "\n".join(parts)
    raise KeyError(f"unknown options block {key!r}")


def render_readme(text: str) -> str:
    """``text`` with every options block regenerated from the code."""
    comps = _builtin_components()
    return BLOCK.sub(lambda m: m.group(1) + render_block(m.group("key"), comps) + m.group(4), text)
