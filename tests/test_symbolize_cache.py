"""Symbolizer caching: repeated PCs are cache hits, a binary replaced in place is re-read."""

from __future__ import annotations

import os
import shutil

from lgf.golang.pclntab import Pclntab
from lgf.golang.symbols import Symbolizer, Symbolizers
from support.gobuild import GO_VERSIONS, GOAPPS, build_go


def test_repeated_pcs_are_answered_from_the_cache(go_toolchains):
    binary = build_go(GOAPPS / "inline", GO_VERSIONS[0])
    entry = Pclntab.from_elf(binary).func_by_name("main.work")
    sym = Symbolizer(binary, cache_size=4)
    first = sym.frames(entry + 5)
    assert sym.frames(entry + 5) == first and (sym.hits, sym.misses) == (1, 1)
    for k in range(10):  # overflow the 4-entry LRU: the first PC is evicted and recomputed
        sym.frames(entry + 10 + k)
    assert sym.frames(entry + 5) == first and sym.misses == 12


def test_a_binary_replaced_in_place_is_read_again(go_toolchains, tmp_path):
    old = build_go(GOAPPS / "inline", GO_VERSIONS[0])
    new = build_go(GOAPPS / "inline", GO_VERSIONS[-1])
    path = tmp_path / "server"
    shutil.copyfile(old, path)
    syms = Symbolizers(max_open=2)
    pc = Pclntab.from_elf(old).func_by_name("main.work")
    before = syms.get(path).frames(pc, is_return_addr=False)
    assert before[-1].func == "main.work"
    os.replace(shutil.copyfile(new, tmp_path / "server.new"), path)  # a deploy: new inode
    after = syms.get(path).frames(pc, is_return_addr=False)
    assert after == Pclntab.from_elf(new).frames(pc, is_return_addr=False) != before
    for v in GO_VERSIONS:  # past max_open, the least recently used binary is unmapped
        syms.get(build_go(GOAPPS / "inline", v))
    assert len(syms) == 2
    syms.close()
