"""`lgf symbolize`: --addr2line output is byte for byte go tool addr2line's; default prints chains."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lgf.golang.pclntab import Pclntab
from support.gobuild import GO_VERSIONS, GOAPPS, build_go
from support.symbolize import addr2line_tool, compile_binary, spread_pcs

RUN = [sys.executable, "-c", "import sys; from lgf.cli import main; sys.exit(main(['symbolize', *sys.argv[1:]]))"]


def _symbolize(args: list[str], stdin: bytes) -> subprocess.CompletedProcess:
    return subprocess.run(RUN + args, input=stdin, capture_output=True, check=False)


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_addr2line_mode_prints_exactly_what_go_tool_addr2line_prints(go_toolchains, version):
    binary = compile_binary(version)
    pcs = spread_pcs(binary, 500, seed=9)
    lines = [f"{pc:#x}" for pc in pcs[:200]] + [f"{pc:x}" for pc in pcs[200:]]
    # addr2line's own input quirks: junk parses as 0, a colon is a reverse lookup, CRLF, overflow.
    lines += ["", "zz", "0x", "0X4a50e0", "main.go:12", "ffffffffffffffffffff", f"{pcs[0]:#x}\r", "1"]
    stdin = ("\n".join(lines)).encode()  # no final newline: the last line still counts
    expected = subprocess.run([str(addr2line_tool(version)), str(binary)], input=stdin,
                              capture_output=True, check=True).stdout
    got = _symbolize(["--addr2line", str(binary)], stdin)
    assert got.returncode == 0, got.stderr
    assert got.stdout == expected


def test_default_mode_prints_the_inline_chain(go_toolchains):
    binary = build_go(GOAPPS / "inline", GO_VERSIONS[-1])
    tab = Pclntab.from_elf(binary)
    work = tab.func_by_name("main.work")
    deep = next(pc for pc in range(work, work + 400) if len(tab.frames(pc, is_return_addr=False)) == 4)
    got = _symbolize([str(binary)], f"{deep:x}\n0x10\n".encode())
    assert got.returncode == 0, got.stderr
    out = got.stdout.decode().splitlines()
    assert out[0] == f"{deep:#x}"
    assert [line.split()[0] for line in out[1:5]] == ["main.leaf", "main.middle", "main.outer", "main.work"]
    assert [line.endswith("(inlined)") for line in out[1:5]] == [True, True, True, False]
    assert out[1].split()[1].endswith("main.go:14") and out[4].split()[1].endswith("main.go:31")
    assert out[5:] == ["0x10", "    ? (in no function)"]


def test_return_addrs_looks_up_the_call_instruction(go_toolchains):
    binary = build_go(GOAPPS / "inline", GO_VERSIONS[-1])
    tab = Pclntab.from_elf(binary)
    entry = tab.func_by_name("main.work")
    # The entry PC as a return address belongs to the function before: pc-1 is looked up.
    plain = _symbolize([str(binary)], f"{entry:x}\n".encode()).stdout.decode().splitlines()
    ret = _symbolize(["--return-addrs", str(binary)], f"{entry:x}\n".encode()).stdout.decode().splitlines()
    assert plain[1].split()[0] == "main.work"
    assert ret[1].split()[0] == tab.addr2line(entry - 1)[0] != "main.work"


def test_a_binary_that_is_not_go_is_refused_with_one_line(tmp_path):
    not_go = tmp_path / "script"
    not_go.write_text("#!/bin/sh\n")
    got = _symbolize([str(not_go)], b"0x1\n")
    assert got.returncode == 1
    assert got.stderr.decode().strip().count("\n") == 0 and "not an ELF" in got.stderr.decode()
