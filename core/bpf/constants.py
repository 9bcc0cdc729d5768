"""The numbers the BPF programs and their Python readers must agree on, kept once, here.

The C files do not ``#define`` these: every program is compiled with :func:`shared` merged into
its ``-D`` constants (``lgf.bpf.loader.load``), and the Python side decodes with the same tables.
``tests/test_bpf_constants.py`` fails if a C file defines one of these names itself or uses a
name that is not passed, and checks the goroutine states against Go's own runtime2.go.

* stall kinds (``event.kind`` in the ring buffer, ``hkey.kind`` in the histograms);
* counter indexes (``ckey.which`` in the ``counters`` map of ``lgf_maps.h``);
* Go goroutine states the programs test (from ``lgf.golang.gstatus``);
* the wait-slot hash of ``uprobe.c`` (which slot of the ``waits`` array a goroutine's open wait
  lives in), which Python recomputes to close slots (:func:`wait_slot_index`);
* ``uprobe.c``'s event flags (``EV_*``), code-site classes (``SITE_*``, :mod:`lgf.bpf.sites`), wait
  kinds (``WAIT_*``), what made a goroutine runnable (``FROM_*``, ``NO_REASON``) and the layout of
  its per-process histogram blocks (``FH_*``).
"""

from __future__ import annotations

from lgf.golang import gstatus

STALL_KINDS = {"park": 1, "runnable": 2, "stw": 3, "syscall": 4, "idle": 5}
"""park: blocked until runnable; runnable: until running (scheduling latency); stw: the whole
process stopped; syscall: a blocking system call (tracepoint source); idle: histograms only, a
park over the threshold that uprobe.c judged an idle wait (lgf.idle)."""
STALL_NAMES = {value: name for name, value in STALL_KINDS.items()}

COUNTER_NAMES = ("netpoll_calls", "netpoll_ready", "netpoll_waiting", "gc_cycles", "stw_count",
                 "ringbuf_lost", "wait_slot_reused", "idle_waits", "stack_cut")
"""Per-process counters; the index is ``ckey.which`` (``C_<NAME>`` in C)."""

WAIT_SLOT_SHIFTS = (6, 22, 7)
"""``idx = ((g >> 6) ^ (g >> 22) ^ (tgid << 7)) & (size - 1)``: g pointers are 8-byte aligned
and usually kilobytes apart; the pid spreads processes over the array."""


WAIT_PARK, WAIT_RUNNABLE = 1, 2
"""``struct wait`` kinds of uprobe.c (0: no wait open): an open park, an open wait for a P."""

EV_STACK_CUT = 1
"""``event.flags``: the stack walk stopped before the goroutine's start (max_frames, a bad read)."""
EV_SCOPE_REQUEST = 2
"""``event.flags``: a frame is a request marker (net/http serverHandler.ServeHTTP...)."""
EV_IDLE = 4
"""``event.flags``: judged idle in the kernel (sent only with ``report_idle``)."""
EV_LOOP_HEAD = 8
"""``event.flags``: maybe idle by lgf.idle's loop-head rule; Python confirms it on the symbolized
stack (an inlined call is invisible in return addresses) and counts it."""

SITE_IDLE, SITE_REQUEST = 1, 2
"""Classes of the code sites in uprobe.c's ``sites`` trie (bits, OR-ed over a stack's frames)."""

RUNNABLE_FROM = {"ready": 1, "syscall_exit": 2, "netpoll": 3, "preempt": 4, "gosched": 5, "newproc": 6}
"""What made a goroutine runnable (``FROM_<NAME>``, carried in the high byte of a runnable wait's
reason) -> its code."""
NO_REASON = 0xFF
"""The low byte of a runnable wait's reason when the goroutine had not parked."""

FAST_HIST_KINDS = ("park", "runnable", "idle")
"""The stall kinds of uprobe.c's per-process histogram blocks (``fast_hists``), in cell order."""
FH_REASONS, FH_SLOTS = 64, 32
"""A block's wait reasons (0-63) and log2(us) buckets per kind."""


def wait_slot_index(tgid: int, g: int, size: int) -> int:
    """The slot ``uprobe.c``'s ``wait_slot(tgid, g)`` uses in a ``waits`` array of ``size``."""
    a, b, c = WAIT_SLOT_SHIFTS
    return ((g >> a) ^ (g >> b) ^ (tgid << c)) & (size - 1)


def shared() -> dict[str, int]:
    """Every constant above as the ``-D`` names the C programs use."""
    out = {f"STALL_{name.upper()}": value for name, value in STALL_KINDS.items()}
    out.update({f"C_{name.upper()}": i for i, name in enumerate(COUNTER_NAMES)})
    out.update({"G_RUNNABLE": gstatus.G_RUNNABLE, "G_WAITING": gstatus.G_WAITING,
                "G_SCAN": gstatus.G_SCAN})
    out.update({f"WAIT_SLOT_SHIFT_{i}": s for i, s in enumerate(WAIT_SLOT_SHIFTS)})
    out.update({"WAIT_PARK": WAIT_PARK, "WAIT_RUNNABLE": WAIT_RUNNABLE,
                "EV_STACK_CUT": EV_STACK_CUT, "EV_SCOPE_REQUEST": EV_SCOPE_REQUEST, "EV_IDLE": EV_IDLE,
                "EV_LOOP_HEAD": EV_LOOP_HEAD, "SITE_IDLE": SITE_IDLE, "SITE_REQUEST": SITE_REQUEST,
                "NO_REASON": NO_REASON})
    out.update({f"FROM_{name.upper()}": code for name, code in RUNNABLE_FROM.items()})
    out.update({"FH_KINDS": len(FAST_HIST_KINDS), "FH_REASONS": FH_REASONS, "FH_SLOTS": FH_SLOTS,
                "FH_CELLS": len(FAST_HIST_KINDS) * FH_REASONS * FH_SLOTS})
    return out
