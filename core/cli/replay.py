"""``lgf replay FILE --config CONFIG``: a recorded msgpack/JSONL file through the same pipeline."""

from __future__ import annotations

import argparse
import sys

HELP = "feed a recorded event file through the pipeline"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file")
    p.add_argument("--config", required=True)


def run(args: argparse.Namespace) -> int:
    from lgf.event import read_events
    from lgf.run import open_host

    host = open_host(args.config, with_sources=False)
    try:
        n = host.replay(read_events(args.file))
    except (OSError, ValueError) as exc:
        host.shutdown()
        print(f"lgf: error: {args.file}: {exc}", file=sys.stderr)
        return 1
    print(f"lgf: replayed {n} event(s) from {args.file}", file=sys.stderr)
    return 0
