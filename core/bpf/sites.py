"""The code sites the kernel judges a long wait by: lgf.idle's rules as a (binary, pc) -> class table.

Why: a wait over the threshold is judged idle or stall in BPF (uprobe.c ``judge_stack``), from the
return addresses of the parked goroutine's own stack, so that an idle wait never crosses into
Python. :class:`lgf.idle.IdleRules` decides by function name; the kernel has only addresses. This
module turns the rules into address ranges of one binary, each with a class:

- ``SITE_REQUEST``: a request marker (``IdleRules.pc_ranges(binary)["request"]``);
- ``SITE_IDLE``: an idle site (``pc_ranges(binary)["idle"]``).

The classes are bits: the kernel ORs them over a stack's frames. lgf.idle's other rules need no
address: ``select {}`` is a wait reason, and the loop-head rule (the waiter called directly by the
goroutine's start function) is confirmed in Python on the symbolized stack, where inlined calls
show.

Adjacent functions of one class are merged into one range, and each range is split into
the fewest aligned power-of-two blocks: the prefixes of an LPM trie keyed by (binary, pc) in
big-endian bytes. One trie lookup classifies a pc, with no loop in BPF.

Cost: one scan of the binary's function table and a few thousand map updates per distinct binary
(a few hundred for a net/http server), once per BPF program.
"""

from __future__ import annotations

from collections.abc import Iterable

from lgf.bpf.constants import SITE_IDLE, SITE_REQUEST


def site_ranges(rules, binary) -> list[tuple[int, int, int]]:
    """``[(lo, hi, class), ...]`` of ``binary`` (ELF addresses, sorted, adjacent ranges of one
    class merged): exactly ``rules.pc_ranges(binary)``, so the kernel and
    :meth:`lgf.idle.IdleRules.judge` agree on every out-of-line frame."""
    spans = rules.pc_ranges(binary)
    ranges = sorted([(lo, hi, SITE_IDLE) for lo, hi in spans.get("idle", ())]
                    + [(lo, hi, SITE_REQUEST) for lo, hi in spans.get("request", ())])
    out: list[list[int]] = []
    for lo, hi, cls in ranges:
        if out and out[-1][2] == cls and out[-1][1] == lo:
            out[-1][1] = hi
        else:
            out.append([lo, hi, cls])
    return [(lo, hi, cls) for lo, hi, cls in out]


def lpm_prefixes(lo: int, hi: int) -> list[tuple[int, int]]:
    """The fewest aligned blocks covering ``[lo, hi)``, as ``(start, prefix bits of 64)``."""
    out = []
    while lo < hi:
        size = lo & -lo if lo else 1 << 64
        while size > hi - lo:
            size >>= 1
        out.append((lo, 64 - (size.bit_length() - 1)))
        lo += size
    return out


def _be(value: int, nbytes: int) -> int:
    """The integer whose little-endian bytes are ``value``'s big-endian bytes (for a ctypes field)."""
    return int.from_bytes(value.to_bytes(nbytes, "big"), "little")


def load(table, bin_index: int, ranges: Iterable[tuple[int, int, int]]) -> int:
    """Put ``ranges`` of binary ``bin_index`` into uprobe.c's ``sites`` trie; returns the prefixes."""
    n = 0
    for lo, hi, cls in ranges:
        for start, bits in lpm_prefixes(lo, hi):
            table[table.Key(32 + bits, _be(bin_index, 4), _be(start, 8))] = table.Leaf(cls)
            n += 1
    return n


def classify(ranges: list[tuple[int, int, int]], pc: int) -> int:
    """The class of ``pc`` in ``ranges`` (what the trie answers; for tests and tools)."""
    import bisect

    i = bisect.bisect_right(ranges, (pc, 1 << 64, 1 << 8)) - 1
    if i >= 0 and ranges[i][0] <= pc < ranges[i][1]:
        return ranges[i][2]
    return 0
