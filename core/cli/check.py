"""``lgf check CONFIG``: validate a config without running it; exit 2 with every problem."""

from __future__ import annotations

import argparse

HELP = "validate a config without running it"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config")


def run(args: argparse.Namespace) -> int:
    from lgf.run import load

    manager, config = load(args.config)
    counts = {k: len(config.of_kind(k)) for k in ("source", "enricher", "classifier", "sink")}
    print(f"{args.config}: ok (" + ", ".join(f"{n} {k}(s)" for k, n in counts.items()) + ")")
    return 0
