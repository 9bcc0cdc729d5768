"""A parked goroutine's stack, read from outside: its return addresses, by frame pointers.

Why: deciding whether a wait is a stall or an idle wait (:mod:`lgf.idle`) needs the goroutine's
whole stack down to the function it was started with, and the frames that decide are the
outermost ones (``net/http.serverHandler.ServeHTTP``, an accept loop, a worker's loop head). The
sampler reads it once per park, when the park first crosses the threshold, and names its frames
with the host's one symbolize-then-judge (``lgf.services.Services``).

How: a parked goroutine's context is in ``g.sched`` (pc, sp, bp as ``mcall`` saved them) and its
stack ends at ``g.stack.hi``. The used part of the stack, ``[sp, hi)``, is read in one
``process_vm_readv`` (nearly always under a few KiB; at most ``STACK_READ_MAX``), and the frame
pointer chain is followed inside that copy; a frame pointer outside it (a huge stack) is read on
its own. The chain ends at the goroutine's first frame, whose saved bp is 0 and whose return
address is ``runtime.goexit``: a walk that stops earlier (``max_frames``, an unreadable frame)
is *cut*, and is said to be.

Frames, not only return addresses: a caller that wants to read a frame's local variables (the
``*response`` that ``net/http.(*conn).serve`` keeps across the handler's call:
:mod:`lgf.golang.httpserve`) passes ``bounds`` and gets each frame's span. On amd64 a Go frame
lies below the return address its caller pushed: ``CALL`` pushes it, the prologue pushes the
caller's bp just under it and points bp there, then drops sp by the frame size. So the frame of
``pcs[i]`` (i >= 1) holds its locals and outgoing arguments in ``[bp_(i-1) + 16, bp_i)``, where
``bp_(i-1)`` is its callee's frame pointer (its callee's saved bp and return address fill the 16
bytes) and ``bp_i`` its own; the innermost frame's is ``[sched.sp, sched.bp)``. The outermost
frame's end is not known (its saved bp is 0): 0 is given.

Cost: one read per goroutine (batched: one syscall for up to 1024 goroutines).
"""

from __future__ import annotations

import struct

from .runtime_reader import Unreadable

STACK_READ_MAX = 32 * 1024
"""Bytes of a goroutine's stack read at once (from its saved sp up); deeper frames are read one
by one."""
MAX_WALK_FRAMES = 256
"""Physical frames followed at most (inlined calls add names, not frames)."""

_TWO = struct.Struct("<QQ")


def walk(reader, pc: int, bp: int, sp: int, hi: int, max_frames: int = MAX_WALK_FRAMES,
         copy: bytes | None = None, bounds: list[tuple[int, int]] | None = None) -> tuple[list[int], bool]:
    """``(pcs, complete)``: the return addresses of one parked goroutine, innermost first (its
    saved pc first), and whether the walk reached the end of the frame-pointer chain. With
    ``bounds`` (a list), appends ``(lo, hi)`` for each pc: the addresses its frame spans
    (module docstring; ``hi`` 0 when unknown)."""
    if copy is None and sp and hi > sp:
        try:
            copy = reader.read(sp, min(hi - sp, STACK_READ_MAX))
        except Unreadable:
            copy = None
    pcs = [pc] if pc else []
    if bounds is not None and pc:
        bounds.append((sp, bp))
    while pc and bp and len(pcs) < max_frames:
        callee_bp = bp
        at = bp - sp
        try:
            if copy is not None and 0 <= at <= len(copy) - 16:
                bp, pc = _TWO.unpack_from(copy, at)
            else:
                bp, pc = _TWO.unpack(reader.read(bp, 16))
        except Unreadable:
            return pcs, False
        if not pc:
            break
        pcs.append(pc)
        if bounds is not None:
            bounds.append((callee_bp + 16, bp))
    return pcs, not bp


def walk_many(reader, contexts: list[tuple[int, int, int, int]], max_frames: int = MAX_WALK_FRAMES,
              bounds: list[list[tuple[int, int]]] | None = None) -> list[tuple[list[int], bool]]:
    """:func:`walk` for many ``(pc, bp, sp, hi)`` at once: their stacks read in one batch (a
    goroutine that moved meanwhile makes the batch fail; then each is read on its own).
    ``bounds``: one list per context, filled as :func:`walk` fills its own."""
    spans = [(sp, min(hi - sp, STACK_READ_MAX)) for _pc, _bp, sp, hi in contexts]
    copies: list[bytes | None] = [None] * len(contexts)
    wanted = [i for i, (sp, n) in enumerate(spans) if sp and n > 0]
    if wanted:
        try:
            raw = reader.read_scattered([spans[i][0] for i in wanted], [spans[i][1] for i in wanted])
            at = 0
            for i in wanted:
                copies[i] = raw[at:at + spans[i][1]]
                at += spans[i][1]
        except Unreadable:
            pass  # walk() reads each on its own
    return [walk(reader, pc, bp, sp, hi, max_frames, copies[i], None if bounds is None else bounds[i])
            for i, (pc, bp, sp, hi) in enumerate(contexts)]

