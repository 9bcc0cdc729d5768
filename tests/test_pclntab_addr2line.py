"""The pclntab reader against its oracle, `go tool addr2line`, on real large binaries.

10,000 PCs spread over the functions of each toolchain's own `compile`, stripped and not:
every PC must give the same function name and the same file:line as addr2line prints.
"""

from __future__ import annotations

import pytest

from lgf.golang.pclntab import Pclntab
from lgf.golang.symbols import Symbolizer
from support.gobuild import GO_VERSIONS
from support.symbolize import addr2line_lines, compile_binary, run_addr2line, spread_pcs, stripped_copy

N_PCS = 10_000


@pytest.mark.parametrize("stripped", [False, True], ids=["symtab", "stripped"])
@pytest.mark.parametrize("version", GO_VERSIONS)
def test_compile_binary_agrees_with_addr2line_on_every_pc(go_toolchains, version, stripped):
    binary = compile_binary(version)
    if stripped:
        binary = stripped_copy(binary)
    pcs = spread_pcs(binary, N_PCS)
    expected = run_addr2line(version, binary, [f"{pc:#x}" for pc in pcs])
    assert len(expected) == 2 * N_PCS
    sym = Symbolizer(binary)
    mismatches = []
    for k, pc in enumerate(pcs):
        got = sym.addr2line(pc)
        if got != (expected[2 * k], expected[2 * k + 1]):
            mismatches.append((hex(pc), got, expected[2 * k:2 * k + 2]))
    assert mismatches == [], f"{len(mismatches)} of {N_PCS} differ, first: {mismatches[:5]}"


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_stripped_and_unstripped_binaries_give_the_same_tables(go_toolchains, version):
    full = Pclntab.from_elf(compile_binary(version))
    bare = Pclntab.from_elf(stripped_copy(compile_binary(version)))
    assert full.text_start == bare.text_start and full.gofunc == bare.gofunc
    assert full.gofunc is not None, "go:func.* base not found: inline chains would be missing"
    assert list(full.funcs())[:200] == list(bare.funcs())[:200]
    assert full.func_by_name("runtime.gopark") == bare.func_by_name("runtime.gopark") is not None


@pytest.mark.parametrize("version", [v for v in GO_VERSIONS if tuple(map(int, v.split(".")[:2])) >= (1, 24)])
def test_functions_without_a_compilation_unit_agree_with_addr2line(go_toolchains, version):
    """Linker markers (go:textfipsstart / go:textfipsend, Go 1.24+) belong to no compilation unit;
    every PC in them must still read as addr2line prints it, not as a corrupt table."""
    binary = compile_binary(version)
    tab = Pclntab.from_elf(binary)
    markers = [(name, entry, end) for i, (name, entry, end) in enumerate(tab.funcs())
               if tab._func_header(i)[2] == 0xFFFFFFFF]
    assert {"go:textfipsstart", "go:textfipsend"} <= {name for name, _, _ in markers}
    pcs = [pc for _, entry, end in markers for pc in range(entry, end)]
    expected = run_addr2line(version, binary, [f"{pc:#x}" for pc in pcs])
    assert addr2line_lines(tab, pcs) == expected
