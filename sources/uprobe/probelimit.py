"""How many uprobes lgf may open: BCC's quota, raised to what the file limit allows.

Why: BCC refuses a uprobe past ``BCC_PROBE_LIMIT`` (1,000 by default) for the whole process, a
guard against running out of file descriptors, since each uprobe is one perf event. lgf attaches
3 per Go process for its cheap tier, 3 more for a quiet or big process's wake signal and a dozen
for an armed goroutine tier: on a host of 200 idle services the default was spent (only 66 of
them could get their wake signal, ``bench/bench_many_processes.py``), and at 334 Go processes the
cheap tier itself would be refused. The real bound is the file limit, so: the soft
``RLIMIT_NOFILE`` is raised to the hard one, and the quota set to it less ``FD_RESERVE`` for
everything else lgf opens (sockets, the spool, /proc files, BPF maps). A ``BCC_PROBE_LIMIT`` the
operator set is kept as given.
"""

from __future__ import annotations

import logging
import os
import resource

BCC_DEFAULT = 1000
"""BCC's own quota when ``BCC_PROBE_LIMIT`` is unset (``bcc._default_probe_limit``)."""
FD_RESERVE = 2048
"""File descriptors left for what is not a uprobe."""


def raise_probe_limit(log: logging.Logger) -> int:
    """Set BCC's uprobe quota for this process from its file limit (module docstring); returns it.
    Never lowers it below BCC's default."""
    given = os.environ.get("BCC_PROBE_LIMIT", "")
    if given.isdigit():
        return int(given)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = _nr_open()
    if soft == resource.RLIM_INFINITY or soft > hard:
        soft = hard
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:  # a container's seccomp or policy: keep the soft one
            log.info("uprobe: could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
    limit = max(BCC_DEFAULT, soft - FD_RESERVE)
    os.environ["BCC_PROBE_LIMIT"] = str(limit)  # read by BCC at every attach
    if limit > BCC_DEFAULT:
        log.info("uprobe: up to %d uprobes (open-file limit %d; BCC_PROBE_LIMIT sets it)", limit, soft)
    return limit


def _nr_open() -> int:
    """The kernel's ceiling on a process's file descriptors (``fs.nr_open``)."""
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1 << 20
