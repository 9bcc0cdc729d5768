"""lgf.golang.loops on machine code small enough to read: the cases its answer hinges on. Real
compilers' code is checked on the idleserver fixture built by every toolchain (tests/test_idle.py)."""

from __future__ import annotations

from lgf.golang.loops import function_loops

ENTRY = 0x1000
NAMES = {0x2000: "main.f", 0x3000: "runtime.morestack_noctxt.abi0"}


def call(at: int, target: int) -> bytes:
    return b"\xe8" + (target - (at + 5)).to_bytes(4, "little", signed=True)


def test_a_call_followed_by_a_jump_back_is_in_a_loop():
    code = call(0x1000, 0x2000) + b"\xeb\xf9" + b"\xc3"  # call f; jmp 0x1000; ret
    assert function_loops(code, ENTRY, NAMES.get).call_in_loop(0x1005) is True


def test_the_stack_growth_path_jumping_back_to_the_entry_is_no_loop():
    # cmp 0x10(%r14),%rsp; jbe grow; call f; ret; grow: call runtime.morestack_noctxt; jmp entry
    code = (b"\x49\x3b\x66\x10" + b"\x76\x06" + call(0x1006, 0x2000) + b"\xc3"
            + call(0x100c, 0x3000) + b"\xeb\xed")
    assert function_loops(code, ENTRY, NAMES.get).call_in_loop(0x100b) is False
    # even without knowing morestack never returns: that loop holds only the check and the growth
    assert function_loops(code, ENTRY).call_in_loop(0x100b) is False
    assert function_loops(code, ENTRY).call_in_loop(0x1011) is True


def test_a_panic_call_does_not_fall_into_the_code_after_it():
    # top: call f; je top (a loop); call runtime.panicIndex (never returns); tail: call f; ret
    names = {0x2000: "main.f", 0x4000: "runtime.panicIndex"}
    code = call(0x1000, 0x2000) + b"\x74\xf9" + call(0x1007, 0x4000) + call(0x100c, 0x2000) + b"\xc3"
    loops = function_loops(code, ENTRY, names.get)
    assert loops.call_in_loop(0x1005) is True and loops.call_in_loop(0x1011) is False


def test_what_cannot_be_told_is_none():
    assert function_loops(b"\xff\xe0", ENTRY) is None  # jmp *%rax: a jump table's edges are unseen
    # je B; A: nop; jmp B; B: call f; jmp A: a cycle entered at A and at B (irreducible)
    code = b"\x74\x03" + b"\x90" + b"\xeb\x00" + call(0x1005, 0x2000) + b"\xeb\xf6" + b"\xc3"
    assert function_loops(code, ENTRY, NAMES.get) is None
