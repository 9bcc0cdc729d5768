"""The C pc-value decoder and lgf's on-disk cache of its indexes (issue 21).

The native path is the one used here and answers exactly as the pure-Python path does; a second
process symbolizing the same build reads the index the first wrote and decodes nothing; a damaged
cache file (torn, truncated, bit-flipped, forged with a valid checksum, another build's) is
reported, removed and rebuilt with the answers unchanged; concurrent writers leave one whole
file; the cache directory stays under its size bound; memory stays bounded whatever the number of
distinct PCs.
"""

from __future__ import annotations

import logging
import os
import struct
import subprocess
import tracemalloc
import zlib

import pytest

from lgf.golang import pclntab_format
from lgf.golang.pclntab import _FUNC_CACHE, Pclntab
from lgf.golang.pclntab_cache import _HEADER, SUFFIX, IndexCache
from lgf.golang.symbols import Symbolizer
from support.gobuild import GO_VERSIONS, GOAPPS, build_go
from support.symbolize import LGF, addr2line_tool, compile_binary, link_binary, spread_pcs, stripped_copy


def _lgf_symbolize(binary, cache, stdin: bytes) -> subprocess.CompletedProcess:
    """`lgf symbolize --addr2line` as a user runs it, its own process, telling where its index came from."""
    return subprocess.run([str(LGF), "--log-level", "debug", "symbolize", "--addr2line", "--cache-dir", str(cache),
                           str(binary)], input=stdin, capture_output=True, check=False)


def _index_file(cache) -> str:
    files = [f for f in os.listdir(cache) if f.endswith(SUFFIX) and not f.startswith(".tmp-")]
    assert len(files) == 1, files
    return os.path.join(cache, files[0])


def test_the_native_decoder_is_built_and_used():
    assert pclntab_format.native is not None, f"lgf.golang._pcvalue did not import: {pclntab_format.NATIVE_MISSING}"
    assert pclntab_format.native_or_warn()
    tab = Pclntab.from_elf(link_binary(GO_VERSIONS[-1]))
    assert tab.native and tab.index_source == ""
    tab.addr2line(tab.func_by_name("runtime.gopark"))
    assert tab.index_source == "built"


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_native_and_python_paths_give_the_same_frames(go_toolchains, version):
    """Every answer of the C index is the pure-Python walk's, inline chains and return addresses
    included, on a large binary (stripped) and on the inline fixture (every PC of main.*)."""
    for binary in (stripped_copy(compile_binary(version)), build_go(GOAPPS / "inline", version)):
        fast, slow = Pclntab.from_elf(binary), Pclntab.from_elf(binary, use_native=False)
        assert fast.native and not slow.native
        pcs = spread_pcs(binary, 3000, seed=5)
        pcs += [pc for name, entry, end in fast.funcs() if name.startswith("main.") for pc in range(entry, end)]
        for pc in pcs:
            assert fast.addr2line(pc) == slow.addr2line(pc), hex(pc)
            assert fast.frames(pc) == slow.frames(pc), hex(pc)
            assert fast.frames(pc, is_return_addr=False) == slow.frames(pc, is_return_addr=False), hex(pc)


def test_a_second_process_starts_warm_from_the_cache(go_toolchains, tmp_path):
    binary = link_binary(GO_VERSIONS[-1])
    stdin = "".join(f"{pc:#x}\n" for pc in spread_pcs(binary, 20_000)).encode()
    expected = subprocess.run([str(addr2line_tool(GO_VERSIONS[-1])), str(binary)], input=stdin,
                              capture_output=True, check=True).stdout
    cache = tmp_path / "symcache"
    first = _lgf_symbolize(binary, cache, stdin)
    assert first.returncode == 0, first.stderr
    assert b"pc-value index decoded here" in first.stderr
    stored = os.stat(_index_file(cache))
    second = _lgf_symbolize(binary, cache, stdin)
    assert second.returncode == 0, second.stderr
    assert b"pc-value index read from the cache" in second.stderr
    assert first.stdout == second.stdout == expected
    after = os.stat(_index_file(cache))
    assert (after.st_ino, after.st_size) == (stored.st_ino, stored.st_size), "a warm process rewrote the file"


def test_a_restarted_symbolizer_reads_the_index_instead_of_decoding(go_toolchains, tmp_path):
    binary = link_binary(GO_VERSIONS[-1])
    pcs = spread_pcs(binary, 2000)
    cold = IndexCache(tmp_path)
    sym = Symbolizer(binary, index_cache=cold)
    answers = [sym.addr2line(pc) for pc in pcs]
    assert (sym.index_source, cold.hits, cold.misses) == ("built", 0, 1)
    assert isinstance(sym.table.pc_index, memoryview), "once stored, the index should be the mapped file"
    sym.close()
    warm = IndexCache(tmp_path)
    sym = Symbolizer(binary, index_cache=warm)
    assert [sym.addr2line(pc) for pc in pcs] == answers
    assert (sym.index_source, warm.hits, warm.misses) == ("cache", 1, 0)
    assert isinstance(sym.table.pc_index, memoryview), "the index should be the mapped file, not a copy"
    sym.close()


def _flip(path, at: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(data)


def _forge(path) -> None:
    """Point the first function's file ranges past the index and fix the checksum: only the C
    decoder's structure check can tell."""
    blob = bytearray(open(path, "rb").read())
    payload = memoryview(blob)[_HEADER.size:]
    func0 = 64  # the index's own header is 64 bytes; then the function records
    start_file = func0 + 4 * 7  # entry, end, cu, name, table_off[3], then start[file] (ix_func)
    struct.pack_into("=I", payload, start_file, 0xFFFFFFF0)
    magic, version, _, length, key = _HEADER.unpack_from(blob)
    _HEADER.pack_into(blob, 0, magic, version, zlib.crc32(payload), length, key)
    open(path, "wb").write(blob)


DAMAGE = {
    "bit flip": lambda path: _flip(path, os.path.getsize(path) // 2, b"\xa5\x5a\xa5"),
    "truncated": lambda path: os.truncate(path, os.path.getsize(path) // 3),
    "header only": lambda path: os.truncate(path, 10),
    "empty": lambda path: os.truncate(path, 0),
    "foreign magic": lambda path: _flip(path, 0, b"NOTLGF!!"),
    "forged ranges": _forge,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_cache_file_is_reported_removed_and_rebuilt(go_toolchains, tmp_path, caplog, damage):
    binary = build_go(GOAPPS / "inline", GO_VERSIONS[-1])
    tab = Pclntab.from_elf(binary, use_native=False)
    pcs = [pc for _, entry, end in tab.funcs() for pc in range(entry, end, 7)][:5000]
    expected = [(name, f"{file}:{line}") for name, file, line in map(tab.addr2line, pcs)]
    IndexCache(tmp_path).attach(Pclntab.from_elf(binary))
    path = _index_file(tmp_path)
    DAMAGE[damage](path)
    cache = IndexCache(tmp_path)
    with caplog.at_level(logging.WARNING, logger="lgf.golang.pclntab_cache"):
        sym = Symbolizer(binary, index_cache=cache)
        assert [sym.addr2line(pc) for pc in pcs] == expected
    assert (sym.index_source, cache.rebuilt, cache.hits) == ("built", 1, 0)
    assert any("removed, the index is decoded again" in r.getMessage() for r in caplog.records)
    sym.close()
    again = IndexCache(tmp_path)
    assert again.attach(Pclntab.from_elf(binary)) == "cache" and again.rebuilt == 0


def test_another_builds_file_under_this_builds_name_is_not_used(go_toolchains, tmp_path, caplog):
    old, new = (build_go(GOAPPS / "inline", v) for v in (GO_VERSIONS[0], GO_VERSIONS[-1]))
    IndexCache(tmp_path / "old").attach(Pclntab.from_elf(old))
    IndexCache(tmp_path / "new").attach(Pclntab.from_elf(new))
    os.replace(_index_file(tmp_path / "old"), _index_file(tmp_path / "new"))
    cache = IndexCache(tmp_path / "new")
    with caplog.at_level(logging.WARNING, logger="lgf.golang.pclntab_cache"):
        assert cache.attach(Pclntab.from_elf(new)) == "built"
    assert cache.rebuilt == 1 and "another build's index" in caplog.text


def test_concurrent_writers_leave_one_whole_file(go_toolchains, tmp_path):
    binary = link_binary(GO_VERSIONS[-1])
    stdin = "".join(f"{pc:#x}\n" for pc in spread_pcs(binary, 2000)).encode()
    cache = tmp_path / "symcache"
    procs = [subprocess.Popen([str(LGF), "symbolize", "--addr2line", "--cache-dir", str(cache), str(binary)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(4)]
    outs = [p.communicate(stdin) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    assert len({out for out, _ in outs}) == 1
    assert os.listdir(cache) == [os.path.basename(_index_file(cache))], "a temporary file was left behind"
    assert IndexCache(cache).attach(Pclntab.from_elf(binary)) == "cache"


def test_the_cache_directory_stays_under_its_bound(go_toolchains, tmp_path):
    binaries = [build_go(GOAPPS / "inline", v) for v in GO_VERSIONS]
    sizes = []
    for b in binaries:
        tab = Pclntab.from_elf(b)
        sizes.append(len(tab.pc_index) + _HEADER.size)
    bound = sizes[-1] + sizes[-2]  # room for the last two builds, not all three
    for b in binaries:
        IndexCache(tmp_path, max_bytes=bound).attach(Pclntab.from_elf(b))
    kept = [os.path.join(tmp_path, f) for f in os.listdir(tmp_path)]
    assert sum(os.path.getsize(f) for f in kept) <= bound and len(kept) == 2
    assert IndexCache(tmp_path, max_bytes=bound).attach(Pclntab.from_elf(binaries[-1])) == "cache"
    assert IndexCache(tmp_path, max_bytes=bound).attach(Pclntab.from_elf(binaries[0])) == "built"


def test_memory_stays_bounded_whatever_the_number_of_distinct_pcs(go_toolchains):
    """Two passes of 100,000 PCs each over all of the linker's functions, no PC seen twice: the
    per-PC and per-function caches stop at their bounds, the decoded names at the binary's own, and
    the second pass ends with Python memory where the first left it."""
    binary = link_binary(GO_VERSIONS[-1])
    tab = Pclntab.from_elf(binary)
    every = [pc for _, entry, end in tab.funcs() for pc in range(entry, end)]
    step = len(every) // 100_000
    passes = [every[k::step][:100_000] for k in (0, 1)]
    assert not set(passes[0]) & set(passes[1])
    sym = Symbolizer(binary, cache_size=4096)
    tracemalloc.start()
    try:
        after = []
        for pcs in passes:
            for pc in pcs:
                sym.frames(pc)
            after.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert len(sym._cache) == 4096 and len(sym.table._func_cache) == _FUNC_CACHE
    names = sum(len(s.encode()) + 1 for s in sym.table._strings.values())
    assert names <= len(sym.table.raw_bytes(whole=True)), "more names kept than the binary holds"
    assert after[1] < after[0] + (256 << 10), f"memory grew by {(after[1] - after[0]) >> 10} KiB in the 2nd pass"


def test_the_host_keeps_its_symbol_cache_under_spool_dir(go_toolchains, tmp_path):
    """A host's services (one per lgf run) share one cache in <spool_dir>/symcache: the services of
    a restarted host find the index the first one decoded."""
    from lgf import config as cfg
    from lgf.services import Services

    config = cfg.validate({"lgf": {"spool_dir": str(tmp_path)}}, {})
    binary = build_go(GOAPPS / "inline", GO_VERSIONS[-1])
    pc = Pclntab.from_elf(binary).func_by_name("main.work")
    sources = []
    for _ in range(2):  # the first run, then the restart
        services = Services.for_config(config)
        assert services.symbolizers.index_cache.directory == tmp_path / "symcache"
        assert services.functions(str(binary), [pc + 1])[-1] == "main.work"  # a return address
        sources.append(services.symbolizers.get(binary).index_source)
        services.symbolizers.close()
    assert sources == ["built", "cache"]
