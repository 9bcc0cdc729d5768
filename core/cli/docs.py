"""Regenerate the option tables of the docs from the option dataclasses (``make docs``).

    python -m lgf.cli.docs                  rewrite the blocks of docs/configuration.md in place
    python -m lgf.cli.docs FILE...          the same for these files
    python -m lgf.cli.docs --check FILE...  exit 1 if any file is stale (what tests/test_docs.py checks)

Not an ``lgf`` command: it is for people editing lgf. The blocks are the
``<!-- options: KEY -->`` ... ``<!-- /options -->`` parts of a Markdown file (see ``lgf.optdoc``);
they live in docs/configuration.md, the configuration reference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT = Path("docs/configuration.md")
"""The configuration reference, relative to a checkout's root (where ``make docs`` runs)."""


def main(argv: list[str] | None = None) -> int:
    from lgf.optdoc import render_readme

    p = argparse.ArgumentParser(prog="python -m lgf.cli.docs", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if a file is stale; change nothing")
    p.add_argument("files", type=Path, nargs="*", default=[DEFAULT],
                   help=f"Markdown files holding option blocks (default: {DEFAULT})")
    args = p.parse_args(argv)
    stale = 0
    for path in args.files:
        text = path.read_text(encoding="utf-8")
        fresh = render_readme(text)
        if fresh == text:
            continue
        if args.check:
            print(f"{path}: option tables are stale; run `make docs`", file=sys.stderr)
            stale += 1
            continue
        path.write_text(fresh, encoding="utf-8")
        print(f"{path}: option tables regenerated", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
