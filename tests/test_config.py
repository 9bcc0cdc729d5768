"""Bad config: `lgf check` and `lgf run` exit 2, name every problem by key path, start nothing."""

from __future__ import annotations

import pytest

from lgf.options import parse_duration, parse_size
from support.cli import lgf, write

GOOD = """
[lgf]
threshold = "50ms"
spool_dir = "{tmp}/spool"

[[sinks]]
use = "stdout"

[[sinks]]
use = "file"
path = "{tmp}/stalls.jsonl"
format = "jsonl"
"""


def test_check_accepts_a_good_config(tmp_path):
    cfg = write(tmp_path / "ok.toml", GOOD.format(tmp=tmp_path))
    res = lgf("check", str(cfg))
    assert res.returncode == 0, res.stderr
    assert "ok (0 source(s), 0 enricher(s), 0 classifier(s), 2 sink(s))" in res.stdout


@pytest.mark.parametrize("text, expected", [
    ("[lgf]\nthreshold = \"50ms\n", "not valid TOML"),
    ("[lgf]\ntreshold = \"50ms\"\n", "lgf.treshold: unknown key (did you mean 'threshold'?)"),
    ("[lgf]\nthreshold = 50\n", "lgf.threshold: expected a duration string like \"50ms\", got an integer (50)"),
    ("[lgf]\nthreshold = \"50 parsecs\"\n", "lgf.threshold: '50 parsecs' is not a duration"),
    ("[lgf]\nthreshold = \"0ms\"\n", "lgf.threshold: must be more than 0"),
    ("[[sinks]]\nuse = \"stdot\"\n", "sinks[0].use: unknown sink 'stdot' (did you mean 'stdout'?)"),
    ("[[sinks]]\nuse = \"file\"\n", "sinks[0].path: required"),
    ("[[sinks]]\nuse = \"file\"\npath = \"/tmp/x\"\nformat = \"yaml\"\n",
     "sinks[0].format: 'yaml' is not one of 'jsonl', 'msgpack'"),
    ("[[sinks]]\nuse = \"stdout\"\nreceive = \"alert\"\n",
     "sinks[0].receive: 'alert' is not one of events, alerts, both (did you mean 'alerts'?)"),
    ("[targets]\npids = [\"one\"]\n", "targets.pids[0]: expected int, got a string ('one')"),
    ("[targets]\ncomm = [\"(\"]\n", "targets.comm[0]: bad regular expression"),
    ("[sinkz]\n", "sinkz: unknown section (did you mean 'sinks'?)"),
    ("[[sinks]]\nname = \"x\"\n", "sinks[0].use: required"),
    ("[[sinks]]\nuse = \"nosuchpkg.mod:Sink\"\n", "sinks[0].use: cannot load 'nosuchpkg.mod:Sink'"),
    ("[[sinks]]\nuse = \"stdout\"\nname = \"a\"\n[[sinks]]\nuse = \"stdout\"\nname = \"a\"\n",
     "sinks[1].name: 'a' is already the name of sinks[0]"),
])
@pytest.mark.parametrize("command", ["check", "run"])
def test_bad_config_exits_2_naming_the_key(tmp_path, text, expected, command):
    cfg = write(tmp_path / "bad.toml", text)
    res = lgf(command, str(cfg))
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert expected in res.stderr
    if command == "run":
        assert "lgf running" not in res.stderr  # nothing was started


def test_every_problem_is_listed_at_once(tmp_path):
    cfg = write(tmp_path / "bad.toml",
                "[lgf]\ntreshold = \"1s\"\n[[sinks]]\nuse = \"file\"\nformt = 1\n[[sources]]\nuse = \"uprobez\"\n")
    res = lgf("check", str(cfg))
    assert res.returncode == 2
    assert "4 problem(s)" in res.stderr
    for key in ("lgf.treshold", "sinks[0].formt", "sinks[0].path", "sources[0].use"):
        assert key in res.stderr


def test_missing_config_file_is_a_config_error(tmp_path):
    res = lgf("check", str(tmp_path / "nope.toml"))
    assert res.returncode == 2
    assert "cannot read" in res.stderr


@pytest.mark.parametrize("text, ns", [("500us", 500_000), ("50ms", 50_000_000), ("1.5s", 1_500_000_000),
                                      ("2m", 120_000_000_000), ("1h", 3_600_000_000_000), ("7ns", 7)])
def test_durations(text, ns):
    assert parse_duration(text) == ns


def test_sizes():
    assert parse_size("64MiB") == 64 * 1024 * 1024
    assert parse_size("1GB") == 10**9
    assert parse_size(4096) == 4096
    with pytest.raises(ValueError):
        parse_size("lots")
