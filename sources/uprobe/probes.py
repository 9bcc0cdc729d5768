"""Which runtime functions each tier of the uprobe source probes, by the BPF function that handles them.

Every probe sits on the emulated ``push %rbp`` after a function's stack check
(:func:`lgf.sources.uprobe.runnable.probe_address`), never on its first instruction; in Go 1.19,
which makes frames without a push, on the emulated ``jbe`` to morestack before its ``sub $N,%rsp``
(:mod:`lgf.golang.prologue`: same registers and stack). The functions and their arguments are
the same in 1.19 (``execute(gp)``, ``ready(gp)``, the runnable paths), except that
``stopTheWorldWithSema`` takes no reason before 1.21 (uprobe.c's ``STW_REASON_ARG``).
"""

from __future__ import annotations

from . import runnable

CHEAP_PROBES = (("runtime.stopTheWorldWithSema", "on_stw_stop"),
                ("runtime.startTheWorldWithSema", "on_stw_start"), ("runtime.gcStart", "on_gc_start"))
"""Always on: a few hits per GC cycle (stop-the-world windows, GC cycle counter)."""
CHEAP_REQUIRED = ("runtime.stopTheWorldWithSema", "runtime.startTheWorldWithSema")
"""A cheap probe that cannot be placed is worth a warning (the others, an info line)."""
GOROUTINE_PROBES = (("runtime.execute", "on_execute"),)
SCHED_PROBES = (("runtime.ready", "on_ready"),)
NETPOLL_PROBES = (("runtime.netpoll", "on_netpoll"),)
HTTP_PROBES = (("net/http.serverHandler.ServeHTTP", "on_serve_http"),)
"""With the goroutine tier, when the binary has it: each request's *http.Request, per goroutine."""
WAKE_PROBES = (("runtime.ready", "on_ready"), ("runtime.injectglist", "on_injectglist"),
               (runnable.NEWPROC_SITE, "on_newproc"))
"""The sampler's wake signal (:mod:`lgf.sources.uprobe.wakes`): three of the goroutine tier's own
probes (with ``sched_latency``), kept on in a big process while the rest of the tier is off."""
TIER_MARK = "on_execute"
"""The probe whose presence means "goroutine tier on" for a process."""
TIER_REQUIRED = ("runtime.execute",)


def goroutine_probes(options, binary=None) -> tuple[tuple[str, str], ...]:
    """The goroutine tier's probes under ``options`` (for ``binary``: only those it has, HTTP_PROBES
    being optional; without it: every probe the tier may have attached, to detach them)."""
    http = tuple(p for p in HTTP_PROBES if binary is None or binary.func_addr(p[0]) is not None)
    return (GOROUTINE_PROBES + (SCHED_PROBES if options.sched_latency else ())
            + (NETPOLL_PROBES if options.netpoll_calls else ()) + http
            + (runnable.probes(binary) if options.sched_latency else ()))


def goroutine_tier_functions() -> list[str]:
    """Every BPF function the goroutine tier may attach as a uprobe (verified at load)."""
    return list(dict.fromkeys(fn for _, fn in GOROUTINE_PROBES + SCHED_PROBES + NETPOLL_PROBES + HTTP_PROBES
                              + runnable.probes()))
