"""Which file descriptor a goroutine parked in "IO wait" waits on: its runtime ``pollDesc``.

A goroutine waiting for a socket (``conn.Read``, ``Accept``, a write that would block) parks in
``runtime.netpollblock(pd, mode, waitio)``, reached from ``internal/poll.runtime_pollWait``
(``runtime.poll_runtime_pollWait``, linknamed). While it is parked, the runtime's ``pollDesc``
of that descriptor holds the goroutine's own address in ``rg`` (waiting to read) or ``wg`` (to
write): ``netpollblockcommit`` swapped it in for ``pdWait``, and the netpoller swaps it out when
it readies the goroutine. ``pd.fd`` is the descriptor, constant for the pollDesc's lifetime.

How it is found: ``netpollblock`` keeps ``gpp`` (``&pd.rg`` or ``&pd.wg``) live across its
``gopark`` call (it swaps ``pdNil`` in after it), and ``poll_runtime_pollWait`` keeps ``pd``
(used after ``netpollblock`` returns): so the frames from the innermost to the caller of
``poll_runtime_pollWait`` hold both (:mod:`lgf.golang.goframes`). Every candidate word ``w`` is
tried as ``gpp`` (``*w == g``) and as ``pd`` (``pd.rg == g`` or ``pd.wg == g``); the goroutine's
address is a fingerprint no other object there has. One pollDesc found is the answer, none or two
are refused (``no_poll_desc``, ``ambiguous``): never a guess.

Why not the other ways: pollDescs live in blocks of ``runtime.pollcache``, but only free ones are
linked there (``pollcache.first``); the blocks in use are reachable from no global, so finding
the one whose ``rg`` holds a goroutine would mean scanning off-heap memory. ``net.(*netFD)`` in
the frames of ``net.(*conn).Read`` would also do, but it is reached only through user code's
``net.Conn`` and its frames vary with inlining; ``netpollblock``'s two frames are the runtime's
own and the same in every Go release that has ``rg``/``wg`` holding the g (all since 1.x; the
``pollDesc`` fields used here, ``fd`` at 8 and ``rg``/``wg`` at 32/40, are the same in
Go 1.21.13, 1.25.5 and 1.27.3 sources and DWARF, at 24/32 in Go 1.19.8, which has no ``fdseq``;
a newer Go is read from its DWARF and refused without it).

Cost: one read of at most a few frames (about 300 bytes) and one scattered read of 24 bytes per
candidate word: tens of microseconds, once per stall, while the goroutine is parked.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .goframes import frame_of, frame_words, pointer_candidates, read_each
from .golayout import dwarf_fields
from .runtime_reader import Unreadable

POLL_WAIT = ("runtime.poll_runtime_pollWait", "internal/poll.runtime_pollWait")
"""The function whose frame holds ``pd`` (the symbol has either name, by Go release)."""
LAYOUT = {"pollDesc.fd": 8, "pollDesc.rg": 32, "pollDesc.wg": 40}
"""Byte offsets in Go 1.21-1.27 (runtime/netpoll.go; DWARF of 1.21.13, 1.25.5, 1.27.3)."""
LAYOUT_GO = ((1, 21), (1, 27))
LAYOUT_119 = {"pollDesc.fd": 8, "pollDesc.rg": 24, "pollDesc.wg": 32}
"""Go 1.19 (DWARF of Debian's go1.19.8): no ``fdseq`` yet between ``fd`` and ``rg``. (lgf refuses
Go 1.20, whose runtime it could not check.)"""


def table_of(version: tuple) -> dict[str, int] | None:
    """The offsets table for a Go ``(major, minor, ...)`` release, or None (then DWARF decides)."""
    if LAYOUT_GO[0] <= tuple(version[:2]) <= LAYOUT_GO[1]:
        return dict(LAYOUT)
    return dict(LAYOUT_119) if tuple(version[:2]) == (1, 19) else None
MAX_FD = 1 << 24


@dataclass(frozen=True)
class PollWait:
    """The descriptor a parked goroutine waits on."""

    fd: int
    mode: str
    """``"r"`` (waiting to read or accept) or ``"w"`` (to write or connect)."""
    poll_desc: int


def offsets_of(binary) -> dict[str, int]:
    """The offsets for ``binary``: the table of its Go release (1.19, 1.21-1.27), else its DWARF;
    raises Unreadable."""
    return binary.memo("pollwait.offsets", lambda: _offsets_of(binary))


def _offsets_of(binary) -> dict[str, int]:
    table = table_of(binary.version_tuple)
    if table is not None:
        return table
    got = dwarf_offsets(binary)
    if not got:
        raise Unreadable("unknown_layout")
    return got


def dwarf_offsets(binary) -> dict[str, int]:
    """What the binary's DWARF says of ``LAYOUT``'s fields ({} without it): for checking the table."""
    return dwarf_fields(binary, {f"pollDesc.{f}": ("runtime.pollDesc", f) for f in ("fd", "rg", "wg")})


def find_poll_wait(reader, binary, g: int, pcs: list[int], bounds: list[tuple[int, int]],
                   stack: tuple[int, int]) -> PollWait:
    """The descriptor goroutine ``g`` (its address), parked in "IO wait", waits on; ``pcs`` and
    ``bounds`` from :func:`lgf.golang.goroutine_stack.walk`, ``stack`` its ``[sp, stack.hi)``.
    Raises :class:`Unreadable` (``no_poll_frame``, ``no_poll_desc``, ``ambiguous``, ``bad_fd``,
    a read's reason, ``unknown_layout``)."""
    i = frame_of(binary, reader.bias, pcs, POLL_WAIT)
    if i is None or not g:
        raise Unreadable("no_poll_frame")
    off = offsets_of(binary)
    o_fd, o_rg, o_wg = off["pollDesc.fd"], off["pollDesc.rg"], off["pollDesc.wg"]
    words = frame_words(reader, bounds, 0, i + 1)
    cands = pointer_candidates(words, stack)
    # As pd (the pointer poll_runtime_pollWait keeps): pd.rg == g or pd.wg == g. A gpp
    # (&pd.rg or &pd.wg) also passes as a pd 32 or 40 bytes lower, but cannot tell rg from wg
    # by itself: it only confirms a pd found directly, or gives one when no pd pointer is there.
    lo = min(o_rg, o_wg)
    real: dict[int, str] = {}
    for w, raw in zip(cands, read_each(reader, [c + lo for c in cands], 16), strict=True):
        if raw:
            rg, wg = struct.unpack_from("<Q", raw, o_rg - lo)[0], struct.unpack_from("<Q", raw, o_wg - lo)[0]
            if g in (rg, wg):
                real[w] = "r" if rg == g else "w"
    direct = {pd: mode for pd, mode in real.items() if pd + o_rg in cands or pd + o_wg in cands}
    if direct:  # a pd whose &rg or &wg (netpollblock's gpp) is in the frames as well
        real = direct
    if not real:
        raise Unreadable("no_poll_desc")
    if len(real) > 1:
        raise Unreadable("ambiguous")
    pd, mode = next(iter(real.items()))
    fd = reader.u64(pd + o_fd)
    if not 0 <= fd < MAX_FD:
        raise Unreadable("bad_fd")
    return PollWait(fd, mode, pd)
