"""``lgf spool list|retry|drop|adopt``: what an operator does about items a sink could not deliver.

Why: a sink that fails permanently (wrong key, refused body) keeps its items on disk marked
failed (``lgf.delivery``), and lgf says so at ERROR at every start. This command shows every
spool with its pending and failed counts (``list``, safe while lgf runs: it reads without the
spool's lock), and after the cause is fixed puts the failed items back in line (``retry``) or
deletes them (``drop``). Those two write, so they take the spool's lock and refuse while lgf
holds it. ``adopt OLD NEW`` gives the queue named OLD to the sink named NEW: for queues an older
lgf named by position (``sinks[1]``), which ``lgf run`` refuses to guess an owner for
(``lgf.sinkqueues``); it records NEW's ``use`` (from the config) and renames the file.

Exit codes: 0 done, 1 no such spool or lgf still running, 2 usage (argparse).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lgf.errors import DeliveryError
from lgf.spool import Spool, SpoolView, recorded_use, spool_path

DEFAULT_SPOOL_DIR = "/var/lib/lgf"


HELP = "list, requeue or drop what a sink could not deliver"
DESCRIPTION = ("List the durable sink queues, or requeue / drop the items a sink failed to "
               "deliver permanently (wrong key, refused body). retry and drop need lgf stopped.")
EPILOG = ("examples:\n  lgf spool list -c plugins.toml\n  lgf spool list ops --spool-dir /var/lib/lgf\n"
          "  lgf spool retry ops -c plugins.toml     # after fixing the cause, before starting lgf\n"
          "  lgf spool adopt 'sinks[1]' oncall -c plugins.toml   # a queue of an older lgf, to its sink")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("list", "retry", "drop", "adopt"))
    p.add_argument("name", nargs="?", help="the sink's name (its [[sinks]] name; adopt: the old queue's)")
    p.add_argument("new_name", nargs="?", help="adopt: the name of the sink that takes the queue")
    p.add_argument("-c", "--config", help="plugins.toml, for its [lgf] spool_dir")
    p.add_argument("--spool-dir", help=f"the spool directory (default: the config's, else {DEFAULT_SPOOL_DIR})")


def run(args: argparse.Namespace) -> int:
    """``lgf spool list|retry|drop``: see and act on what sinks could not deliver. Returns the exit code."""
    spool_dir = Path(args.spool_dir or _configured_spool_dir(args.config))
    if args.action != "list" and not args.name:
        print(f"lgf spool: {args.action} needs the sink's name", file=sys.stderr)
        return 2
    if args.action == "list":
        return _list(spool_dir, args.name)
    if args.action == "adopt":
        return _adopt(spool_dir, args.name, args.new_name, args.config)
    return _retry_or_drop(args.action, spool_dir, args.name)


def _configured_spool_dir(config: str | None) -> str:
    if config:
        from lgf.config import parse_toml  # only the raw table: `lgf spool` must work with a broken config
        return str(parse_toml(config).get("lgf", {}).get("spool_dir", DEFAULT_SPOOL_DIR))
    return DEFAULT_SPOOL_DIR


def _list(spool_dir: Path, name: str | None) -> int:
    """One line per spool; with a name, also each failed item and its last error."""
    paths = [spool_path(spool_dir, name)] if name else sorted(spool_dir.glob("*.db"))
    if not paths or not paths[0].exists():
        print(f"lgf spool: no spool {'for ' + repr(name) + ' ' if name else ''}in {spool_dir}", file=sys.stderr)
        return 1
    print(f"{'spool':<30} {'pending':>8} {'failed':>8}  oldest queued (UTC)")
    for path in paths:
        with SpoolView(path) as view:
            counts, oldest = view.counts(), view.oldest_enqueued()
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(oldest)) if oldest else "-"
            print(f"{path.stem:<30} {counts['pending']:>8} {counts['failed']:>8}  {when}")
            if name:
                for event_id, attempts, error in view.failed_items():
                    print(f"  failed {event_id} after {attempts} attempt(s): {error}")
    return 0


def _retry_or_drop(action: str, spool_dir: Path, name: str) -> int:
    """Requeue or delete one sink's failed items; refused while lgf holds the spool."""
    path = spool_path(spool_dir, name)
    if not path.exists():
        print(f"lgf spool: no spool for sink {name!r} in {spool_dir}", file=sys.stderr)
        return 1
    try:
        spool = Spool(path)
    except DeliveryError as exc:
        print(f"lgf spool: {exc}; stop lgf first", file=sys.stderr)
        return 1
    try:
        if action == "retry":
            print(f"{spool.requeue_failed()} item(s) of sink {name!r} requeued; lgf delivers them "
                  "when it starts")
        else:
            print(f"{spool.drop_failed()} failed item(s) of sink {name!r} dropped")
    finally:
        spool.close()
    return 0


def _sink_use(config: str | None, name: str) -> str | None:
    """The ``use`` of the sink called ``name`` in ``config`` (raw TOML: works with a broken config)."""
    if not config:
        return None
    from lgf.config import parse_toml
    for table in parse_toml(config).get("sinks", []) or []:
        if isinstance(table, dict) and table.get("name", table.get("use")) == name:
            return table.get("use")
    return None


def _adopt(spool_dir: Path, old: str, new: str | None, config: str | None) -> int:
    """Give the queue ``old`` to the sink ``new``: record its use, rename the file. lgf must be stopped."""
    if not new:
        print("lgf spool: adopt needs the old queue's name and the new sink's name", file=sys.stderr)
        return 2
    use = _sink_use(config, new)
    if use is None:
        print(f"lgf spool: no sink named {new!r} in {config or '(no config: pass -c CONFIG)'}", file=sys.stderr)
        return 1
    old_path, new_path = spool_path(spool_dir, old), spool_path(spool_dir, new)
    if not old_path.exists():
        print(f"lgf spool: no queue {old!r} in {spool_dir}", file=sys.stderr)
        return 1
    if new_path.exists():
        print(f"lgf spool: sink {new!r} already has a queue ({new_path}); nothing changed", file=sys.stderr)
        return 1
    owner = recorded_use(old_path)
    if owner is not None and owner != use:
        print(f"lgf spool: {old_path} belongs to a {owner!r} sink; {new!r} is a {use!r} sink; nothing changed",
              file=sys.stderr)
        return 1
    try:
        spool = Spool(old_path, use=use)
    except DeliveryError as exc:
        print(f"lgf spool: {exc}; stop lgf first", file=sys.stderr)
        return 1
    counts = spool.counts()
    spool.close()  # the last connection: SQLite folds the WAL back into the file
    old_path.rename(new_path)
    print(f"queue {old!r} ({counts['pending']} pending, {counts['failed']} failed) is now sink {new!r}'s "
          f"({use}): {new_path}")
    return 0
