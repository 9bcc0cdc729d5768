"""`lgf symbolize`: --addr2line output is byte for byte go tool addr2line's (decoded afresh, read from
the symbol cache, and on the pure-Python path); it answers each line as it arrives; default prints chains."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from lgf.cli.symbolize import DEFAULT_SPOOL_DIR, parse_pc_like_addr2line
from lgf.config import HostOptions
from lgf.golang.pclntab import Pclntab
from support.gobuild import GO_VERSIONS, GOAPPS, build_go
from support.symbolize import LGF, addr2line_tool, compile_binary, spread_pcs

RUN = [sys.executable, "-c", "import sys; from lgf.cli import main; sys.exit(main(['symbolize', *sys.argv[1:]]))"]


def _symbolize(args: list[str], stdin: bytes, cache=None) -> subprocess.CompletedProcess:
    """The command in its own process; with no ``cache`` directory, it reads and writes none."""
    cache_args = ["--cache-dir", str(cache)] if cache else ["--no-cache"]
    return subprocess.run(RUN + cache_args + args, input=stdin, capture_output=True, check=False)


# addr2line's own input quirks: junk parses as 0, a colon is a reverse lookup, CRLF, overflow (also
# when junk follows the digit that overflows: Go stops there), an unterminated last line.
QUIRKS = ["", "zz", "0x", "0X4a50e0", "main.go:12", "ffffffffffffffffffff", "11111111111111111z",
          "0x1111111111111111z", "\r", "1"]


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_addr2line_mode_prints_exactly_what_go_tool_addr2line_prints(go_toolchains, version, tmp_path):
    binary = compile_binary(version)
    pcs = spread_pcs(binary, 500, seed=9)
    lines = [f"{pc:#x}" for pc in pcs[:200]] + [f"{pc:x}" for pc in pcs[200:]]
    lines += QUIRKS[:-1] + [f"{pcs[0]:#x}\r", QUIRKS[-1]]
    stdin = ("\n".join(lines)).encode()  # no final newline: the last line still counts
    expected = subprocess.run([str(addr2line_tool(version)), str(binary)], input=stdin,
                              capture_output=True, check=True).stdout
    for cache in (None, tmp_path / "cold", tmp_path / "cold"):  # no cache, decoded and stored, read back
        got = _symbolize(["--addr2line", str(binary)], stdin, cache)
        assert got.returncode == 0, got.stderr
        assert got.stdout == expected


def test_the_pure_python_path_prints_the_same(go_toolchains):
    """Without the C decoder (a source tree never built), the line-by-line loop answers alike."""
    version = GO_VERSIONS[-1]
    binary = build_go(GOAPPS / "inline", version)
    tab = Pclntab.from_elf(binary)
    pcs = [pc for _, entry, end in tab.funcs() for pc in range(entry, end, 11)][:3000]
    stdin = "\n".join([f"{pc:#x}" for pc in pcs] + QUIRKS).encode()
    expected = subprocess.run([str(addr2line_tool(version)), str(binary)], input=stdin,
                              capture_output=True, check=True).stdout
    no_native = ("import sys; import lgf.golang.pclntab_format as f; f.native = None; from lgf.cli import main; "
                 "sys.exit(main(['symbolize', '--no-cache', *sys.argv[1:]]))")
    got = subprocess.run([sys.executable, "-c", no_native, "--addr2line", str(binary)], input=stdin,
                         capture_output=True, check=False)
    assert got.returncode == 0, got.stderr
    assert b"falls back to pure Python" in got.stderr
    assert got.stdout == expected


def test_each_line_is_answered_as_it_arrives(go_toolchains, tmp_path):
    """A script (pprof-style) writes one PC and waits for its two lines before the next: the batch
    path must answer what it has read, not wait for 64 KiB or the end of input."""
    binary = compile_binary(GO_VERSIONS[-1])
    pcs = spread_pcs(binary, 5, seed=2)
    expected = subprocess.run([str(addr2line_tool(GO_VERSIONS[-1])), str(binary)],
                              input="".join(f"{pc:#x}\n" for pc in pcs).encode(), capture_output=True,
                              check=True).stdout.splitlines(keepends=True)
    proc = subprocess.Popen([str(LGF), "symbolize", "--addr2line", "--cache-dir", str(tmp_path), str(binary)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for k, pc in enumerate(pcs):
            proc.stdin.write(f"{pc:#x}\n".encode())
            proc.stdin.flush()
            assert [proc.stdout.readline(), proc.stdout.readline()] == expected[2 * k:2 * k + 2]
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0, proc.stderr.read()


def test_pc_parsing_follows_go_strconv():
    assert [parse_pc_like_addr2line(x) for x in QUIRKS] == [0, 0, 0, 0, 0, 2**64 - 1, 2**64 - 1, 0, 0, 1]


def test_the_default_spool_dir_is_the_hosts():
    """The command keeps its own copy (lgf.config is slow to import); it must be the host's default."""
    field = next(f for f in dataclasses.fields(HostOptions) if f.name == "spool_dir")
    assert field.default == DEFAULT_SPOOL_DIR


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
