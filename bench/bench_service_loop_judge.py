"""What idle rule 6 (service loops, lgf.idle) adds to judging one park, on Debian's Alertmanager.

The stack is the dispatcher's wait at its maintenance ticker (``(*Dispatcher).run`` under
``(*Dispatcher).Run``), built from the binary's real return addresses. Printed: the first verdict
(opens the binary, decodes and analyses the two functions under the waiter: lgf.golang.loops) and
a warm verdict, ``Services.judge_stack`` (symbolize, then judge with the loops of the code),
against the names-only judge rule 6 extends (symbolize, then ``IdleRules.judge`` without call
sites) in the same run. The sampler judges a stack once per process (its verdict cache), the
goroutine tier once per loop-head candidate.

Run: ``.venv/bin/python bench/bench_service_loop_judge.py`` (``make test-apt`` installs Alertmanager).
"""

from __future__ import annotations

import time

import capstone

from lgf.golang.pclntab import Pclntab
from lgf.services import Services

EXE = "/usr/bin/prometheus-alertmanager"
AM = "github.com/prometheus/alertmanager"
ROUNDS = 20000


def return_address(tab: Pclntab, caller: str, callee: str) -> int:
    """Where the first direct call from ``caller`` to ``callee`` returns to."""
    cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    cs.syntax = capstone.CS_OPT_SYNTAX_ATT
    lo = tab.func_by_name(caller)
    hi = tab._entries_list()[tab.func_index(lo) + 1]
    off = tab.elf.vaddr_to_offset(lo, hi - lo)
    target = hex(tab.func_by_name(callee))
    return next(a + n for a, n, m, o in cs.disasm_lite(bytes(tab.buf[off:off + hi - lo]), lo)
                if m.startswith("call") and o == target)


def dispatcher_stack() -> list[int]:
    with Pclntab.from_elf(EXE) as tab:
        return [tab.func_by_name("runtime.gopark") + 1, tab.func_by_name("runtime.selectgo") + 1,
                return_address(tab, f"{AM}/dispatch.(*Dispatcher).run", "runtime.selectgo"),
                return_address(tab, f"{AM}/dispatch.(*Dispatcher).Run", f"{AM}/dispatch.(*Dispatcher).run"),
                tab.func_by_name("runtime.goexit") + 1]


def per_call(fn) -> float:
    t0 = time.perf_counter()
    for _ in range(ROUNDS):
        fn()
    return (time.perf_counter() - t0) / ROUNDS


def main() -> None:
    pcs = dispatcher_stack()
    services = Services()
    try:
        t0 = time.perf_counter()
        verdict = services.judge_stack(EXE, pcs, "select")
        first = time.perf_counter() - t0
        old = per_call(lambda: services.idle_rules.judge(services.symbolize(EXE, pcs), "select"))
        new = per_call(lambda: services.judge_stack(EXE, pcs, "select"))
    finally:
        services.close()
    print(f"Alertmanager's dispatcher at its ticker: {verdict.kind} ({verdict.site})")
    print(f"  first verdict (opens the binary, analyses 2 functions): {first * 1e3:.1f} ms")
    print(f"  warm verdict per park: {new * 1e6:.1f} us with rule 6, baseline {old * 1e6:.1f} us "
          f"names only: {new / old:.2f}x")


if __name__ == "__main__":
    main()
