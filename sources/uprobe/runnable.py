"""Where a goroutine becomes runnable, in each Go version: the probes that date scheduling latency.

Why: scheduling latency (runnable, waiting for a P) was dated only from ``runtime.ready``. A
goroutine that leaves a blocking syscall without finding a P, one the netpoller hands back, one
preempted or yielding, and a new one never pass through ``ready``, and under load those are the
common paths: a goroutine returning from a syscall while another held the only P waited 120 ms,
three times, on Go 1.21, 1.25 and 1.27, and lgf reported none. The uprobe source's goroutine tier
(``sched_latency = true``) now also probes, at the emulated instruction like every lgf probe:

==============  ==========================================================  ======================
runnable_from   runtime function (g is runnable from its first instruction)  versions
==============  ==========================================================  ======================
syscall_exit    ``exitsyscall0(gp)``, exitsyscall's slow path: no P free,    1.21-1.26
                gp goes on the global run queue; ``exitsyscallNoP(gp)``      1.27
netpoll         ``injectglist(glist)``: the netpoller's woken goroutines     all
                (the list is walked in BPF, at most MAX_INJECT of them); a
                goroutine it wakes that did not wait on the network ("IO
                wait": the GC's assist queue, its sweep waiters) is ``ready``
gosched         ``gosched_m(gp)``, ``goschedguarded_m(gp)``                   where gopreempt_m is
preempt         ``gopreempt_m(gp)`` (a preemption request honoured)           a function of its own
gosched/preempt ``goschedImpl(gp, preempted)``: BL says which                 where gopreempt_m was
                                                                             inlined (1.27)
newproc         the ``CALL runtime.runqput`` in ``newproc.func1``: a new g    all
                goes on the run queue (RBX = newg); a call is emulated, as
                cheap as the prologue's push
ready           ``ready(gp)`` (the existing probe); a goroutine the thread    all
                left runnable with no probe above ran is ``preempt``
==============  ==========================================================  ======================

The wait ends at ``runtime.execute`` (the existing per-switch probe), which reports it with the
goroutine id as ``stall = "runnable"`` (cause ``sched_latency``) and ``extra["runnable_from"]``.
The BPF side carries the path in the high byte of the wait's reason (``FROM_*``, kept in
:mod:`lgf.bpf.constants` and passed to uprobe.c as -D; ``split_reason`` undoes it), the low byte keeping the goroutine's wait reason when it had parked
(``NO_REASON`` when not: a syscall, a yield, a new goroutine).

Cost: these functions run once per slow syscall exit, per netpoller hand-off (plus one user read
per goroutine in the list), per Gosched or preemption and per ``go`` statement, a uprobe hit
each (~1.3 µs here); only while the goroutine tier is armed. bench/bench_probe_cost.py measures
the goroutine tier with them.
"""

from __future__ import annotations

import capstone

from lgf.bpf import constants as bpf_constants

RUNNABLE_FROM = {code: name for name, code in bpf_constants.RUNNABLE_FROM.items()}
"""uprobe.c's FROM_* codes (``lgf.bpf.constants``, passed as -D) -> ``extra["runnable_from"]``."""
NO_REASON = bpf_constants.NO_REASON
"""The low byte of a runnable wait's reason when the goroutine had not parked."""
MAX_INJECT = 64
"""Goroutines of one injectglist list dated in BPF (a longer list: the rest from their execute)."""

SYSCALL_EXIT_SLOW = ("runtime.exitsyscall0", "runtime.exitsyscallNoP")
"""exitsyscall's slow path on g0, by Go version (the first one the binary has is probed)."""
NEWPROC_SITE = "runtime.newproc.func1@runtime.runqput"
"""``FUNC@CALLEE``: the call of CALLEE inside FUNC (not a function entry)."""

ALL_PROBES = ((SYSCALL_EXIT_SLOW[0], "on_exitsyscall_slow"), (SYSCALL_EXIT_SLOW[1], "on_exitsyscall_slow"),
              ("runtime.injectglist", "on_injectglist"), ("runtime.gosched_m", "on_gosched"),
              ("runtime.goschedguarded_m", "on_gosched_guarded"), ("runtime.gopreempt_m", "on_preempt"),
              ("runtime.goschedImpl", "on_gosched_impl"), (NEWPROC_SITE, "on_newproc"))
"""Every probe this module may attach (what a detach must name)."""


def probes(binary=None) -> tuple[tuple[str, str], ...]:
    """``(function or FUNC@CALLEE, BPF function)`` to attach in ``binary`` (None: every one)."""
    if binary is None:
        return ALL_PROBES
    out = []
    slow = next((f for f in SYSCALL_EXIT_SLOW if binary.func_addr(f) is not None), None)
    if slow:
        out.append((slow, "on_exitsyscall_slow"))
    out.append(("runtime.injectglist", "on_injectglist"))
    if binary.func_addr("runtime.gopreempt_m") is not None:
        out += [("runtime.gosched_m", "on_gosched"), ("runtime.goschedguarded_m", "on_gosched_guarded"),
                ("runtime.gopreempt_m", "on_preempt")]
    else:  # gopreempt_m inlined into newstack: goschedImpl's own flag tells a preemption apart
        out.append(("runtime.goschedImpl", "on_gosched_impl"))
    out.append((NEWPROC_SITE, "on_newproc"))
    return tuple((f, fn) for f, fn in out if binary.func_addr(f.partition("@")[0]) is not None)


def probe_address(binary, spec: str) -> int | None:
    """ELF address of the probe ``spec``: a function's emulated prologue instruction (as every lgf
    probe), or for ``FUNC@CALLEE`` the CALL instruction (emulated too); None if absent."""
    func, _, callee = spec.partition("@")
    addr = binary.func_addr(func)
    if addr is None:
        return None
    if not callee:
        return addr + binary.probe_offset(func)
    target, size = binary.func_addr(callee), binary.func_size(func)
    if target is None or not size:
        return None
    return call_site(binary.elf.read(addr, size), addr, target)


_CS = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


def call_site(code: bytes, addr: int, target: int) -> int | None:
    """Address of the first ``call target`` (rel32) in ``code`` (one function, loaded at ``addr``)."""
    for at, _size, mnemonic, op_str in _CS.disasm_lite(code, addr):
        if mnemonic in ("call", "callq") and op_str.startswith("0x") and int(op_str, 16) == target:
            return at
    return None


def constants(binary) -> dict[str, int]:
    """``G_SCHEDLINK`` (the run-queue link injectglist's list is walked by) and ``MAX_INJECT``.

    From the binary's DWARF, else the field after ``g.goid``, where runtime2.go has kept
    ``schedlink`` from Go 1.21 to 1.27 (checked in each toolchain's source)."""
    try:
        link = binary.field_offset("g", "schedlink")
    except Exception:  # TargetRefused: stripped, and the per-version table does not list it
        link = binary.field_offset("g", "goid") + 8
    return {"G_SCHEDLINK": link, "MAX_INJECT": MAX_INJECT}


def split_reason(reason: int, wait_reasons) -> tuple[int, str]:
    """uprobe.c's runnable reason -> (the goroutine's wait reason index, or NO_REASON; runnable_from)."""
    code, index = reason >> 8, reason & 0xFF
    if code in RUNNABLE_FROM:
        return index, RUNNABLE_FROM[code]
    # From ready() or from a thread that found its goroutine runnable at the next switch.
    preempted = 0 <= index < len(wait_reasons) and wait_reasons[index] == "preempted"
    return index, "preempt" if preempted else "ready"
