"""``lgf replay FILE --config CONFIG``: a recorded msgpack/JSONL file through the same pipeline."""

from __future__ import annotations

import argparse
import sys

HELP = "feed a recorded event file through the pipeline"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file")
    p.add_argument("--config", required=True)
    p.add_argument("--journal", action="store_true",
                   help="keep open alert groups in the alert journal of the config's spool_dir, as "
                        "`lgf run` does (and replay first what a crashed lgf left there); refused "
                        "while an lgf runs on that spool_dir")


def run(args: argparse.Namespace) -> int:
    from lgf.cli.run import tune_gc
    from lgf.event import read_events
    from lgf.run import open_host

    host = open_host(args.config, with_sources=False)
    tune_gc()  # as lgf run: start-up frozen out of the collector's scans, which run less often
    try:
        n = host.replay(read_events(args.file), with_journal=args.journal)
    except (OSError, ValueError) as exc:
        host.shutdown()
        print(f"lgf: error: {args.file}: {exc}", file=sys.stderr)
        return 1
    said = f"lgf: replayed {n} event(s) from {args.file}"
    if args.journal:
        said += (f"; alert journal {host.journal.path}: {host.journal.written} stall(s) written"
                 if host.journal is not None else "; the alert journal could not be opened (see above)")
    print(said, file=sys.stderr)
    return 0
