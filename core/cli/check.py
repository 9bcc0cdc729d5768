"""``lgf check CONFIG``: validate a config without running it; exit 2 with every problem."""

from __future__ import annotations

import argparse

from lgf import overrides

HELP = "validate a config without running it"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config")
    overrides.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    from lgf.run import load

    given = overrides.from_args(args)
    manager, config = load(args.config, overrides=given)
    counts = {k: len(config.of_kind(k)) for k in ("source", "enricher", "classifier", "sink")}
    print(f"{args.config}: ok (" + ", ".join(f"{n} {k}(s)" for k, n in counts.items()) + ")")
    print("  " + overrides.describe(config))
    for key, value, _ in given:
        print(f"  override: {key} = {value}")
    return 0
