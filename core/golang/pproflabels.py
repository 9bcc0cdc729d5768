"""A goroutine's pprof labels (``runtime/pprof.Do``, ``pprof.SetGoroutineLabels``), read from outside.

Where they are: ``g.labels`` (an ``unsafe.Pointer``, offset from DWARF or the layout table) points
to the ``*labelMap`` the program last set, and that changed shape in Go 1.24
(``runtime/pprof/label.go``):

- Go 1.19, 1.21 to 1.23: ``type labelMap map[string]string``; ``g.labels`` is a pointer to a map
  variable, i.e. to the map value, read by :func:`lgf.golang.gomap.read_string_map`;
- Go 1.24 on: ``type labelMap struct{ LabelSet }`` (1.26 on: ``label.Set``), one field, a slice
  of ``{key, value string}`` pairs sorted by key: slice header, then 32 bytes per pair.

A labelMap is never changed once set (``WithLabels`` builds a new one), so a pointer taken while the
goroutine was stalled (the uprobe source reads ``g.labels`` in BPF when it reports the stall, and
puts it in ``extra["pprof_labels_addr"]``) still names the stall's labels when lgf reads them a few
milliseconds later, even if the goroutine has set others since; but once nothing refers to it the
garbage collector may reuse its memory (a busy server allocates a labelMap per request), so what
is read is checked: valid UTF-8, and for slices keys sorted and distinct as ``WithLabels`` leaves
them; anything else is ``Unreadable("garbage")``, never a made-up label. The sampler, which sees
the goroutine still parked, reads the labels at once (:func:`labels_of_g`).

Bounded: at most ``max_labels`` pairs and ``max_string`` bytes per key or value, else
:class:`~lgf.golang.runtime_reader.Unreadable` (``too_large``). Cost: 3 reads (the pointer's target,
the pairs, their strings in one scattered read); only for stalls, never per goroutine switch.
"""

from __future__ import annotations

import struct

from lgf.errors import TargetRefused
from lgf.golang.gomap import LAYOUTS, read_string_map
from lgf.golang.runtime_reader import Unreadable

MAX_LABELS = 64
MAX_STRING = 1024
PAIR_SIZE = 32
"""``{key, value string}``: two string headers."""


def labels_are_slice(binary) -> bool:
    """Whether ``binary`` keeps labels as a sorted slice of pairs (Go 1.24 on) or as a map."""
    return binary.version_tuple[:2] >= (1, 24)


def labels_ptr_offset(binary) -> int | None:
    """Offset of ``g.labels`` in ``binary``'s runtime.g, or None when its layout does not say."""
    try:
        return binary.field_offset("g", "labels")
    except TargetRefused:  # no DWARF entry and no table entry for this Go
        return None


def read_labels(mem, binary, labels_ptr: int, max_labels: int = MAX_LABELS,
                max_string: int = MAX_STRING) -> dict[str, str]:
    """The labels at ``labels_ptr`` (the value of ``g.labels``); {} for a null pointer."""
    if not labels_ptr:
        return {}
    if not labels_are_slice(binary):
        (map_ptr,) = struct.unpack("<Q", mem.read(labels_ptr, 8))
        return read_string_map(mem, LAYOUTS["hmap"], map_ptr, max_entries=max_labels, max_string=max_string)
    ptr, n, cap = struct.unpack("<QQQ", mem.read(labels_ptr, 24))
    if n == 0:
        return {}
    if n > max_labels or n > cap or not ptr:
        raise Unreadable("too_large" if n <= cap and ptr else "inconsistent")
    raw = mem.read(ptr, n * PAIR_SIZE)
    headers = list(struct.iter_unpack("<QQ", raw))
    for p, length in headers:
        if length > max_string or (length and not p):
            raise Unreadable("too_large" if p else "inconsistent")
    wanted = [(p, length) for p, length in headers if length]
    blob = mem.read_scattered([p for p, _ in wanted], [length for _, length in wanted]) if wanted else b""
    strings, at = [], 0
    for _p, length in headers:
        try:
            strings.append(blob[at:at + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise Unreadable("garbage") from None
        at += length
    keys = strings[0::2]
    if any(a >= b for a, b in zip(keys, keys[1:], strict=False)):  # WithLabels sorts and dedups
        raise Unreadable("garbage")
    return dict(zip(keys, strings[1::2], strict=True))


def labels_of_g(mem, binary, g: int) -> dict[str, str]:
    """The pprof labels of the goroutine whose ``g`` struct is at ``g``, read now ({} when they
    cannot be read: no offset for this Go, memory gone or inconsistent)."""
    off = labels_ptr_offset(binary)
    if off is None:
        return {}
    try:
        (ptr,) = struct.unpack("<Q", mem.read(g + off, 8))
        return read_labels(mem, binary, ptr)
    except (Unreadable, TargetRefused):
        return {}
