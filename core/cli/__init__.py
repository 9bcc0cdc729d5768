"""The ``lgf`` command: one parser, one module per command.

    lgf run CONFIG                       trace, alert, deliver; SIGINT/SIGTERM stop cleanly (exit 0)
    lgf check CONFIG                     validate without running: exit 0, or 2 with every problem
    lgf plugins [--json] [--options]     every plugin, what it provides, where it came from
    lgf replay FILE --config CONFIG      a recorded msgpack/JSONL file through the same pipeline
    lgf inspect PID|BINARY [--json]      what lgf knows about a Go binary and where probes go
    lgf symbolize BINARY [--addr2line]   hex PCs on stdin -> frames
    lgf silence add|list|expire ...      silences on the running lgf (over its local HTTP API)
    lgf spool list|retry|drop ...        the durable sink queues (retry/drop need lgf stopped)
    lgf baseline [SERVICE]               the learnt baselines per service and cause, and their z-scores
    lgf demo [--seconds N]               a Go program that stalls on purpose, watched (see lgf.demo)
    lgf reload CONFIG                    the running lgf re-reads its config (SIGHUP; see lgf.reload)

Each command is a module of this package with ``HELP`` (one line for ``lgf -h``), optional
``DESCRIPTION`` and ``EPILOG``, ``add_arguments(parser)`` and ``run(args) -> exit code``. Global
options (``--log-level``) are accepted before or after the command name.

Exit codes: 0 ok, 1 runtime failure, 2 bad config or usage.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from lgf.errors import ConfigErrors, LgfError

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2

COMMANDS = ("run", "check", "plugins", "replay", "inspect", "symbolize", "silence", "spool", "baseline",
            "demo", "reload")
"""Command names; each is the module ``lgf.cli.<name>``."""

LOG_LEVELS = ("debug", "info", "warning", "error")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = make_parser(_named_command(argv)).parse_args(argv)
    _setup_logging(args.log_level or "info")
    try:
        return args.func(args)
    except ConfigErrors as exc:
        print_config_errors(exc)
        return EXIT_CONFIG
    except LgfError as exc:
        print(f"lgf: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _named_command(argv: list[str]) -> str | None:
    """The command ``argv`` names (its first word that is no global option), if it is one of ours."""
    words = iter(argv)
    for word in words:
        if word == "--log-level":
            next(words, None)
        elif not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def make_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line: the global options, then one subparser per module in COMMANDS.

    ``only``: just that command's subparser (what ``main`` builds when argv names a command), so a
    command imports its own module and not the other ten (``lgf symbolize`` starts ~100 ms sooner).
    """
    p = argparse.ArgumentParser(prog="lgf", description="Watch Go services with eBPF; alert on stalls.",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n  lgf check plugins.toml\n  sudo lgf run plugins.toml\n"
                                       "  lgf replay /tmp/lgf/stalls.jsonl --config plugins.toml")
    _add_global_options(p, default=None)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in (only,) if only else COMMANDS:
        module = importlib.import_module(f"lgf.cli.{name}")
        sp = sub.add_parser(name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
                            epilog=getattr(module, "EPILOG", None),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_global_options(sp, default=argparse.SUPPRESS)  # after the command too, same meaning
        module.add_arguments(sp)
        sp.set_defaults(func=module.run)
    return p


def _add_global_options(p: argparse.ArgumentParser, default) -> None:
    p.add_argument("--log-level", default=default, choices=LOG_LEVELS)


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="lgf: %(levelname)s: %(message)s")
    for lvl in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR):
        logging.addLevelName(lvl, logging.getLevelName(lvl).lower())


def print_config_errors(exc: ConfigErrors) -> None:
    print(f"lgf: {len(exc.errors)} problem(s) in the config:", file=sys.stderr)
    for err in exc.errors:
        print(f"  {err}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
