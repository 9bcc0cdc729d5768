"""The ``lgf`` command.

    lgf run CONFIG                       trace, alert, deliver; SIGINT/SIGTERM stop cleanly (exit 0)
    lgf check CONFIG                     validate without running: exit 0, or 2 with every problem
    lgf plugins [--json]                 every plugin, what it provides, where it came from
    lgf replay FILE --config CONFIG      a recorded msgpack/JSONL file through the same pipeline
    lgf inspect PID|BINARY [--json]      what lgf knows about a Go binary and where probes go
    lgf symbolize BINARY [--addr2line]   hex PCs on stdin -> frames
    lgf silence add|list|expire ...      silences on the running lgf (over its local HTTP API)
    lgf spool list|retry|drop ...        the durable sink queues (retry/drop need lgf stopped)

Exit codes: 0 ok, 1 runtime failure, 2 bad config or usage.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from .errors import ConfigErrors, LgfError

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2

DELEGATED = {
    "inspect": ("lgf.sources.inspect_cmd", "what lgf knows about a Go binary or process"),
    "symbolize": ("lgf.sources.symbolize_cmd", "turn hex PCs on stdin into Go frames"),
    "silence": ("lgf.silence_cmd", "add, list or expire silences on the running lgf"),
    "spool": ("lgf.spool_cmd", "list, requeue or drop what a sink could not deliver"),
}
"""Subcommands whose own module parses the rest of the command line (``main(argv) -> int``)."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in DELEGATED:
        module = importlib.import_module(DELEGATED[argv[0]][0])
        _setup_logging("info")
        return module.main(argv[1:])
    args = _parser().parse_args(argv)
    _setup_logging(getattr(args, "log_level", None) or "info")
    try:
        return args.func(args)
    except ConfigErrors as exc:
        _print_config_errors(exc)
        return EXIT_CONFIG
    except LgfError as exc:
        print(f"lgf: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lgf", description="Watch Go services with eBPF; alert on stalls.",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n  lgf check plugins.toml\n  sudo lgf run plugins.toml\n"
                                       "  lgf replay /tmp/lgf/stalls.jsonl --config plugins.toml")
    p.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("run", help="trace the configured targets until stopped")
    s.add_argument("config")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("check", help="validate a config without running it")
    s.add_argument("config")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("plugins", help="list plugins and the components they provide")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_plugins)

    s = sub.add_parser("replay", help="feed a recorded event file through the pipeline")
    s.add_argument("file")
    s.add_argument("--config", required=True)
    s.set_defaults(func=cmd_replay)

    for name, (_, help_text) in DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return p


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="lgf: %(levelname)s: %(message)s")
    for lvl in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR):
        logging.addLevelName(lvl, logging.getLevelName(lvl).lower())


def _print_config_errors(exc: ConfigErrors) -> None:
    print(f"lgf: {len(exc.errors)} problem(s) in the config:", file=sys.stderr)
    for err in exc.errors:
        print(f"  {err}", file=sys.stderr)


def cmd_check(args) -> int:
    from .run import load

    manager, config = load(args.config)
    counts = {k: len(config.of_kind(k)) for k in ("source", "enricher", "classifier", "sink")}
    print(f"{args.config}: ok (" + ", ".join(f"{n} {k}(s)" for k, n in counts.items()) + ")")
    return EXIT_OK


def cmd_run(args) -> int:
    from .run import open_host

    host = open_host(args.config)
    return host.run()


def cmd_replay(args) -> int:
    from .event import read_events
    from .run import open_host

    host = open_host(args.config, with_sources=False)
    try:
        n = host.replay(read_events(args.file))
    except (OSError, ValueError) as exc:
        host.shutdown()
        print(f"lgf: error: {args.file}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"lgf: replayed {n} event(s) from {args.file}", file=sys.stderr)
    return EXIT_OK


def cmd_plugins(args) -> int:
    from .manager import make_manager

    manager = make_manager()
    manager.components()  # fills each plugin's component list
    rows = [{"name": i.name, "origin": i.origin, "hooks": i.hooks,
             "components": [f"{c.kind}:{c.use}" for c in i.components]} for i in manager.infos.values()]
    if args.json:
        print(json.dumps({"plugins": rows, "failed": [str(f) for f in manager.failures]}, indent=2))
        return EXIT_OK
    width = max((len(r["name"]) for r in rows), default=10)
    for r in rows:
        provides = ", ".join(r["components"]) or "hooks: " + ", ".join(r["hooks"])
        print(f"{r['name']:<{width}}  {r['origin']:<24}  {provides}")
    for f in manager.failures:
        print(f"FAILED  {f}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
