"""The pclntab reader on the inline fixture: inline chains against DWARF, -s -w, PIE, no sections.

The DWARF cross-check: for every PC of the fixture's main.* functions, the chain of
DW_TAG_inlined_subroutine entries covering it (outermost to innermost, read with pyelftools)
must name the same functions as our inline frames, and each inlined call's DW_AT_call_line
must be the line our next-outer frame reports.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from lgf.golang.pclntab import Pclntab, PclntabError
from support.gobuild import DEBIAN_GOROOTS, GO_VERSIONS, GOAPPS, build_go
from support.symbolize import addr2line_lines, build_pie, compile_binary, run_addr2line, stripped_copy

INLINE_APP = GOAPPS / "inline"


def _dwarf_inline_chains(binary: Path) -> dict[int, list[tuple[str, int]]]:
    """PC -> [(function, call line in its caller)] outermost first, for main.* subprograms."""
    chains: dict[int, list[tuple[str, int]]] = {}
    with open(binary, "rb") as fh:
        elf = ELFFile(fh)
        dwarf = elf.get_dwarf_info()
        range_lists = dwarf.range_lists()

        def name_of(die):
            if "DW_AT_name" in die.attributes:
                return die.attributes["DW_AT_name"].value.decode()
            origin = die.get_DIE_from_attribute("DW_AT_abstract_origin")
            return origin.attributes["DW_AT_name"].value.decode()

        def pc_ranges(die, cu):
            attrs = die.attributes
            if "DW_AT_low_pc" in attrs and "DW_AT_high_pc" in attrs:
                lo = attrs["DW_AT_low_pc"].value
                hi = attrs["DW_AT_high_pc"].value
                if attrs["DW_AT_high_pc"].form != "DW_FORM_addr":
                    hi += lo
                return [(lo, hi)]
            if "DW_AT_ranges" in attrs:
                base = cu.get_top_DIE().attributes.get("DW_AT_low_pc")
                base = base.value if base else 0
                out = []
                for r in range_lists.get_range_list_at_offset(attrs["DW_AT_ranges"].value, cu=cu):
                    if hasattr(r, "base_address"):
                        base = r.base_address
                    elif r.is_absolute:
                        out.append((r.begin_offset, r.end_offset))
                    else:
                        out.append((base + r.begin_offset, base + r.end_offset))
                return out
            return []

        def walk(die, cu, chain):
            for child in die.iter_children():
                if child.tag != "DW_TAG_inlined_subroutine":
                    continue
                link = chain + [(name_of(child), child.attributes["DW_AT_call_line"].value)]
                for lo, hi in pc_ranges(child, cu):
                    for pc in range(lo, hi):
                        if len(chains.get(pc, [])) < len(link):
                            chains[pc] = link
                walk(child, cu, link)

        for cu in dwarf.iter_CUs():
            for die in cu.get_top_DIE().iter_children():
                if die.tag == "DW_TAG_subprogram" and "DW_AT_low_pc" in die.attributes:
                    name = name_of(die)
                    if not name.startswith("main."):
                        continue
                    for lo, hi in pc_ranges(die, cu):
                        for pc in range(lo, hi):
                            chains.setdefault(pc, [(name, 0)])
                    walk(die, cu, [(name, 0)])
    return chains


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_inline_chains_match_dwarf(go_toolchains, version):
    """Same chains, same call lines, in the same places.

    The compiler writes DWARF inline ranges and the runtime's PCDATA_InlTreeIndex from the same
    inlining decisions, but the ranges' edges differ by a few instructions (DWARF puts e.g.
    argument set-up of an inlined fmt.Println outside it, while the line table says print.go).
    So the check is: the set of distinct chains (call lines included) is the same; each chain of
    the fixture's own functions is produced at some PC inside DWARF's ranges for it; and most PCs
    (80 %) get exactly DWARF's chain.
    """
    binary = build_go(INLINE_APP, version)
    dwarf = _dwarf_inline_chains(binary)
    tab = Pclntab.from_elf(binary)
    ours_by_pc = {}
    for pc in dwarf:
        frames = list(reversed(tab.frames(pc, is_return_addr=False)))
        assert [f.inlined for f in frames] == [False] + [True] * (len(frames) - 1)
        # As DWARF: (function, line of the call in its caller), outermost first.
        ours_by_pc[pc] = tuple([(frames[0].func, 0)] + [(frames[k].func, frames[k - 1].line)
                                                      for k in range(1, len(frames))])
    dwarf_chains = {tuple(c) for c in dwarf.values()}
    our_chains = set(ours_by_pc.values())
    assert our_chains == dwarf_chains
    for chain in dwarf_chains:
        if not all(name.startswith("main.") for name, _ in chain):
            continue  # std callees' DWARF ranges can miss the instructions entirely (fmt.Println, 1.21)
        assert any(ours_by_pc[pc] == chain for pc, c in dwarf.items() if tuple(c) == chain), chain
    agree = sum(ours_by_pc[pc] == tuple(c) for pc, c in dwarf.items())
    assert agree * 10 >= len(dwarf) * 8, f"only {agree} of {len(dwarf)} PCs agree with DWARF"
    assert max(len(c) for c in dwarf_chains) >= 4, "the fixture must inline leaf->middle->outer into work"


VARIANT_CASES = [(v, f) for f in ("-s -w", "pie", "no-section-headers") for v in GO_VERSIONS
                 if not (f == "pie" and v in DEBIAN_GOROOTS)]
"""Every toolchain and flavour but Go 1.19's PIE builds: 1.19's own addr2line answers "?" for every
PC of a PIE binary (main.work's too, at the address its own `go tool nm` prints), so there is no
oracle for them."""


@pytest.mark.parametrize("version,flavour", VARIANT_CASES)
def test_fixture_variants_agree_with_addr2line_and_keep_inline_chains(go_toolchains, version, flavour,
                                                                       tmp_path):
    if flavour == "pie":
        binary = build_pie(INLINE_APP, version)
        assert Pclntab.from_elf(binary).elf.is_pie
    else:
        binary = build_go(INLINE_APP, version, ldflags="-s -w" if flavour == "-s -w" else "")
    reference = binary
    if flavour == "no-section-headers":
        binary = tmp_path / "nosect"
        shutil.copyfile(reference, binary)
        _drop_section_headers(binary)
    tab = Pclntab.from_elf(binary)
    funcs = list(tab.funcs())
    pcs = [e + (end - e) // 3 for _, e, end in funcs]
    expected = run_addr2line(version, reference, [f"{pc:#x}" for pc in pcs])
    assert addr2line_lines(tab, pcs) == expected
    work = tab.func_by_name("main.work")
    chains = [tab.frames(pc, is_return_addr=False) for pc in range(work, work + 200)]
    assert max(len(c) for c in chains) == 4, "inline tree lost in this flavour of binary"


def _drop_section_headers(path: Path) -> None:
    """Zero e_shoff/e_shnum/e_shstrndx, as `sstrip`-like tools do: only segments remain."""
    data = bytearray(path.read_bytes())
    struct.pack_into("<Q", data, 0x28, 0)
    struct.pack_into("<HHH", data, 0x3A, 0, 0, 0)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("version", [v for v in GO_VERSIONS if v not in DEBIAN_GOROOTS])
def test_function_entries_match_the_symbol_table(go_toolchains, version):
    # (not Debian's toolchain: Debian strips its `compile`, there is no .symtab to check against)
    """func_by_name gives what .symtab names (ABI wrappers and twin closures share names)."""
    binary = compile_binary(version)
    by_name: dict[str, set[int]] = {}
    with open(binary, "rb") as fh:
        for s in ELFFile(fh).get_section_by_name(".symtab").iter_symbols():
            if s["st_info"]["type"] == "STT_FUNC":
                by_name.setdefault(s.name, set()).add(s["st_value"])
    tab = Pclntab.from_elf(stripped_copy(binary))
    names = {name for name, _, _ in tab.funcs()}
    assert len(names & by_name.keys()) > 0.95 * len(names)
    wrong = [n for n in names & by_name.keys() if tab.func_by_name(n) not in by_name[n]]
    assert wrong == []
    assert tab.func_by_name("main.no_such_function") is None


def test_old_pclntab_formats_are_refused_by_name(go_toolchains):
    binary = build_go(INLINE_APP, GO_VERSIONS[0])
    tab = Pclntab.from_elf(binary)
    data = bytearray(binary.read_bytes())
    struct.pack_into("<I", data, tab._hdr, 0xFFFFFFFA)
    with pytest.raises(PclntabError, match="Go 1.16-1.17.*Go 1.18 or later"):
        Pclntab.from_elf(bytes(data))


def test_a_file_that_is_not_go_is_refused_clearly():
    with pytest.raises(PclntabError, match="no Go pclntab"):
        Pclntab.from_elf(shutil.which("ls"))
    with pytest.raises(PclntabError, match="not an ELF"):
        Pclntab.from_elf(b"#!/bin/sh\necho hi\n" * 10)
