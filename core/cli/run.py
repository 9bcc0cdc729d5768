"""``lgf run CONFIG``: build the host from a config and trace until SIGINT/SIGTERM (exit 0)."""

from __future__ import annotations

import argparse

HELP = "trace the configured targets until stopped"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config")


def run(args: argparse.Namespace) -> int:
    from lgf.run import open_host

    host = open_host(args.config)
    return host.run()
