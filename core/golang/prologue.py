"""Decode Go function machine code (amd64) to find where probes can sit cheaply and safely.

Why the offset matters (figures: docs/sources.md, "Sources and their cost"): a uprobe on a
Go function's first instruction lands on the stack-bound check ``cmp 0x10(%r14),%rsp``, which the
kernel must single-step out of line, several times dearer than the ``push %rbp`` a few bytes
later, which the kernel emulates. The prologue is therefore DECODED with capstone, never assumed to be a fixed
number of bytes: the check has three shapes depending on the frame size, and functions marked
nosplit have none.

Prologue shapes the Go compiler emits on amd64 (g is in R14; stackguard0 at g+0x10, or
stackguard1 at g+0x18 in functions that only run on the system stack)::

    small frame:   cmp 0x10(%r14),%rsp              ; jbe morestack ; push %rbp
    large frame:   lea -N(%rsp),%r12 ; cmp 0x10(%r14),%r12 ; jbe ... ; push %rbp
    huge frame:    mov %rsp,%r12 ; sub $N,%r12 ; jb ... ; cmp 0x10(%r14),%r12 ; jbe ... ; push %rbp
    nosplit:       push %rbp                        (offset 0)

Go 1.20 and older make the frame differently: the same checks, then ``sub $N,%rsp`` (``add
$-0x80,%rsp`` for a frame of 128 bytes) and only then ``mov %rbp,N-8(%rsp)``; there is no push
(Go 1.21 moved to ``push %rbp; mov %rsp,%rbp``). The kernel single-steps that ``sub``: measured
with bench/bench_uprobe_floor.py (1.19.8 against 1.21.13), 24.6 us a hit against 1.3 us on the
push, 20 times dearer. So in those functions the probe goes one instruction earlier, on the
conditional jump to morestack (``jbe``), which the kernel emulates like the push: the machine
state there is the same (the compare before it changes only the flags: arguments in their
registers, the return address at 0(%rsp)). The price: when the function must grow its stack,
morestack re-enters it at its entry and the probe fires a second time; never for the runtime
functions the goroutine tier probes, which run on the system stack (execute, ready, the STW pair,
netpoll, the runnable paths), where a stack never grows; ``gcStart`` (the cheap tier's GC-cycle
counter) and net/http's ``ServeHTTP`` run on a goroutine's stack, where a growth at that very
call would count a GC cycle twice or note the same request twice. A nosplit function of that era (no check,
no jump) is probed on its ``sub``, single-stepped. The decoder needs no version: a function is one
shape or the other, and the check before it is the same.

Anything else (no frame at all, an unknown compiler's code) is refused: better no probe than one
on the wrong instruction. Never probe a Go function's return with a uretprobe (goroutine stacks
move); :func:`ret_offsets` gives every RET instruction to probe instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import capstone
from capstone import x86_const as x86

MAX_PROLOGUE_BYTES = 64
MAX_FUNCTION_BYTES = 1 << 20
"""A Go function is rarely more than tens of KiB; a larger claimed size is corruption."""
_CHECK_STEPS = frozenset({x86.X86_INS_LEA, x86.X86_INS_MOV, x86.X86_INS_SUB, x86.X86_INS_CMP})
"""Instructions that compute the frame's lowest address (r12) in the large and huge shapes."""
_BRANCHES = frozenset({x86.X86_INS_JBE, x86.X86_INS_JB, x86.X86_INS_JAE, x86.X86_INS_JA})
"""The conditional jump to runtime.morestack after the compare."""


class PrologueError(ValueError):
    """The code at a function entry is not a prologue this module recognises (message says why)."""


@dataclass(frozen=True)
class Instruction:
    offset: int
    """Bytes from the function entry."""
    size: int
    mnemonic: str
    op_str: str

    def __str__(self) -> str:
        return f"{self.mnemonic} {self.op_str}".strip()


def _disassembler() -> capstone.Cs:
    cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    cs.syntax = capstone.CS_OPT_SYNTAX_ATT  # the syntax of `go tool objdump`'s neighbour, objdump -d
    cs.detail = True
    return cs


_CS = _disassembler()


def _decode(code: bytes):
    return _CS.disasm(code, 0)


def decode(code: bytes, limit: int | None = None) -> list[Instruction]:
    """Decode ``code`` (from a function entry) into instructions, up to ``limit`` of them."""
    out = []
    for ins in _decode(code):
        out.append(Instruction(ins.address, ins.size, ins.mnemonic, ins.op_str))
        if limit is not None and len(out) >= limit:
            break
    return out


def _is_push_rbp(ins) -> bool:
    return ins.id == x86.X86_INS_PUSH and len(ins.operands) == 1 and \
        ins.operands[0].type == x86.X86_OP_REG and ins.operands[0].reg == x86.X86_REG_RBP


def _is_stack_check(ins, guard_offsets: tuple[int, ...]) -> bool:
    """``cmp disp(%r14), %rsp|%r12`` where disp is g.stackguard0 or g.stackguard1."""
    if ins.id != x86.X86_INS_CMP or len(ins.operands) != 2:
        return False
    mem = [op for op in ins.operands if op.type == x86.X86_OP_MEM]
    reg = [op for op in ins.operands if op.type == x86.X86_OP_REG]
    return (len(mem) == 1 and len(reg) == 1 and mem[0].mem.base == x86.X86_REG_R14
            and mem[0].mem.index == 0 and mem[0].mem.disp in guard_offsets
            and reg[0].reg in (x86.X86_REG_RSP, x86.X86_REG_R12))


def _writes_only_r12(ins) -> bool:
    """The frame-bound arithmetic of the large and huge shapes computes into R12 and nothing else."""
    _, written = ins.regs_access()
    return set(written) - {x86.X86_REG_EFLAGS} == {x86.X86_REG_R12}


def _is_frame_alloc(ins) -> bool:
    """``sub $N,%rsp`` or ``add $-N,%rsp``: how Go 1.20 and older make a function's frame."""
    if ins.id not in (x86.X86_INS_SUB, x86.X86_INS_ADD) or len(ins.operands) != 2:
        return False
    regs = [op for op in ins.operands if op.type == x86.X86_OP_REG]
    imms = [op for op in ins.operands if op.type == x86.X86_OP_IMM]
    if len(regs) != 1 or len(imms) != 1 or regs[0].reg != x86.X86_REG_RSP:
        return False
    return imms[0].imm > 0 if ins.id == x86.X86_INS_SUB else imms[0].imm < 0


def _as_instruction(ins) -> Instruction:
    return Instruction(ins.address, ins.size, ins.mnemonic, ins.op_str)


def probe_offset(code: bytes, guard_offsets: tuple[int, ...] = (0x10, 0x18)) -> tuple[int, Instruction]:
    """Where a probe on this function goes, an instruction the kernel emulates: the ``push %rbp``
    after the stack-bound check (Go 1.21 on); in Go 1.20 and older, which start the frame with
    ``sub $N,%rsp`` / ``add $-N,%rsp``, the ``jbe`` to morestack just before it (the ``sub`` when
    a nosplit function has no check). See the module docstring.

    ``code`` starts at the function entry. Returns ``(offset, instruction)``; raises PrologueError
    when the bytes are not one of the shapes in the module docstring.
    """
    seen_check = False
    morestack_jump = None
    before: list[str] = []
    what = "push %rbp or sub $N,%rsp"
    for ins in _decode(code[:MAX_PROLOGUE_BYTES]):
        if _is_push_rbp(ins) or _is_frame_alloc(ins):
            if before and not seen_check:
                raise PrologueError(f"no stack-bound check before {what} (saw: {'; '.join(before)})")
            if _is_frame_alloc(ins) and morestack_jump is not None:
                return morestack_jump.address, _as_instruction(morestack_jump)
            return ins.address, _as_instruction(ins)
        text = f"{ins.mnemonic} {ins.op_str}".strip()
        before.append(text)
        if _is_stack_check(ins, guard_offsets):
            seen_check = True
        elif ins.id in _BRANCHES and len(before) > 1:
            # the conditional jump to morestack that follows a compare (the last one is the
            # compare against the stack guard's: the huge shape's first jb only checks overflow)
            morestack_jump = ins if seen_check else None
        elif ins.id not in _CHECK_STEPS or not _writes_only_r12(ins) or len(before) > 5:
            raise PrologueError(f"not a Go stack-check prologue: {'; '.join(before)}")
    raise PrologueError(f"no {what} in the first "
                        f"{MAX_PROLOGUE_BYTES} bytes (a frameless function, or not Go code): "
                        + "; ".join(before[:6]))


def ret_offsets(code: bytes) -> list[int]:
    """Offsets of every RET in ``code`` (one whole function), found by a linear sweep.

    Go's amd64 code has no data inside functions, so a linear sweep decodes it all; an
    undecodable byte before the end means ``code`` is not one Go function and is refused.
    """
    if len(code) > MAX_FUNCTION_BYTES:
        raise PrologueError(f"function of {len(code)} bytes is implausibly large")
    rets, end = [], 0
    for addr, size, mnemonic, _ in _CS.disasm_lite(code, 0):
        if mnemonic in ("ret", "retq"):
            rets.append(addr)
        end = addr + size
    # Trailing bytes that do not decode are tolerated only if they are INT3 padding.
    tail = code[end:]
    if tail.strip(b"\xcc"):
        raise PrologueError(f"undecodable instruction at +{end:#x}: {tail[:8].hex()}")
    return rets
