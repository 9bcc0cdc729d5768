"""Regenerate README's option tables from the option dataclasses (``make docs``).

    python -m lgf.cli.docs README.md          rewrite the blocks in place
    python -m lgf.cli.docs --check README.md  exit 1 if README is stale (what tests/test_docs.py checks)

Not an ``lgf`` command: it is for people editing lgf. The blocks are the
``<!-- options: KEY -->`` ... ``<!-- /options -->`` parts of README (see ``lgf.optdoc``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from lgf.optdoc import render_readme

    p = argparse.ArgumentParser(prog="python -m lgf.cli.docs", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if the file is stale; change nothing")
    p.add_argument("readme", type=Path)
    args = p.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    fresh = render_readme(text)
    if fresh == text:
        return 0
    if args.check:
        print(f"{args.readme}: option tables are stale; run `make docs`", file=sys.stderr)
        return 1
    args.readme.write_text(fresh, encoding="utf-8")
    print(f"{args.readme}: option tables regenerated", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
