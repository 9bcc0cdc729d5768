"""Go's goroutine states (``_Gidle`` ... in runtime/runtime2.go): the one copy lgf keeps.

The values have not changed from Go 1.0 to 1.27 (checked against the toolchains under
``.toolchains`` by ``tests/test_bpf_constants.py``). The BPF programs get the ones they need as
``-D`` constants from ``lgf.bpf.constants``; Python readers import them from here.
"""

from __future__ import annotations

G_IDLE = 0
G_RUNNABLE = 1
G_RUNNING = 2
G_SYSCALL = 3
G_WAITING = 4
G_DEAD = 6
G_PREEMPTED = 9
G_SCAN = 0x1000
"""Set in a goroutine's status while the GC scans its stack: strip it to get the status."""

RUNTIME2_NAMES = {"_Gidle": G_IDLE, "_Grunnable": G_RUNNABLE, "_Grunning": G_RUNNING,
                  "_Gsyscall": G_SYSCALL, "_Gwaiting": G_WAITING, "_Gdead": G_DEAD,
                  "_Gpreempted": G_PREEMPTED, "_Gscan": G_SCAN}
"""The names runtime2.go gives these values, for the test that checks them against Go."""
