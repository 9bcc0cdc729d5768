"""Which durable queue belongs to which sink, checked before any sink starts.

Why: queues used to be named after the sink's position (``sinks[1]`` -> ``sinks_1_.db``), so
reordering the ``[[sinks]]`` tables, or adding one above, made another sink inherit and send the
old one's pending alerts. Now a queue is named after its sink's ``name`` (which defaults to its
``use``; see ``lgf.config``) and records the ``use`` of the sink that wrote it (``lgf.spool``).

``check(config)`` returns one ``ConfigError`` per problem, with the sink's key path, and the host
refuses to start on any (exit 2), before a sink or source runs:

* a queue named after a sink but written by a sink of another ``use``, still holding items:
  nothing may go to the wrong place, and nothing is deleted (an empty one is simply taken over);
* two sink names that make one file name (``a/b`` and ``a_b``);
* a queue left by an older lgf under a position name (``sinks_1_.db``, no recorded ``use``) that
  no sink is named after, still holding items: it cannot say which sink it was for, so lgf does
  not guess; ``lgf spool adopt 'sinks[1]' NAME`` gives it to the sink NAME (or name that sink
  ``"sinks[1]"``). An empty one is left alone.

Cost: one read-only SQLite open per existing queue file, at start-up only.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from .errors import ConfigError
from .spool import recorded_use, spool_path

LEGACY_NAME = re.compile(r"sinks_(\d+)_")
"""The file stem of a queue named by position before sinks had stable names."""


def _items(path: Path) -> int:
    """Rows (pending + failed) in the queue at ``path``; 0 when it has no items table."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return 0
    try:
        return db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    except sqlite3.Error:
        return 0
    finally:
        db.close()


def check(config) -> list[ConfigError]:
    """Every queue problem of ``config``'s sinks (see the module docstring); empty when all is well."""
    spool_dir = Path(config.host.spool_dir)
    sinks = config.of_kind("sink")
    errors: list[ConfigError] = []
    files: dict[Path, object] = {}
    for cc in sinks:
        path = spool_path(spool_dir, cc.name)
        other = files.setdefault(path, cc)
        if other is not cc:
            errors.append(ConfigError(f"{cc.path}.name", f"{cc.name!r} and {other.name!r} ({other.path}) "
                                      f"would share one queue file, {path.name}", "choose names that differ "
                                      "in letters, digits, '.', '_' or '-'"))
            continue
        if not path.exists():
            continue
        use = recorded_use(path)
        if use is not None and use != cc.use and _items(path):
            errors.append(ConfigError(
                f"{cc.path}.name", f"the queue {path} holds {_items(path)} item(s) of a {use!r} sink that "
                f"was named {cc.name!r}; this {cc.use!r} sink will not send them, and they are kept",
                f"rename this sink, or give the {use!r} sink back its name; `lgf spool list {cc.name}` "
                "shows the items"))
    if not spool_dir.is_dir():
        return errors
    for path in sorted(spool_dir.glob("sinks_*_.db")):
        m = LEGACY_NAME.fullmatch(path.stem)
        if not m or path in files or recorded_use(path) is not None:
            continue
        n = _items(path)
        if not n:
            continue
        old = f"sinks[{m.group(1)}]"
        errors.append(ConfigError(
            old, f"{path} holds {n} item(s) queued by an older lgf, which named queues by position; "
            "it cannot say which sink they were for, and lgf will not guess",
            f"stop lgf and run `lgf spool adopt '{old}' NAME -c {config.path}` with the name of the sink "
            f"they were for, or name that sink \"{old}\", or move the file away"))
    return errors
