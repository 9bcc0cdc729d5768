"""The docs hold: option help is written once, beside each field, and docs/configuration.md's
option tables are generated from it; README stays the short page a newcomer reads first; every
link between the pages resolves; no comment cites a file the repository does not hold."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from lgf.config import HostOptions
from lgf.optdoc import BLOCK, option_help, options_rows, render_readme
from lgf.options import Duration
from support.cli import lgf

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Sample:
    plain: int = 1
    """First line,
    second line."""
    undocumented: str = "x"
    timeout: Duration = Duration(5_000_000_000)
    """Per request; a ``timeout`` is retried."""


def test_option_help_reads_the_field_docstrings_at_run_time():
    assert option_help(Sample) == {"plain": "First line, second line.",
                                   "timeout": "Per request; a `timeout` is retried."}
    assert options_rows(Sample)[2] == ("timeout", "duration", '"5s"', "Per request; a `timeout` is retried.")
    assert option_help(HostOptions)["threshold"].startswith("A stall shorter than this")


CONFIGURATION = ROOT / "docs" / "configuration.md"
PAGES = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").glob("*.md")])
"""Every Markdown page of the repository's docs."""


def test_configuration_option_tables_are_generated_from_the_code():
    text = CONFIGURATION.read_text()
    assert text.count("<!-- options: ") >= 4
    assert render_readme(text) == text, "docs/configuration.md's option tables are stale: run `make docs`"


def test_option_tables_live_only_in_the_configuration_reference():
    # One home: `make docs` regenerates docs/configuration.md only, so a block elsewhere would go stale.
    others = [p.relative_to(ROOT) for p in PAGES if p != CONFIGURATION and BLOCK.search(p.read_text())]
    assert others == []


def test_a_stale_table_is_caught():
    text = CONFIGURATION.read_text()
    stale = text.replace("Stalls of one process closer than this", "Old words", 1)
    assert stale != text and render_readme(stale) == text


def test_make_docs_check_fails_on_a_stale_file(tmp_path):
    from lgf.cli.docs import main

    stale = tmp_path / "configuration.md"
    stale.write_text(CONFIGURATION.read_text().replace("Stalls of one process closer than this", "Old", 1))
    assert main(["--check", str(CONFIGURATION)]) == 0
    assert main(["--check", str(stale)]) == 1
    assert main([str(stale)]) == 0 and stale.read_text() == CONFIGURATION.read_text()


def test_readme_is_the_short_page_a_newcomer_reads_first():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 350, "README.md grew past ~350 lines: move reference into docs/"
    for heading in ("## Two commands", "## First run", "## What it looks like", "## What it needs",
                    "## What it costs", "## How it works", "## Where to read more"):
        assert heading in text, heading


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, all but word characters, hyphens and spaces
    dropped (backticks, brackets, colons...), each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        base = _slug(line.lstrip("#").strip())
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_every_link_between_the_pages_resolves():
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (page.parent / file).resolve() if file else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def test_no_comment_cites_a_file_the_repository_does_not_hold():
    # Two design notes were cited for years and never committed: a citation must lead somewhere.
    missing = []
    for folder in ("core", "sources", "plugins", "sinks", "tests", "bench", "deploy"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix not in (".py", ".c", ".h", ".go", ".sh", ".toml", ".yaml") or "thirdparty" in path.parts:
                continue
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                for cited in re.findall(r"\b([\w./-]*[A-Za-z]\.md)\b", line):
                    if not any((base / cited).exists() for base in (ROOT, ROOT / "docs", path.parent)):
                        missing.append(f"{path.relative_to(ROOT)}:{n}: {cited}")
    assert missing == []


def test_lgf_plugins_options_lists_keys_defaults_and_help():
    res = lgf("plugins", "--options", "--json")
    assert res.returncode == 0, res.stderr
    options = json.loads(res.stdout)["options"]
    rows = {r["key"]: r for r in options["sink:file"]}
    assert rows["path"]["default"] == "required"
    assert rows["max_size"] == {"key": "max_size", "type": "size", "default": '"64MiB"',
                                "help": "Rotate when the file would grow past this."}
    assert options["classifier:waitreason"] == []
