"""BCC's uprobe quota follows the open-file limit (lgf.sources.uprobe.probelimit).

Each case runs in a child process with its own file limits and environment, the way ``lgf run``
starts, and asks BCC itself what quota it now applies.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys

HARD = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
"""This machine's hard open-file limit (20,000 here); a child may lower it, never raise it."""

ASK = """
import logging, resource
import bcc
from lgf.sources.uprobe.probelimit import raise_probe_limit
got = raise_probe_limit(logging.getLogger("t"))
print(got, bcc.BPF.get_probe_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def ask(soft: int, hard: int, env: dict[str, str]) -> tuple[int, int, int]:
    """(what raise_probe_limit returned, BCC's quota after it, the soft open-file limit after it)
    in a child started with these open-file limits and ``env``."""
    def limits():
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    env = {k: v for k, v in os.environ.items() if k != "BCC_PROBE_LIMIT"} | env
    out = subprocess.run([sys.executable, "-c", ASK], env=env, preexec_fn=limits, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    got, bcc_limit, soft_after = map(int, out.split())
    return got, bcc_limit, soft_after


def test_the_quota_is_the_hard_file_limit_less_a_reserve(bpf_ok):
    hard = min(HARD, 1 << 20)
    assert hard > 4096, f"hard open-file limit {hard}: too low to test a raise"
    got, bcc_limit, soft_after = ask(1024, hard, {})
    assert soft_after == hard, "the soft open-file limit is raised to the hard one"
    assert got == bcc_limit == hard - 2048 > 1000


def test_an_operators_bcc_probe_limit_is_kept(bpf_ok):
    assert ask(1024, HARD, {"BCC_PROBE_LIMIT": "1500"})[:2] == (1500, 1500)


def test_never_below_bccs_own_default(bpf_ok):
    assert ask(1024, 2000, {})[:2] == (1000, 1000)  # (2,000 files less the reserve: BCC's 1,000 stands)
