"""The words of a parked goroutine's frames: where :mod:`lgf.golang.pollwait` and
:mod:`lgf.golang.httpclient` look for the object a goroutine waits on.

Why a module: both look the same way :mod:`lgf.golang.httpserve` does, in the frames of a
function that keeps a pointer live across the call it is parked in (Go's register ABI saves no
register across a call, so such a value sits in a stack slot of that function's frame, or of its
caller's, where its register arguments are spilled). This module finds those frames and gives
the words in them that could point at the heap or at off-heap runtime memory; the callers check
each candidate against what the object must hold, and believe only a single survivor.

Frames come from :func:`lgf.golang.goroutine_stack.walk` (``pcs`` and ``bounds``); a function's
span from the binary's symbol table or the pclntab of a stripped binary (``func_addr`` /
``func_size``, once per binary).
"""

from __future__ import annotations

import struct

from .runtime_reader import Unreadable

MAX_FRAME_BYTES = 16 * 1024
"""A frame larger than this is taken for a broken walk."""
MAX_CANDIDATES = 512
_LOW = 0x10000
_USER_MAX = 1 << 47


def func_span(binary, name: str) -> tuple[int, int] | None:
    """``[entry, end)`` of function ``name`` in ``binary`` (unbiased), None if it has none."""
    def span():
        entry, size = binary.func_addr(name), binary.func_size(name)
        return (entry, entry + size) if entry and size else None
    return binary.memo(f"goframes.span.{name}", span)


def frame_of(binary, bias: int, pcs: list[int], names: tuple[str, ...]) -> int | None:
    """Index in ``pcs`` of the innermost frame running one of ``names`` (None: none does)."""
    spans = [s for s in (func_span(binary, n) for n in names) if s]
    for i, pc in enumerate(pcs):
        if any(lo <= pc - bias < hi for lo, hi in spans):
            return i
    return None


def frame_words(reader, bounds: list[tuple[int, int]], first: int, last: int) -> list[int]:
    """The 8-byte words of frames ``first`` to ``last`` (inclusive; ``last`` is usually the caller
    of the function of interest, whose frame holds its spilled arguments), in one read. Frames
    with impossible bounds end the span early; the outermost frame (end unknown) is left out."""
    lo = bounds[first][0]
    hi = lo
    for i in range(first, min(last, len(bounds) - 1) + 1):
        f_lo, f_hi = bounds[i]
        if not (f_lo % 8 == 0 and f_lo >= hi - 16 and f_lo < f_hi <= f_lo + MAX_FRAME_BYTES):
            break
        hi = f_hi
    if hi <= lo:
        return []
    raw = reader.read(lo, hi - lo)
    return list(struct.unpack(f"<{len(raw) // 8}Q", raw))


def pointer_candidates(words: list[int], stack: tuple[int, int]) -> list[int]:
    """Distinct words that could point at an object off this goroutine's stack (aligned, in user
    space), at most ``MAX_CANDIDATES``."""
    sp, hi = stack
    return sorted({w for w in words if not w % 8 and _LOW <= w < _USER_MAX and not sp <= w < hi})[:MAX_CANDIDATES]


def read_each(reader, addrs: list[int], size: int) -> list[bytes]:
    """``size`` bytes at each address, b"" where unmapped: one read for all, halved around a word
    that only looked like a pointer."""
    if not addrs:
        return []
    try:
        return reader.read_many(addrs, size)
    except Unreadable as exc:
        if str(exc) != "bad_address":
            raise
        if len(addrs) == 1:
            return [b""]
    half = len(addrs) // 2
    return read_each(reader, addrs[:half], size) + read_each(reader, addrs[half:], size)
