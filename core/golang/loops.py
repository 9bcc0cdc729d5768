"""Whether a call in a Go function is made inside one of the function's loops (amd64 machine code).

Why lgf needs it: :mod:`lgf.idle` tells a service loop waiting for its next tick (idle) from a job
waiting mid-work (a stall) by where the wait sits in the goroutine. A service loop is often
entered through a few frames that do some setup and then call it once (Alertmanager:
``main.run.func1`` calls ``silence.(*Silences).Maintenance`` and then ``wg.Done``;
``dispatch.(*Dispatcher).Run`` resets its maps and calls ``(*Dispatcher).run``); a job's wait is
reached from a loop of some outer frame (a worker's ``for job := range jobs``, a retry loop, a
transport's ``for {}`` around ``persistConn.roundTrip``). The names and the sizes of those frames
do not tell the two apart; the loops of their code do.

How: the function is decoded once (capstone, as :mod:`lgf.golang.prologue`), cut into basic
blocks, and its loops found the textbook way: dominators over the control-flow graph (Cooper,
Harvey and Kennedy's iterative algorithm), a back edge is an edge to a block that dominates its
source, a natural loop is the back edge's head plus every block that reaches its source without
passing the head. A call is in a loop when its block is in one.

What makes the answer ``None`` (cannot tell; lgf then keeps the wait a stall): an indirect jump
(a switch's jump table: edges this decoder cannot see), irreducible control flow (a retreating
edge to a block that does not dominate its source: a loop with two entries, which back edges
miss), code that does not decode, a machine other than amd64. A call to a function that never
returns (``runtime.panic*``, ``runtime.throw``, ``runtime.gopanic``, ``runtime.morestack*``) ends
its block with no successor: the code after it belongs to another path, and a false edge into it
could make or hide a loop. (The stack-growth path, which calls morestack and jumps back to the
entry, would make a loop of the stack check alone, which calls nothing.)

Cost: one decode per function (the largest function of Alertmanager, ``main.run``, 24 KB: ~0.1 s),
kept per binary by the caller (:class:`LoopIndex`); a lookup is a bisect.
"""

from __future__ import annotations

import threading
import weakref
from bisect import bisect_right
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import capstone

__all__ = ["EM_X86_64", "FunctionLoops", "LoopIndex", "function_loops"]

EM_X86_64 = 62

NO_RETURN = ("runtime.morestack", "runtime.panic", "runtime.goPanic", "runtime.gopanic", "runtime.throw",
             "runtime.fatal")
"""Callees that never return to their caller (prefixes): their call ends a block with no successor."""

FUNCTIONS_KEPT = 4096
"""Functions' loop analyses kept per binary (a few hundred bytes each)."""


def _disassembler() -> capstone.Cs:
    import capstone  # (~80 ms: paid by the first judgement that reads code, not by every lgf command)

    cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    cs.syntax = capstone.CS_OPT_SYNTAX_ATT
    return cs


class FunctionLoops:
    """The loops of one function: its basic blocks' start addresses (sorted) and, per block,
    whether it lies in a loop."""

    __slots__ = ("entry", "end", "starts", "looping")

    def __init__(self, entry: int, end: int, starts: list[int], looping: list[bool]):
        self.entry, self.end, self.starts, self.looping = entry, end, starts, looping

    def call_in_loop(self, return_address: int) -> bool:
        """Whether the call that returns to ``return_address`` is in a loop (the call is the
        instruction ending just before it, so its block is the one holding ``return_address - 1``)."""
        return self.looping[bisect_right(self.starts, return_address - 1) - 1]


def function_loops(code: bytes, entry: int, name_of=lambda addr: "") -> FunctionLoops | None:
    """The loops of the function whose machine code is ``code``, loaded at ``entry``; ``name_of``
    names a call's target (to know the calls that never return). None when they cannot be told
    (see the module docstring)."""
    end = entry + len(code)
    insns = list(_disassembler().disasm_lite(code, entry))
    if not insns:
        return None
    starts = {entry}
    # (address of the last instruction of a block) -> its successors, decided below
    jumps: dict[int, tuple[int | None, bool]] = {}  # address -> (target or None, falls through)
    for addr, size, mnemonic, op in insns:
        nxt = addr + size
        if mnemonic.startswith("j"):
            if op.startswith("*"):
                return None  # indirect jump: a jump table's edges are not in the code
            try:
                target = int(op, 16)
            except ValueError:
                return None
            inside = entry <= target < end
            if inside:
                starts.add(target)
            jumps[addr] = (target if inside else None, mnemonic != "jmp")
            starts.add(nxt)
        elif mnemonic.startswith("loop"):
            return None  # loop/loope/loopne: never emitted by Go's compiler
        elif mnemonic in ("ret", "retq", "ud2", "int3", "hlt"):
            jumps[addr] = (None, False)
            starts.add(nxt)
        elif mnemonic.startswith("call") and not op.startswith("*"):
            try:
                callee = name_of(int(op, 16))
            except ValueError:
                callee = ""
            if callee.startswith(NO_RETURN):
                jumps[addr] = (None, False)
                starts.add(nxt)
    if insns[-1][0] + insns[-1][1] != end and not _only_padding(code, insns):
        return None  # code the decoder stopped in the middle of
    ordered = sorted(s for s in starts if s < end)
    index = {s: i for i, s in enumerate(ordered)}
    succs: list[list[int]] = [[] for _ in ordered]
    block = 0
    for k, (addr, size, _m, _o) in enumerate(insns):
        while block + 1 < len(ordered) and addr >= ordered[block + 1]:
            block += 1
        last = k + 1 == len(insns) or insns[k + 1][0] in index
        if addr in jumps:
            target, falls = jumps[addr]
            if target is not None:
                succs[block].append(index[target])
            if falls and addr + size in index:
                succs[block].append(index[addr + size])
        elif last and addr + size in index:
            succs[block].append(index[addr + size])
    looping = _loops(succs)
    if looping is None:
        return None
    return FunctionLoops(entry, end, ordered, looping)


def _only_padding(code: bytes, insns: list) -> bool:
    """capstone stops at bytes it cannot decode: after the last instruction, only int3 padding is fine."""
    last = insns[-1][0] + insns[-1][1] - insns[0][0]
    return all(b == 0xCC for b in code[last:])


def _loops(succs: list[list[int]]) -> list[bool] | None:
    """Per block, whether it is in a natural loop; None for irreducible control flow. Block 0 is
    the entry; blocks it cannot reach are in no loop."""
    n = len(succs)
    # depth-first order, iteratively (functions have thousands of blocks)
    order: list[int] = []
    state = [0] * n  # 0 unseen, 1 on the DFS stack, 2 done
    retreating: list[tuple[int, int]] = []
    stack = [(0, iter(succs[0]))]
    state[0] = 1
    while stack:
        node, it = stack[-1]
        for s in it:
            if state[s] == 0:
                state[s] = 1
                stack.append((s, iter(succs[s])))
                break
            if state[s] == 1:
                retreating.append((node, s))
        else:
            stack.pop()
            state[node] = 2
            order.append(node)
    rpo = order[::-1]
    number = {b: i for i, b in enumerate(rpo)}
    preds: list[list[int]] = [[] for _ in range(n)]
    for b in rpo:
        for s in succs[b]:
            preds[s].append(b)
    idom: dict[int, int] = {0: 0}
    changed = True
    while changed:
        changed = False
        for b in rpo[1:]:
            new = None
            for p in preds[b]:
                if p in idom:
                    new = p if new is None else _intersect(p, new, idom, number)
            if new is not None and idom.get(b) != new:
                idom[b] = new
                changed = True

    def dominates(a: int, b: int) -> bool:
        while b != a:
            up = idom[b]
            if up == b:
                return False
            b = up
        return True
    looping = [False] * n
    for src, head in retreating:
        if not dominates(head, src):
            return None  # a loop with more than one entry: not a natural loop
        body, work = {head, src}, [src]
        while work:
            b = work.pop()
            if b == head:
                continue
            for p in preds[b]:
                if p not in body:
                    body.add(p)
                    work.append(p)
        for b in body:
            looping[b] = True
    return looping


def _intersect(a: int, b: int, idom: dict[int, int], number: dict[int, int]) -> int:
    while a != b:
        while number[a] > number[b]:
            a = idom[a]
        while number[b] > number[a]:
            b = idom[b]
    return a


class LoopIndex:
    """The loops of one binary's functions, analysed on first use and kept (``FUNCTIONS_KEPT``).
    ``table``: its :class:`lgf.golang.pclntab.Pclntab` (function bounds and names, and the
    mapped file the code is read from), held weakly: once the table is closed and dropped, every
    answer is None. Thread-safe."""

    def __init__(self, table):
        self._table = weakref.ref(table)  # the owner's cache keys on the table: no cycle through it
        self.amd64 = getattr(table.elf, "machine", None) == EM_X86_64
        self._kept: OrderedDict[int, FunctionLoops | None] = OrderedDict()
        self._lock = threading.Lock()

    def call_in_loop(self, return_address: int) -> bool | None:
        """Whether the call returning to ``return_address`` (an ELF address) is made inside a loop
        of its function; None when that cannot be told."""
        tab = self._table()
        if not self.amd64 or tab is None:
            return None
        i = tab.func_index(return_address - 1)
        if i is None:
            return None
        with self._lock:
            if i in self._kept:
                self._kept.move_to_end(i)
                loops = self._kept[i]
            else:
                loops = self._kept[i] = self._analyse(tab, i)
                if len(self._kept) > FUNCTIONS_KEPT:
                    self._kept.popitem(last=False)
        return None if loops is None else loops.call_in_loop(return_address)

    @staticmethod
    def _analyse(tab, i: int) -> FunctionLoops | None:
        entries = tab._entries_list()
        entry, end = entries[i], entries[i + 1]
        off = tab.elf.vaddr_to_offset(entry, end - entry)
        if off is None:
            return None

        def name_of(addr: int) -> str:
            j = tab.func_index(addr)
            return tab.func_name(j) if j is not None else ""
        try:
            return function_loops(bytes(tab.buf[off:off + end - entry]), entry, name_of)
        except Exception:  # noqa: BLE001 - code this analysis does not understand: no answer
            return None
