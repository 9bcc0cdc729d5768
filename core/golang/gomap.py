"""Read a Go map of strings out of a live process: ``map[string]string`` and ``map[string][]string``.

Why: the trace context of a stalled goroutine lives in Go maps, the HTTP request's header
(``http.Header`` is ``map[string][]string``) and, up to Go 1.23, its pprof labels
(``map[string]string``). lgf reads them from outside, through ``process_vm_readv``, so the layout
of a map in memory must be known exactly; it changed twice in the releases lgf supports:

- **bucket hash map** (``runtime/map.go``, Go 1.19, 1.21 to 1.23, and 1.24/1.25 built with
  ``GOEXPERIMENT=noswissmap``): the map value points to an ``hmap`` (``count``, ``B``, ``buckets``,
  ``oldbuckets``); ``2^B`` buckets of 8 slots: ``tophash[8]``, 8 keys, 8 values, an overflow
  pointer. A slot is full when its tophash is at least ``minTopHash`` (5); while the map grows,
  entries not yet moved sit in ``oldbuckets`` (a bucket whose first tophash is 2 to 4 is moved).
- **Swiss table** (``internal/runtime/maps``, Go 1.24 on): the map value points to a ``Map``
  (``used``, ``dirPtr``, ``dirLen``). ``dirLen == 0``: ``dirPtr`` is one group of 8 slots (a small
  map); else a directory of ``dirLen`` table pointers (one table may fill several entries), each
  table with ``lengthMask + 1`` groups. A group is a control word (8 bytes, one per slot: high bit
  clear = full) then the slots: interleaved key/value pairs, or, with Go 1.27's
  ``GOEXPERIMENT=mapsplitgroup``, 8 keys then 8 values.

Offsets and the group layout come from :data:`LAYOUTS`, one entry per family, checked against each
toolchain's DWARF by ``tests/test_gomap.py`` (``runtime.hmap``, ``internal/runtime/maps.Map``,
``internal/runtime/maps.table``); :func:`map_layout` picks the family from the binary's Go version
and its build settings (``GOEXPERIMENT``), and refuses a Go release it has not been checked on
with :class:`UnknownMapLayout` rather than read garbage.

Bounded: at most ``max_entries`` entries, ``max_groups`` buckets or groups visited, strings of at
most ``max_string`` bytes, slices of at most ``max_values`` strings; anything beyond raises
:class:`Unreadable` (``too_large``), and an inconsistent map (more entries found than it counts,
which a concurrent writer can cause) raises ``inconsistent``. Passing ``keys`` reads only the
values of those keys: every key's string header is read, but only keys of a wanted length are
compared, so looking up one header in a large map costs a few scattered reads.

Cost: one ``process_vm_readv`` for the map header, one per bucket chain level or per table of
groups, one for the key bytes and one for the values: a 10-entry header map is 4 to 5 syscalls.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from lgf.errors import TargetRefused
from lgf.golang.runtime_reader import Unreadable

__all__ = ["LAYOUTS", "MapLayout", "UnknownMapLayout", "map_layout", "read_string", "read_string_map",
           "read_strings_map"]

SLOTS = 8
"""Slots per bucket (hmap) or per group (Swiss): 8 in every release."""
MIN_TOPHASH = 5
EVACUATED = (2, 3, 4)
SAME_SIZE_GROW = 8
"""``hmap.flags`` bit: the map grows into an array of the same size (old array: 2^B buckets)."""
CTRL_FULL_MASK = 0x80
"""A Swiss control byte with this bit clear marks a full slot (empty 0x80, deleted 0xFE)."""

STRING_SIZE = 16
SLICE_SIZE = 24


class Memory(Protocol):
    """What the readers need of a process: :class:`lgf.golang.runtime_reader.RuntimeReader`."""

    def read(self, addr: int, size: int) -> bytes: ...

    def read_scattered(self, addrs: list[int], size: int | list[int]) -> bytes: ...


class UnknownMapLayout(TargetRefused):
    """The binary's map layout is not one lgf has checked (a newer Go, an unknown experiment)."""


@dataclass(frozen=True)
class MapLayout:
    """Where a map's parts are, for one family of Go releases."""

    family: str
    """``"hmap"`` or ``"swiss"``."""
    split_group: bool = False
    """Swiss groups stored as 8 keys then 8 values (GOEXPERIMENT=mapsplitgroup)."""
    # hmap
    hmap_count: int = 0
    hmap_flags: int = 8
    hmap_b: int = 9
    hmap_buckets: int = 16
    hmap_oldbuckets: int = 24
    # Swiss Map and table
    map_used: int = 0
    map_dir_ptr: int = 16
    map_dir_len: int = 24
    table_groups_data: int = 16
    table_groups_mask: int = 24

    def slot_offsets(self, value_size: int) -> tuple[int, int, int, int, int]:
        """``(keys_off, key_stride, values_off, value_stride, group_or_bucket_size)`` for string
        keys and values of ``value_size`` bytes (strings 16, slices 24; both stored inline)."""
        if self.family == "hmap":  # tophash[8] | keys[8] | values[8] | overflow pointer
            values = SLOTS + SLOTS * STRING_SIZE
            return SLOTS, STRING_SIZE, values, value_size, values + SLOTS * value_size + 8
        if self.split_group:  # ctrl | keys[8] | values[8]
            values = 8 + SLOTS * STRING_SIZE
            return 8, STRING_SIZE, values, value_size, values + SLOTS * value_size
        slot = STRING_SIZE + value_size  # ctrl | {key, value}[8] (both 8-aligned: no padding)
        return 8, slot, 8 + STRING_SIZE, slot, 8 + SLOTS * slot


LAYOUTS = {
    "hmap": MapLayout("hmap"),
    "swiss": MapLayout("swiss"),
    "swiss-split": MapLayout("swiss", split_group=True),
}
"""Every map layout lgf reads. The offsets are the same in every release of a family
(``runtime.hmap`` 1.0 to 1.25; ``maps.Map``/``maps.table`` 1.24 to 1.27), checked against DWARF."""

NEWEST_CHECKED = (1, 27)
"""The newest Go release whose map layout was checked; newer ones are refused."""


def map_layout(binary) -> MapLayout:
    """The map layout of a :class:`~lgf.golang.gobinary.GoBinary` (by its Go version and
    ``GOEXPERIMENT`` build setting); raises :class:`UnknownMapLayout` naming why."""
    major, minor, _ = binary.version_tuple
    experiments = {e.strip() for e in binary.info.settings.get("GOEXPERIMENT", "").split(",") if e.strip()}
    if (major, minor) > NEWEST_CHECKED:
        raise UnknownMapLayout(f"{binary.path}: {binary.go_version} is newer than the newest Go whose map "
                               f"layout lgf knows (go{NEWEST_CHECKED[0]}.{NEWEST_CHECKED[1]}); update lgf")
    if (major, minor) < (1, 24):
        return LAYOUTS["hmap"]
    if "noswissmap" in experiments:
        if (major, minor) > (1, 25):
            raise UnknownMapLayout(f"{binary.path}: GOEXPERIMENT=noswissmap in {binary.go_version}, "
                                   "which has no such experiment")
        return LAYOUTS["hmap"]
    return LAYOUTS["swiss-split" if "mapsplitgroup" in experiments else "swiss"]


# -- strings ---------------------------------------------------------------------------------------

def read_string(mem: Memory, header: bytes, max_string: int) -> str:
    """The Go string whose 16-byte header (pointer, length) is ``header``."""
    ptr, n = struct.unpack("<QQ", header)
    if n == 0:
        return ""
    if n > max_string or not ptr:
        raise Unreadable("too_large" if ptr else "bad_address")
    return mem.read(ptr, n).decode("utf-8", "replace")


def _read_strings(mem: Memory, headers: list[tuple[int, int]], max_string: int) -> list[str]:
    """Many strings at once, given their ``(pointer, length)``: one scattered read."""
    want = [(p, n) for p, n in headers if n]
    for p, n in want:
        if n > max_string:
            raise Unreadable("too_large")
        if not p:
            raise Unreadable("bad_address")
    raw = mem.read_scattered([p for p, _ in want], [n for _, n in want]) if want else b""
    out, at = [], 0
    for _p, n in headers:
        out.append(raw[at:at + n].decode("utf-8", "replace"))
        at += n
    return out


# -- the two families --------------------------------------------------------------------------------

@dataclass
class _Limits:
    max_entries: int
    max_groups: int
    max_string: int
    max_values: int


def _slots(mem: Memory, layout: MapLayout, map_ptr: int, value_size: int, lim: _Limits) -> list[tuple[bytes, bytes]]:
    """``(key header, value bytes)`` of every full slot of the map at ``map_ptr``."""
    if not map_ptr:
        return []
    if layout.family == "hmap":
        return _hmap_slots(mem, layout, map_ptr, value_size, lim)
    return _swiss_slots(mem, layout, map_ptr, value_size, lim)


def _hmap_slots(mem: Memory, layout: MapLayout, hmap: int, value_size: int, lim: _Limits):
    head = mem.read(hmap, 32)
    count = struct.unpack_from("<q", head, layout.hmap_count)[0]
    flags, b = head[layout.hmap_flags], head[layout.hmap_b]
    buckets, old = struct.unpack_from("<QQ", head, layout.hmap_buckets)
    if count == 0 or not buckets:
        return []
    if count < 0 or count > lim.max_entries:
        raise Unreadable("too_large" if count > 0 else "inconsistent")
    if b > 30 or (1 << b) > lim.max_groups:
        raise Unreadable("too_large")
    keys_off, key_stride, vals_off, val_stride, size = layout.slot_offsets(value_size)
    level = [buckets + i * size for i in range(1 << b)]
    if old:  # growing: entries not yet moved are still in the old array (half or same size)
        n_old = 1 << b if flags & SAME_SIZE_GROW or not b else 1 << (b - 1)
        level += [old + i * size for i in range(n_old)]
        n_old_start = 1 << b
    else:
        n_old_start = len(level)
    out: list[tuple[bytes, bytes]] = []
    visited = 0
    first = True
    while level:
        visited += len(level)
        if visited > lim.max_groups:
            raise Unreadable("too_large")
        raw = mem.read_scattered(level, size)
        nxt = []
        for i in range(len(level)):
            bucket = raw[i * size:(i + 1) * size]
            if first and i >= n_old_start and bucket[0] in EVACUATED:
                continue  # an old bucket already moved to the new array (with its overflow chain)
            for s in range(SLOTS):
                if bucket[s] < MIN_TOPHASH:
                    continue
                k = bucket[keys_off + s * key_stride:keys_off + s * key_stride + STRING_SIZE]
                v = bucket[vals_off + s * val_stride:vals_off + s * val_stride + value_size]
                out.append((k, v))
            (overflow,) = struct.unpack_from("<Q", bucket, size - 8)
            if overflow:
                nxt.append(overflow)
        if len(out) > count:
            raise Unreadable("inconsistent")
        level, first = nxt, False
    return out


def _swiss_slots(mem: Memory, layout: MapLayout, m: int, value_size: int, lim: _Limits):
    head = mem.read(m, 32)
    used = struct.unpack_from("<Q", head, layout.map_used)[0]
    dir_ptr, dir_len = struct.unpack_from("<Qq", head, layout.map_dir_ptr)
    if used > lim.max_entries:
        raise Unreadable("too_large")
    if used == 0 or not dir_ptr:
        return []
    keys_off, key_stride, vals_off, val_stride, size = layout.slot_offsets(value_size)
    if dir_len == 0:  # small map: one group
        groups = [dir_ptr]
    else:
        if dir_len < 0 or dir_len > lim.max_groups:
            raise Unreadable("too_large" if dir_len > 0 else "inconsistent")
        tables = list(dict.fromkeys(struct.unpack(f"<{dir_len}Q", mem.read(dir_ptr, 8 * dir_len))))
        if not all(tables):
            raise Unreadable("inconsistent")
        groups = []
        raw = mem.read_scattered(tables, 32)
        for i in range(len(tables)):
            data, mask = struct.unpack_from("<QQ", raw, i * 32 + layout.table_groups_data)
            if not data or mask + 1 + len(groups) > lim.max_groups or mask & (mask + 1):
                raise Unreadable("too_large" if data else "inconsistent")
            groups += [data + j * size for j in range(mask + 1)]
    if len(groups) > lim.max_groups:
        raise Unreadable("too_large")
    raw = mem.read_scattered(groups, size)
    out: list[tuple[bytes, bytes]] = []
    for i in range(len(groups)):
        group = raw[i * size:(i + 1) * size]
        for s in range(SLOTS):
            if group[s] & CTRL_FULL_MASK:
                continue
            k = group[keys_off + s * key_stride:keys_off + s * key_stride + STRING_SIZE]
            v = group[vals_off + s * val_stride:vals_off + s * val_stride + value_size]
            out.append((k, v))
    if len(out) > used:
        raise Unreadable("inconsistent")
    return out


def _pick(mem: Memory, slots, keys: Iterable[str] | None, lim: _Limits) -> list[tuple[str, bytes]]:
    """Decode the keys of ``slots`` (only those of a wanted length when ``keys`` is given)."""
    headers = [struct.unpack("<QQ", k) for k, _ in slots]
    if keys is not None:
        wanted = set(keys)
        lengths = {len(k.encode()) for k in wanted}
        chosen = [i for i, (_, n) in enumerate(headers) if n in lengths]
    else:
        wanted, chosen = None, list(range(len(slots)))
    names = _read_strings(mem, [headers[i] for i in chosen], lim.max_string)
    return [(name, slots[i][1]) for i, name in zip(chosen, names, strict=True)
            if wanted is None or name in wanted]


def read_string_map(mem: Memory, layout: MapLayout, map_ptr: int, keys: Iterable[str] | None = None, *,
                    max_entries: int = 1024, max_groups: int = 4096, max_string: int = 4096) -> dict[str, str]:
    """The ``map[string]string`` whose map value (the pointer a map variable holds) is ``map_ptr``;
    only ``keys`` when given. Raises :class:`Unreadable` (see the module docstring)."""
    lim = _Limits(max_entries, max_groups, max_string, 0)
    picked = _pick(mem, _slots(mem, layout, map_ptr, STRING_SIZE, lim), keys, lim)
    values = _read_strings(mem, [struct.unpack("<QQ", v) for _, v in picked], max_string)
    return {k: v for (k, _), v in zip(picked, values, strict=True)}


def read_strings_map(mem: Memory, layout: MapLayout, map_ptr: int, keys: Iterable[str] | None = None, *,
                     max_entries: int = 1024, max_groups: int = 4096, max_string: int = 4096,
                     max_values: int = 64) -> dict[str, list[str]]:
    """The ``map[string][]string`` (an ``http.Header``) at ``map_ptr``; only ``keys`` when given."""
    lim = _Limits(max_entries, max_groups, max_string, max_values)
    picked = _pick(mem, _slots(mem, layout, map_ptr, SLICE_SIZE, lim), keys, lim)
    slices = []
    for _, v in picked:
        ptr, n, cap = struct.unpack("<QQQ", v)
        if n < 0 or n > cap or n > max_values:
            raise Unreadable("too_large" if n <= cap else "inconsistent")
        slices.append((ptr, n))
    with_values = [(p, n) for p, n in slices if n]
    raw = mem.read_scattered([p for p, _ in with_values], [16 * n for _, n in with_values]) if with_values else b""
    headers = list(struct.iter_unpack("<QQ", raw))
    strings = _read_strings(mem, headers, max_string)
    out, at = {}, 0
    for (k, _), (_p, n) in zip(picked, slices, strict=True):
        out[k] = strings[at:at + n]
        at += n
    return out
