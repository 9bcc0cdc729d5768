"""``lgf inspect`` on real binaries and a running process: readable facts, JSON, refusals."""

from __future__ import annotations

import json
import shutil

from lgf.cli import main as lgf_main
from support.binfacts import binfacts, go_nm, running


def main(argv):
    return lgf_main(["inspect", *argv])


def test_text_report_names_version_ids_and_probe_sites(go_toolchains, capsys):
    path = binfacts("1.25.5")
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    gopark = go_nm("1.25.5", path)["runtime.gopark"][0]
    assert "go           go1.25.5   module lgf.test/binfacts" in out
    assert "pie          no   stripped (no .symtab) no   dwarf yes" in out
    line = next(row for row in out.splitlines() if row.strip().startswith("runtime.gopark "))
    assert f"{gopark:#x} +10" in line and "pushq %rbp" in line
    assert "struct offsets (from dwarf)" in out
    assert " 14 chan receive" in out


def test_stripped_binary_says_table(go_toolchains, capsys):
    assert main([str(binfacts("1.21.13", "sw"))]) == 0
    out = capsys.readouterr().out
    assert "stripped (no .symtab) yes   dwarf no" in out
    assert "struct offsets (from table)" in out
    gcphase = next(row for row in out.splitlines() if row.strip().startswith("runtime.gcphase "))
    assert gcphase.endswith("(code-refs)")


def test_json_has_every_fact(go_toolchains, capsys):
    assert main([str(binfacts("1.27.3", "strip")), "--json", "-f", "main.work"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["go_version"] == "go1.27.3" and facts["stripped"] and facts["offset_source"] == "table"
    assert facts["field_offsets"]["g.goid"] == 152
    work = next(p for p in facts["probes"] if p["function"] == "main.work")
    assert work["instruction"] == "pushq %rbp" and work["offset"] > 0


def test_pid_shows_the_process(go_toolchains, capsys):
    with running(binfacts("1.25.5")) as (proc, _):
        assert main([str(proc.pid)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"process      pid {proc.pid} (binfacts-go1.25")
    assert "load bias 0x0" in out


def test_refusals_exit_1_with_the_reason(capsys):
    ls = shutil.which("ls")
    assert main([ls]) == 1
    assert capsys.readouterr().err == f"lgf inspect: refused: {ls}: not a Go binary (no Go build info)\n"
    assert main(["999999999"]) == 1
    assert "pid 999999999: no such process" in capsys.readouterr().err
    assert main([ls, "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == {"refused": f"{ls}: not a Go binary (no Go build info)"}
