"""Hostile input: truncated and corrupted ELF files and pclntabs give PclntabError, nothing else.

Hypothesis mutates a real Go binary (the inline fixture) where it hurts: the ELF header and
tables, the pclntab header, the function table, and random spots of the pclntab; each mutant is
opened and looked up. Any exception other than PclntabError, a hang (loops are capped) or a
large allocation (checked with tracemalloc) is a failure.
"""

from __future__ import annotations

import struct
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lgf.golang.pclntab import Pclntab, PclntabError
from support.gobuild import GO_VERSIONS, GOAPPS, build_go

MEMORY_CAP = 64 << 20
"""Bytes Python may allocate while reading one mutant (the fixture itself is ~2 MiB)."""


@pytest.fixture(scope="module")
def original(go_toolchains) -> tuple[bytes, int, int, list[int]]:
    """(binary bytes, pclntab header offset, pclntab end offset, a few PCs to look up)."""
    data = build_go(GOAPPS / "inline", GO_VERSIONS[-1]).read_bytes()
    tab = Pclntab.from_elf(data)
    pcs = [e + (end - e) // 2 for _, e, end in list(tab.funcs())[::97]]
    sec = tab.elf.section(".gopclntab")
    return data, sec.offset, sec.offset + sec.size, pcs


def _exercise(data: bytes, pcs: list[int]) -> None:
    tracemalloc.start()
    try:
        tab = Pclntab.from_elf(data)
        for pc in pcs:
            tab.frames(pc)
            tab.addr2line(pc)
        for k, _ in enumerate(tab.funcs()):
            if k > 2000:
                break
        tab.func_by_name("main.work")
    except PclntabError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < MEMORY_CAP, f"reading a mutant allocated {peak >> 20} MiB"


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.data_too_large])


@FUZZ
@given(st.data())
def test_truncated_files_fail_cleanly(original, data):
    blob, hdr, end, pcs = original
    cut = data.draw(st.one_of(st.integers(0, 4096), st.integers(hdr - 64, end + 64), st.integers(0, len(blob))))
    _exercise(blob[:cut], pcs)


@FUZZ
@given(st.data())
def test_corrupted_headers_and_tables_fail_cleanly(original, data):
    blob, hdr, end, pcs = original
    buf = bytearray(blob)
    regions = [(0, 64), (hdr, hdr + 72), (hdr + 72, min(end, hdr + 4096)), (hdr, end)]
    for _ in range(data.draw(st.integers(1, 12))):
        lo, hi = data.draw(st.sampled_from(regions))
        at = data.draw(st.integers(lo, hi - 1))
        kind = data.draw(st.sampled_from(["byte", "u32", "u64"]))
        if kind == "byte":
            buf[at] = data.draw(st.integers(0, 255))
        elif kind == "u32" and at + 4 <= len(buf):
            struct.pack_into("<I", buf, at, data.draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF,
                                                                        len(blob), 0x10000])))
        elif at + 8 <= len(buf):
            struct.pack_into("<Q", buf, at, data.draw(st.sampled_from([0, 1 << 63, 2**64 - 1, len(blob),
                                                                        0x400000])))
    _exercise(bytes(buf), pcs)


@FUZZ
@given(st.binary(min_size=0, max_size=4096))
def test_random_bytes_behind_an_elf_header_fail_cleanly(original, tail):
    blob, _, _, pcs = original
    _exercise(blob[:64] + tail, pcs)
    _exercise(b"\x7fELF" + tail, pcs)


def test_every_section_header_zeroed_in_turn_fails_cleanly(original):
    blob, _, _, pcs = original
    e_shoff, = struct.unpack_from("<Q", blob, 0x28)
    e_shnum, = struct.unpack_from("<H", blob, 0x3C)
    for i in range(e_shnum):
        buf = bytearray(blob)
        buf[e_shoff + 64 * i:e_shoff + 64 * (i + 1)] = bytes(64)
        _exercise(bytes(buf), pcs)
