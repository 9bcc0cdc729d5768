"""Go maps, pprof labels and request headers read from a live process, on every map layout.

The oracle is the program itself: tests/goapps/tracehttp builds maps of known contents and prints
their addresses, and its /hold handler prints its *http.Request and goroutine id while it waits
under pprof labels; lgf reads them back through /proc/PID/mem (process_vm_readv). Every toolchain
the Makefile installs, plus the two other map layouts a Go of those releases can be built with
(GOEXPERIMENT=noswissmap on 1.25: the bucket hmap again; mapsplitgroup on 1.27: split groups).
"""

from __future__ import annotations

import os
import struct
import types

import pytest

from lgf.golang.gobinary import open_binary
from lgf.golang.golayout import _walk_dwarf
from lgf.golang.gomap import (
    LAYOUTS,
    UnknownMapLayout,
    map_layout,
    read_string_map,
    read_strings_map,
)
from lgf.golang.httpheader import REQUEST_HEADER_OFFSET, canonical_key, read_request_headers
from lgf.golang.pproflabels import read_labels
from lgf.golang.runtime_reader import RuntimeReader, Unreadable, allg_pointers, read_g_fields
from support.gobuild import GO_VERSIONS
from support.tracehttp import PARENT_SPAN_ID, TRACE_ID, TRACEPARENT, TraceHTTP, known_maps, tracehttp

BUILDS = [(v, "") for v in GO_VERSIONS] + [("1.25.5", "noswissmap"), ("1.27.3", "mapsplitgroup")]
EXPECTED_FAMILY = {("1.19.8", ""): "hmap", ("1.21.13", ""): "hmap", ("1.25.5", ""): "swiss", ("1.27.3", ""): "swiss",
                   ("1.25.5", "noswissmap"): "hmap", ("1.27.3", "mapsplitgroup"): "swiss"}


def ids(build):
    return f"go{build[0]}" + (f"-{build[1]}" if build[1] else "")


@pytest.fixture(scope="module", params=BUILDS, ids=ids)
def app(request, go_toolchains):
    if os.geteuid() != 0:
        pytest.skip("reading another process's memory needs root")
    version, experiment = request.param
    with TraceHTTP(tracehttp(version, experiment)) as running:
        running.build = request.param
        running.reader = RuntimeReader(running.pid)
        yield running
        running.reader.close()


def test_layout_is_the_binarys_own(app):
    layout = map_layout(app.reader.binary)
    assert layout.family == EXPECTED_FAMILY[app.build]
    assert layout.split_group == (app.build[1] == "mapsplitgroup")


def test_string_maps_read_back_exactly(app):
    want, layout = known_maps(), map_layout(app.reader.binary)
    assert read_string_map(app.reader, layout, app.maps["small"]) == want["small"]
    assert read_string_map(app.reader, layout, app.maps["large"]) == want["large"]  # 599 entries, a deleted one


def test_header_map_reads_back_exactly_and_by_key(app):
    want, layout = known_maps()["header"], map_layout(app.reader.binary)
    assert read_strings_map(app.reader, layout, app.maps["header"]) == want
    got = read_strings_map(app.reader, layout, app.maps["header"], keys=["Header-3", "Header-4", "Header-9999"])
    assert got == {"Header-3": ["h3-0", "h3-1", "h3-2"], "Header-4": []}


def test_reads_are_bounded(app):
    layout = map_layout(app.reader.binary)
    with pytest.raises(Unreadable, match="too_large"):
        read_string_map(app.reader, layout, app.maps["large"], max_entries=100)
    with pytest.raises(Unreadable, match="too_large"):
        read_string_map(app.reader, layout, app.maps["large"], max_groups=4)
    assert read_string_map(app.reader, layout, 0) == {}  # a nil map is empty


def _labels_ptr_of(reader, goid: int) -> int:
    """g.labels of the goroutine ``goid``, found through runtime.allgs as the sampler finds gs."""
    b = reader.binary
    fields = sorted([(b.field_offset("g", "goid"), "Q"), (b.field_offset("g", "labels"), "Q")])
    goid_first = fields[0][0] == b.field_offset("g", "goid")
    for _g, a, c in read_g_fields(reader, allg_pointers(reader, 100_000), fields):
        if (a if goid_first else c) == goid:
            return c if goid_first else a
    raise AssertionError(f"goroutine {goid} not in allgs")


def test_request_headers_and_pprof_labels_of_a_waiting_handler(app):
    line, t = app.hold({"traceparent": TRACEPARENT, "X-Tenant": "acme", "X-Many": "1"})
    try:
        req = int(line["req"], 16)
        got = read_request_headers(app.reader, app.reader.binary, req, ["traceparent", "x-tenant", "absent"])
        assert got == {"Traceparent": [TRACEPARENT], "X-Tenant": ["acme"]}
        labels = read_labels(app.reader, app.reader.binary, _labels_ptr_of(app.reader, line["goid"]))
        assert labels == {"route": "/hold", "tenant": "acme"}
    finally:
        app.release()
        t.join(timeout=10)
    assert TRACE_ID in TRACEPARENT and PARENT_SPAN_ID in TRACEPARENT


def test_struct_offsets_agree_with_each_toolchains_dwarf(app):
    binary = app.reader.binary
    dwarf = _walk_dwarf(binary.elf, {"runtime.hmap", "internal/runtime/maps.Map", "internal/runtime/maps.table",
                                     "internal/runtime/maps.groupsReference", "net/http.Request"})
    layout = map_layout(binary)
    assert dwarf[("net/http.Request", "Header")] == REQUEST_HEADER_OFFSET
    if layout.family == "hmap":
        assert (dwarf[("hmap", "count")], dwarf[("hmap", "flags")], dwarf[("hmap", "B")],
                dwarf[("hmap", "buckets")], dwarf[("hmap", "oldbuckets")]) == (
            layout.hmap_count, layout.hmap_flags, layout.hmap_b, layout.hmap_buckets, layout.hmap_oldbuckets)
    else:
        m, t = "internal/runtime/maps.Map", "internal/runtime/maps.table"
        groups = dwarf[(t, "groups")]
        assert (dwarf[(m, "used")], dwarf[(m, "dirPtr")], dwarf[(m, "dirLen")]) == (
            layout.map_used, layout.map_dir_ptr, layout.map_dir_len)
        assert groups + dwarf[("internal/runtime/maps.groupsReference", "data")] == layout.table_groups_data
        assert groups + dwarf[("internal/runtime/maps.groupsReference", "lengthMask")] == layout.table_groups_mask


def test_g_labels_offset_in_the_table_matches_dwarf(go_toolchains):
    from lgf.golang.golayout_table import TABLE

    for version in GO_VERSIONS:
        binary = open_binary(tracehttp(version))
        assert binary.offset_source == "dwarf"
        minor = ".".join(version.split(".")[:2])
        assert TABLE[minor]["fields"]["g.labels"] == binary.field_offset("g", "labels")


def _fake_binary(version: str, experiment: str = ""):
    from lgf.golang.buildinfo import version_tuple

    return types.SimpleNamespace(path="/x/app", go_version=f"go{version}", version_tuple=version_tuple(f"go{version}"),
                                 info=types.SimpleNamespace(settings={"GOEXPERIMENT": experiment} if experiment else {}))


def test_an_unknown_go_or_experiment_is_refused_by_name():
    with pytest.raises(UnknownMapLayout, match=r"go1.28.0 is newer than .*\(go1.27\)"):
        map_layout(_fake_binary("1.28.0"))
    with pytest.raises(UnknownMapLayout, match="noswissmap in go1.26.1"):
        map_layout(_fake_binary("1.26.1", "noswissmap"))
    assert map_layout(_fake_binary("1.23.4")).family == "hmap"
    assert map_layout(_fake_binary("1.24.0", "noswissmap,synctest")).family == "hmap"


def test_canonical_header_keys_are_gos():
    assert canonical_key("traceparent") == "Traceparent"
    assert canonical_key("x-b3-TRACEID") == "X-B3-Traceid"


class _Mem:
    """A process image made of byte strings at addresses (for shapes a real program rarely has)."""

    def __init__(self, blocks: dict[int, bytes]):
        self.blocks = blocks

    def read(self, addr: int, size: int) -> bytes:
        for base, data in self.blocks.items():
            if base <= addr and addr + size <= base + len(data):
                return data[addr - base:addr - base + size]
        raise Unreadable("bad_address")

    def read_scattered(self, addrs, size):
        sizes = size if isinstance(size, list) else [size] * len(addrs)
        return b"".join(self.read(a, n) for a, n in zip(addrs, sizes, strict=True))


def test_a_map_counting_fewer_entries_than_its_slots_is_inconsistent():
    # a Swiss small map claiming 1 entry whose group has 2 full slots (a writer mid-update)
    key = struct.pack("<QQ", 0x9000, 1) + struct.pack("<QQ", 0x9000, 1)
    group = bytes([0x01, 0x02] + [0x80] * 6) + key * 8
    mem = _Mem({0x1000: struct.pack("<QQQq", 1, 0, 0x2000, 0) + bytes(8), 0x2000: group, 0x9000: b"k"})
    with pytest.raises(Unreadable, match="inconsistent"):
        read_string_map(mem, LAYOUTS["swiss"], 0x1000)


def test_labels_from_reused_memory_are_refused_not_reported():
    binary = types.SimpleNamespace(version_tuple=(1, 25, 5))

    def image(keys: list[bytes]):
        strings, blocks, at = [], {}, 0x9000
        for k in keys:
            blocks[at] = k
            strings.append(struct.pack("<QQ", at, len(k)))
            at += 0x100
        pairs = b"".join(strings[i] + strings[i] for i in range(len(keys)))  # value = key
        return _Mem({0x1000: struct.pack("<QQQ", 0x2000, len(keys), len(keys)), 0x2000: pairs, **blocks})

    assert read_labels(image([b"route", b"tenant"]), binary, 0x1000) == {"route": "route", "tenant": "tenant"}
    with pytest.raises(Unreadable, match="garbage"):
        read_labels(image([b"tenant", b"route"]), binary, 0x1000)  # WithLabels keeps them sorted
    with pytest.raises(Unreadable, match="garbage"):
        read_labels(image([b"\xff\xfe"]), binary, 0x1000)
    assert read_labels(image([]), binary, 0) == {}
