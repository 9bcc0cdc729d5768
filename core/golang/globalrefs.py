"""Addresses of runtime globals (``runtime.gcphase``, ``runtime.sched`` ...) in binaries without a
symbol table, found through the runtime code that uses them.

Enrichers read these globals from the live process; a binary built with ``-ldflags=-s -w`` (the
common release build) has no ``.symtab`` to say where they are. But the runtime package is compiled
the same way into every program built by one toolchain, so "the 3rd RIP-relative operand of
``runtime.gcStart`` points 0 bytes into ``runtime.gcphase``" holds for every such program. The
per-Go-version table (:mod:`lgf.golang.golayout_table`, key ``data_refs``) records several such
references per global, learnt from real binaries that do have symbols; here each is decoded in the
stripped binary and the global is accepted only if at least two references agree and none
disagrees (a build with other flags, PGO or -race changes the code: then the answer is None, never
a guess). Cost: decoding a few small runtime functions per global, once per binary.
"""

from __future__ import annotations

from collections import Counter

import capstone
from capstone import x86_const as x86

from .goelf import ElfImage, Symbol

MAX_REFS = 6
"""References recorded per global; two agreeing are needed at resolution."""
MAX_LEARN_FUNC_BYTES = 4096
"""Only small functions are used: fewer instructions before the reference, less that can differ."""

_CS = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
_CS.detail = True


def rip_targets(code: bytes, entry: int) -> list[int]:
    """Every address a RIP-relative memory operand in ``code`` (a function at ``entry``) refers to,
    in instruction order."""
    out = []
    for ins in _CS.disasm(code, entry):
        for op in ins.operands:
            if op.type == x86.X86_OP_MEM and op.mem.base == x86.X86_REG_RIP:
                out.append(ins.address + ins.size + op.mem.disp)
    return out


def learn(elf: ElfImage, symbols: dict[str, Symbol], wanted: tuple[str, ...]) -> dict[str, list[list]]:
    """``{global: [[function, nth RIP-relative operand, byte offset into the global], ...]}`` from a
    binary WITH symbols (table generation)."""
    funcs = [s for s in symbols.values()
             if s.kind == "func" and s.name.startswith("runtime.") and 0 < s.size <= MAX_LEARN_FUNC_BYTES]
    bases = Counter(s.name.removesuffix(".abi0") for s in funcs)
    funcs = sorted((s for s in funcs if bases[s.name.removesuffix(".abi0")] == 1), key=lambda s: (s.size, s.name))
    targets = {name: symbols[name] for name in wanted if name in symbols}
    refs: dict[str, list[list]] = {name: [] for name in targets}
    for fn in funcs:
        if all(len(r) >= MAX_REFS for r in refs.values()):
            break
        try:
            found = rip_targets(elf.read(fn.value, fn.size), fn.value)
        except Exception:  # noqa: BLE001 - a function that cannot be read is simply not used
            continue
        for name, sym in targets.items():
            if len(refs[name]) >= MAX_REFS:
                continue
            size = max(sym.size, 1)
            for nth, addr in enumerate(found):
                if sym.value <= addr < sym.value + size:
                    refs[name].append([fn.name.removesuffix(".abi0"), nth, addr - sym.value])
                    break
    return {name: r for name, r in refs.items() if r}


def resolve(refs: list[list], func_addr, func_size, elf: ElfImage) -> int | None:
    """The global's address in this binary, if at least two recorded references agree and none
    disagrees; ``func_addr`` / ``func_size`` look functions up by name (pclntab when stripped)."""
    votes = []
    for func, nth, delta in refs:
        addr, size = func_addr(func), func_size(func)
        if addr is None or not size or size > 4 * MAX_LEARN_FUNC_BYTES:
            continue
        try:
            found = rip_targets(elf.read(addr, size), addr)
        except Exception:  # noqa: BLE001 - unreadable here: this reference cannot vote
            continue
        if nth < len(found):
            votes.append(found[nth] - delta)
    if len(votes) < 2 or len(set(votes)) != 1:
        return None
    (addr,) = set(votes)
    in_data = any(seg.vaddr <= addr < seg.vaddr + seg.memsz and not seg.executable for seg in elf.segments)
    return addr if in_data else None
