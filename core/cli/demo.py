"""``lgf demo``: build a Go program that stalls in every way lgf knows and watch it (see lgf.demo)."""

from __future__ import annotations

import argparse

HELP = "watch a Go program that stalls on purpose: real stalls and alerts within a minute"
DESCRIPTION = (HELP + ".\n\nBuilds lgf's demo program (needs a Go toolchain >= 1.21), runs it, and traces it "
               "with the shipped config (plus the tracepoint source, for syscall stalls). Stalls go to "
               "stdout, the program's own account of each to stderr; the latency page is at "
               "http://LISTEN/ui. Needs root, like lgf run.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (default: until Ctrl-C)")
    p.add_argument("--listen", default="127.0.0.1:9464", help="[http] listen for the page and /metrics")
    p.add_argument("--config", default=None, help="a config to use instead of the shipped plugins.toml")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lgf import demo

    try:
        return demo.run(seconds=args.seconds, listen=args.listen,
                        config_path=Path(args.config) if args.config else demo.SHIPPED_CONFIG)
    except demo.DemoError as exc:
        print(f"lgf: demo: {exc}")
        return 1
