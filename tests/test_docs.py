"""Option help is written once, beside each field, and README's option tables are generated from it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lgf.config import HostOptions
from lgf.optdoc import option_help, options_rows, render_readme
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


def test_readme_option_tables_are_generated_from_the_code():
    text = (ROOT / "README.md").read_text()
    assert text.count("<!-- options: ") >= 4
    assert render_readme(text) == text, "README's option tables are stale: run `make docs`"


def test_a_stale_readme_table_is_caught():
    text = (ROOT / "README.md").read_text()
    stale = text.replace("Stalls of one process closer than this", "Old words", 1)
    assert stale != text and render_readme(stale) == text


def test_lgf_plugins_options_lists_keys_defaults_and_help():
    res = lgf("plugins", "--options", "--json")
    assert res.returncode == 0, res.stderr
    options = json.loads(res.stdout)["options"]
    rows = {r["key"]: r for r in options["sink:file"]}
    assert rows["path"]["default"] == "required"
    assert rows["max_size"] == {"key": "max_size", "type": "size", "default": '"64MiB"',
                                "help": "Rotate when the file would grow past this."}
    assert options["classifier:waitreason"] == []
