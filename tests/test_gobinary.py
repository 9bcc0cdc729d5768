"""GoBinary against the Go toolchain's own answers, on the binfacts fixture built by every
toolchain, with symbols and DWARF, with ``-ldflags=-s -w``, and run through ``strip``."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter

import capstone
import pytest

from lgf.errors import TargetRefused
from lgf.golang import golayout
from lgf.golang.gobinary import (
    DATA_SYMBOLS,
    PROBE_FUNCTIONS,
    GoBinary,
    NotGoBinary,
    clear_cache,
    open_binary,
)
from lgf.golang.golayout_table import TABLE
from lgf.golang.pclntab import Pclntab, PclntabError
from support.binfacts import VARIANTS, binfacts, go_nm, go_objdump, go_tool, running, runtime_strings
from support.gobuild import GO_VERSIONS, go_binary, go_env

CASES = [(v, variant) for v in GO_VERSIONS for variant in VARIANTS]
CHECKED_FUNCTIONS = ("runtime.gopark", "runtime.ready", "runtime.casgstatus", "runtime.stopTheWorldWithSema",
                     "runtime.startTheWorldWithSema", "runtime.execute", "main.work", "main.main",
                     "main.bigframe")
"""Every prologue shape: small frame (gopark), large (main.main), huge (bigframe: mov/sub/jb before
the compare), stackguard1 (stopTheWorldWithSema in 1.25+), nosplit without a check (casgstatus)."""


@pytest.fixture(scope="module", params=CASES, ids=[f"go{v}-{var}" for v, var in CASES])
def case(request, go_toolchains):
    version, variant = request.param
    path = binfacts(version, variant)
    return version, variant, path, open_binary(path)


def cases(*variants: str):
    """Parametrize a test over every toolchain for only these variants (the fixture ``case`` runs all)."""
    chosen = [(v, var) for v, var in CASES if var in variants]
    return pytest.mark.parametrize("case", chosen, ids=[f"go{v}-{var}" for v, var in chosen], indirect=True)


def minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def test_version_module_and_build_ids_match_go_tools(case):
    version, variant, path, gb = case
    assert gb.go_version == f"go{version}"
    assert gb.version_tuple == tuple(int(x) for x in version.split("."))
    assert gb.module_path == "lgf.test/binfacts"
    assert gb.build_id == go_tool(version, "buildid", str(path)).strip()
    assert gb.is_pie is False
    if shutil.which("readelf"):
        notes = subprocess.run(["readelf", "-n", str(path)], capture_output=True, text=True).stdout
        gnu = [line.split(":", 1)[1].strip() for line in notes.splitlines() if "Build ID:" in line]
        assert gb.gnu_build_id == (gnu[0] if gnu else "")


def test_stripped_and_dwarf_flags_and_offset_source(case):
    _, variant, _, gb = case
    assert gb.stripped is (variant != "plain")
    assert gb.has_dwarf is (variant == "plain")
    assert gb.offset_source == ("dwarf" if variant == "plain" else "table")


@cases("plain", "strip")  # go tool nm cannot read a -s -w binary: see the next test
def test_func_addr_matches_go_tool_nm(case):
    version, variant, path, gb = case
    # strip removes symbols after linking, so the plain build's table is the oracle for both.
    nm = go_nm(version, binfacts(version, "plain"))
    funcs = {name: addr for name, (addr, kind) in nm.items() if kind in "Tt"}
    if variant == "strip":
        # The pclntab names an assembly function and its ABI wrapper alike ("x" and "x.abi0" in
        # .symtab), and has no entries for the linker's text markers: compare the rest.
        bases = Counter(n.removesuffix(".abi0") for n in funcs)
        twice = {b for b, count in bases.items() if count > 1}
        funcs = {n: a for n, a in funcs.items() if n.removesuffix(".abi0") not in twice
                 and n not in ("runtime.text", "runtime.etext")}
    for name in CHECKED_FUNCTIONS:
        assert gb.func_addr(name) == funcs[name], name
    sample = sorted(funcs)[:: max(1, len(funcs) // 300)]
    assert [gb.func_addr(n) for n in sample] == [funcs[n] for n in sample]
    assert gb.func_addr("main.no_such_function") is None


@cases("sw")
def test_func_addr_of_sw_build_is_an_entry(case):
    """-s -w leaves no symbol table for go tool nm; go tool addr2line (the pclntab) is the oracle:
    the address is in the function and the byte before it is not."""
    version, variant, path, gb = case
    addrs = [gb.func_addr(n) for n in CHECKED_FUNCTIONS]
    query = "".join(f"{a:#x}\n{a - 1:#x}\n" for a in addrs)
    out = subprocess.run([str(go_binary(version)), "tool", "addr2line", str(path)], input=query,
                         capture_output=True, text=True, check=True, env=go_env(version)).stdout.splitlines()
    names = out[0::2]
    for i, name in enumerate(CHECKED_FUNCTIONS):
        assert names[2 * i] == name
        assert names[2 * i + 1] != name


def frame_made_by_push(version: str) -> bool:
    """Go 1.21 on makes frames with ``push %rbp``; 1.20 and older with ``sub $N,%rsp``."""
    return tuple(int(x) for x in version.split(".")[:2]) >= (1, 21)


def test_probe_offset_lands_on_the_frame_setup_after_the_stack_check(case):
    version, variant, path, gb = case
    cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    data = path.read_bytes()
    for name in CHECKED_FUNCTIONS:
        off = gb.probe_offset(name)
        at = gb.file_offset(gb.func_addr(name) + off)
        first = next(cs.disasm(data[at:at + 16], 0))
        if frame_made_by_push(version):
            assert (first.mnemonic, first.op_str) == ("push", "rbp"), name
        else:  # the emulated jbe to morestack, then the frame: sub $N,%rsp, or add $-128,%rsp
            frame = first
            if off:
                assert first.mnemonic in ("jbe", "jb"), (name, first.mnemonic)
                frame = next(cs.disasm(data[at + first.size:at + first.size + 16], 0))
            assert frame.mnemonic in ("sub", "add") and frame.op_str.startswith("rsp, "), (name, frame.op_str)
            assert (int(frame.op_str.split(", ")[1], 16) > 0) == (frame.mnemonic == "sub"), name
        if off:  # what it skipped is the stack-bound check against g (R14)
            skipped = [f"{i.mnemonic} {i.op_str}" for i in cs.disasm(data[at - off:at], 0)]
            assert any(s.startswith("cmp") and "r14" in s for s in skipped), (name, skipped)


@cases("plain")  # go tool objdump needs a symbol table; stripped builds are compared with plain below
def test_probe_offset_and_rets_agree_with_go_tool_objdump(case):
    version, variant, path, gb = case
    for name in ("runtime.gopark", "runtime.stopTheWorldWithSema", "main.work", "main.main", "main.bigframe"):
        rows = go_objdump(version, path, name)
        entry = gb.func_addr(name)
        assert rows[0][0] == entry
        by_addr = dict(rows)
        probed = by_addr[entry + gb.probe_offset(name)]
        if frame_made_by_push(version):
            assert probed == "PUSHQ BP"
        else:  # Go 1.19: the JBE to morestack, right before the frame's SUBQ $N, SP
            after = rows[[a for a, _ in rows].index(entry + gb.probe_offset(name)) + 1][1]
            assert probed.startswith(("JBE ", "JLS ")) and after.startswith(("SUBQ $", "ADDQ $-")), (name, probed, after)
        assert [a - entry for a, text in rows if text.startswith("RET")] == gb.ret_offsets(name)


def test_function_without_a_go_prologue_is_refused(case):
    *_, gb = case
    with pytest.raises(TargetRefused, match=r"runtime\.memmove: prologue not recognised: not a Go stack-check"):
        gb.probe_offset("runtime.memmove")  # assembly, frameless: no push %rbp to probe
    with pytest.raises(TargetRefused, match="function main.nothing not found"):
        gb.probe_offset("main.nothing")


def test_ret_offsets_are_the_same_stripped_or_not(case):
    version, variant, path, gb = case
    plain = open_binary(binfacts(version, "plain"))
    for name in ("runtime.gopark", "runtime.casgstatus", "main.main"):
        assert gb.ret_offsets(name) == plain.ret_offsets(name)
        assert gb.ret_offsets(name), name


def test_wait_and_stw_reasons_match_the_runtime_source(case):
    version, variant, _, gb = case
    assert gb.wait_reasons == runtime_strings(version, "waitReason", "waitReasonStrings")
    assert gb.stw_reasons == runtime_strings(version, "stwReason", "stwReasonStrings")
    assert gb.facts()["wait_reasons_source"] == ("binary" if variant == "plain" else "binary-scan")


def test_stripped_binary_reasons_are_read_from_the_binary_not_the_table(go_toolchains):
    """Change one wait reason's bytes in a stripped binary: lgf must report the changed text."""
    data = binfacts("1.25.5", "sw").read_bytes()
    assert data.count(b"trace reader (blocked)") >= 1
    gb = GoBinary(data.replace(b"trace reader (blocked)", b"trace reader (BLOCKED)"))
    assert "trace reader (BLOCKED)" in gb.wait_reasons
    assert "trace reader (blocked)" in TABLE["1.25"]["waitReasonStrings"]


def test_field_offsets_from_dwarf_equal_the_table(go_toolchains):
    for version in GO_VERSIONS:
        gb = open_binary(binfacts(version, "plain"))
        dwarf = golayout.dwarf_field_offsets(gb.elf)
        table = TABLE[minor(version)]["fields"]
        assert table and {k: dwarf[tuple(k.split("."))] for k in table} == table
        for struct, field in [("g", "goid"), ("g", "atomicstatus"), ("g", "waitreason"), ("g", "m"),
                              ("m", "procid"), ("g", "sched"), ("gobuf", "pc"), ("g", "stack"),
                              ("g", "trackingSeq"), ("g", "startpc"), ("gobuf", "sp")]:
            stripped = open_binary(binfacts(version, "sw"))
            assert stripped.field_offset(struct, field) == gb.field_offset(struct, field) == \
                dwarf[(struct, field)]


def test_table_covers_every_supported_minor_version_from_its_own_release():
    assert sorted(TABLE, key=lambda k: int(k.split(".")[1])) == ["1.19"] + [f"1.{m}" for m in range(21, 28)]
    for key, entry in TABLE.items():
        assert entry["from"].startswith(f"go{key}.")
        assert {"g.goid", "g.atomicstatus", "g.waitreason", "g.m", "m.procid", "gobuf.pc",
                "g.trackingSeq"} <= set(entry["fields"])


def test_goid_offset_moves_between_versions_as_measured():
    """Measured on each release's binaries: g.goid at 152 / 160 / 152 across Go 1.22 / 1.23-1.24 / 1.25."""
    assert [TABLE[k]["fields"]["g.goid"] for k in ("1.22", "1.23", "1.24", "1.25")] == [152, 160, 160, 152]


def test_unknown_field_is_refused_with_its_name(case):
    *_, gb = case
    with pytest.raises(TargetRefused, match=r"runtime\.g\.no_such_field"):
        gb.field_offset("g", "no_such_field")


def test_data_symbols_match_go_tool_nm(case):
    """With symbols: .symtab. Stripped after linking (same layout as plain): found through the runtime
    code that uses them, and must land exactly where the plain build's symbol table says."""
    version, variant, path, gb = case
    if variant == "sw":
        return  # different layout, no oracle here: see test_stripped_globals_read_right_in_a_live_process
    nm = go_nm(version, binfacts(version, "plain"))
    for name in DATA_SYMBOLS:  # some are dropped by the linker in some versions (runtime.ncpu in 1.25)
        assert gb.symbol_addr(name) == nm.get(name, (None,))[0], name
        if name in nm:
            assert gb.symbol_source(name) == ("symtab" if variant == "plain" else "code-refs")
    assert gb.symbol_addr("runtime.gcphase") is not None and gb.symbol_addr("runtime.sched") is not None


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_stripped_globals_read_right_in_a_live_process(go_toolchains, version):
    """In a -s -w build, read runtime.gomaxprocs (and ncpu where linked) through the address lgf
    found: the running process's own values must come back (GOMAXPROCS defaults to the CPU count)."""
    gb = open_binary(binfacts(version, "sw"))
    addr = gb.symbol_addr("runtime.gomaxprocs")
    assert addr is not None and gb.symbol_source("runtime.gomaxprocs") == "code-refs"
    with running(binfacts(version, "sw")) as (proc, _):
        with open(f"/proc/{proc.pid}/mem", "rb") as mem:
            mem.seek(addr)
            assert int.from_bytes(mem.read(4), "little") == len(os.sched_getaffinity(proc.pid))
            glen = gb.symbol_addr("runtime.allglen")
            mem.seek(glen)
            assert 4 <= int.from_bytes(mem.read(8), "little") < 1000  # main, work, reader, stdin, runtime's


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_stripped_globals_in_another_program_are_right_or_absent(go_toolchains, tmp_path, version):
    """The toolchain's own compiler (another program, built with PGO, so some runtime code differs):
    after strip, each global is found where its symbol table says, or not at all; never elsewhere."""
    compiler = go_tool(version, "-n", "compile").strip()
    stripped = tmp_path / "compile"
    shutil.copy(compiler, stripped)
    subprocess.run([shutil.which("strip") or "strip", str(stripped)], check=True)
    full, bare = GoBinary(compiler), GoBinary(stripped)
    found = {name: bare.symbol_addr(name) for name in DATA_SYMBOLS}
    for name, addr in found.items():
        assert addr in (None, full.symbol_addr(name)), name
    assert sum(addr is not None for addr in found.values()) >= 4


def test_facts_are_json_and_plan_every_probe(case):
    import json
    version, _, _, gb = case
    facts = json.loads(json.dumps(gb.facts()))
    planned = {row["function"]: row for row in facts["probes"]}
    assert set(planned) == set(PROBE_FUNCTIONS)
    if frame_made_by_push(version):
        assert planned["runtime.gopark"]["instruction"] == "pushq %rbp"
    else:
        assert planned["runtime.gopark"]["instruction"].startswith("jbe ")
    assert "runtime.stopTheWorldWithSema" in facts["stw_functions"]


def test_open_binary_shares_one_object_per_build_id(tmp_path, go_toolchains):
    clear_cache()
    path = binfacts("1.25.5")
    copy = tmp_path / "copy"
    shutil.copy(path, copy)
    first = open_binary(path)
    assert open_binary(path) is first
    assert open_binary(copy) is first
    # strip keeps the Go build id but not the facts (no symbols, no DWARF): not shared.
    stripped_copy = tmp_path / "stripped"
    shutil.copy(path, stripped_copy)
    subprocess.run([shutil.which("strip") or "strip", str(stripped_copy)], check=True)
    stripped = open_binary(stripped_copy)
    assert stripped.build_id == first.build_id and stripped is not first and stripped.stripped


# -- refusals -------------------------------------------------------------------------------------

def test_not_go_binary_is_refused(tmp_path):
    ls = shutil.which("ls")
    with pytest.raises(TargetRefused, match=f"^{ls}: not a Go binary"):
        open_binary(ls)
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    with pytest.raises(TargetRefused, match="not an ELF file"):
        open_binary(text)
    with pytest.raises(TargetRefused, match="cannot read"):
        open_binary(tmp_path / "missing")


def test_truncated_elf_and_random_bytes_are_refused(go_toolchains):
    data = binfacts("1.25.5").read_bytes()
    for cut in (10, 64, 4096, len(data) // 2, len(data) - 1):
        with pytest.raises(TargetRefused, match="<bytes>: "):
            GoBinary(data[:cut])
    with pytest.raises(TargetRefused, match="not an ELF file"):
        GoBinary(bytes(range(256)) * 40)
    with pytest.raises(TargetRefused, match="empty file|not an ELF"):
        GoBinary(b"")


def test_gobinary_and_pclntab_refuse_the_same_damage_each_in_its_own_error(go_toolchains):
    """One ELF reader behind both: the same reason, as TargetRefused and as PclntabError."""
    data = binfacts("1.25.5").read_bytes()
    truncated = data[:-1]  # whatever lies last (a section, the section headers) now ends outside
    with pytest.raises(TargetRefused, match="runs past the end of the file") as refused:
        GoBinary(truncated)
    with pytest.raises(PclntabError) as unreadable:
        Pclntab.from_elf(truncated)
    assert str(refused.value) == str(unreadable.value) and not isinstance(refused.value, NotGoBinary)
    not_elf = b"#!/bin/sh\n" * 10
    with pytest.raises(NotGoBinary, match="not an ELF file") as passed_over:
        GoBinary(not_elf)
    with pytest.raises(PclntabError) as unreadable:
        Pclntab.from_elf(not_elf)
    assert str(passed_over.value) == str(unreadable.value)


def test_unknown_go_version_without_dwarf_is_refused(go_toolchains):
    data = bytearray(binfacts("1.27.3", "sw").read_bytes())
    i = data.find(b"\x08go1.27.3")  # the varint-prefixed version in .go.buildinfo
    data[i + 1:i + 9] = b"go1.99.3"
    with pytest.raises(TargetRefused, match="go1.99.3 has no DWARF and no known layout"):
        GoBinary(bytes(data))


def test_too_old_go_is_refused(go_toolchains):
    data = bytearray(binfacts("1.27.3", "sw").read_bytes())
    i = data.find(b"\x08go1.27.3")
    data[i + 1:i + 9] = b"go1.17.3"
    with pytest.raises(TargetRefused, match="older than go1.19"):
        GoBinary(bytes(data))


def test_go_1_20_is_refused_cleanly_as_unchecked(go_toolchains):
    """No Go 1.20 toolchain here to check its layouts, probes and tables against: a 1.20 binary
    (here Debian's 1.19 build relabelled, symbols and DWARF kept) is refused with the reason, never
    traced on the guess that it sits between 1.19 and 1.21."""
    data = bytearray(binfacts("1.19.8", "plain").read_bytes())
    i = data.find(b"\x08go1.19.8")
    data[i + 1:i + 9] = b"go1.20.9"
    with pytest.raises(TargetRefused, match=r"go1\.20\.9 is not supported: lgf has no Go 1\.20 toolchain"):
        GoBinary(bytes(data))
