"""Issue 19's "a real node": what lgf costs on a host running many idle Go services.

``tests/goapps/idleserver`` (a net/http server idling as real ones do: accept loop, keep-alive
waits, a worker pool, a ticker loop...) started N times, all watched by ``lgf run`` with the
shipped plugins.toml (its targets made ``pids = [...]``, spool_dir and sink rewritten, ``[http]``
on a free loopback port). Per N, against N = 1 in the same run:

- attach time: from starting lgf to its log saying it traces every one of them;
- lgf's CPU (% of one core, every thread: /proc/LGFPID/stat) over ``IDLE_S`` seconds once
  attached and settled (the sampler has judged each server's idle waits once);
- lgf's RSS at the end (VmRSS) and its peak (VmHWM, start-up included: BCC compiling);
- the stall events it reported (none expected: nothing stalls);
- how long after the attach every server was quiet (its wake signal on: the CPU is measured from
  then, ``SETTLE_S`` later);
- the same CPU with ``quiet_interval = "0s"`` (every idle server read in full every
  ``sample_interval``, as before quiet processes: ``sources/uprobe/sampler.py``), measured right
  after in the same run, and the shipped config's CPU against it.

Run as root: ``.venv/bin/python bench/bench_many_processes.py``. ``LGF_BENCH_PROCESSES``
(``1,40,200``), ``LGF_BENCH_GO`` (1.25.5), ``LGF_BENCH_IDLE_S`` (20).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import CLK_TCK, ROOT, LgfProcess, cpu_ticks, free_port, vm_kb  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
from support.gobuild import GOAPPS, build_go  # noqa: E402

GO = os.environ.get("LGF_BENCH_GO", "1.25.5")
COUNTS = [int(n) for n in os.environ.get("LGF_BENCH_PROCESSES", "1,40,200").split(",")]
IDLE_S = float(os.environ.get("LGF_BENCH_IDLE_S", "20"))
SETTLE_S = 5.0
QUIET_WAIT_S = 90.0
"""After the last attach: each server's idle waits are judged once (a one-off, not the idle cost)."""


def config_for(pids: list[int], tmp: Path, port: int, quiet: bool = True) -> Path:
    text = (ROOT / "plugins.toml").read_text()
    if not quiet:
        text = re.sub(r'(?m)^(sample_interval = .*)$', r'\1\nquiet_interval = "0s"', text, count=1)
    text = re.sub(r"(?m)^all = true.*$", f"pids = {pids}", text)
    text = re.sub(r'(?m)^spool_dir = .*$', f'spool_dir = "{tmp / "spool"}"', text)
    text = re.sub(r'(?m)^use = "stdout"\n', f'use = "file"\npath = "{tmp / "events.jsonl"}"\n', text)
    text = re.sub(r"(?m)^listen = .*$", f'listen = "127.0.0.1:{port}"', text)
    path = tmp / "plugins.toml"
    path.write_text(text)
    return path


def start_servers(exe: Path, n: int) -> list[subprocess.Popen]:
    servers = []
    for _ in range(n):
        p = subprocess.Popen([str(exe), "-startsleep", "0s"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
        servers.append(p)
    for p in servers:
        while not json.loads(p.stdout.readline()).get("ready"):
            pass
    return servers


def run(exe: Path, n: int, quiet: bool = True) -> dict:
    servers = start_servers(exe, n)
    tmp = tempfile.TemporaryDirectory(prefix="lgf-bench-")
    lgf = None
    try:
        pids = [p.pid for p in servers]
        t0 = time.monotonic()
        lgf = LgfProcess(config_for(pids, Path(tmp.name), free_port(), quiet))
        for pid in pids:
            lgf.wait_log(f"tracing pid {pid} ")
        attach_s = time.monotonic() - t0
        # Until each server is quiet: its wake signal on (3 probes each, attached by one thread).
        # Not all of them at 200: BCC refuses a program's probes past 1,000 ("global quota"), and
        # a server refused stays read in full every pass (counted: "quiet").
        deadline = time.monotonic() + (QUIET_WAIT_S if quiet else 0)
        while time.monotonic() < deadline and lgf.count_log(": wake signal on") + lgf.count_log(
                "would exceed global quota") // 3 < n:
            time.sleep(0.2)
        quiet_s, quiet_n = time.monotonic() - t0 - attach_s, lgf.count_log(": wake signal on")
        time.sleep(SETTLE_S)
        c0, w0 = cpu_ticks(lgf.pid), time.monotonic()
        time.sleep(IDLE_S)
        cpu = 100 * (cpu_ticks(lgf.pid) - c0) / CLK_TCK / (time.monotonic() - w0)
        out = {"attach_s": attach_s, "quiet_s": quiet_s, "quiet_n": quiet_n, "cpu": cpu, "rss_mb": vm_kb(lgf.pid, "VmRSS") / 1024,
               "hwm_mb": vm_kb(lgf.pid, "VmHWM") / 1024,
               "stalls": [e for e in lgf.events() if e.get("kind") == "stall"]}
        return out
    finally:
        if lgf is not None:
            lgf.stop()
        for p in servers:
            p.kill()
        for p in servers:
            p.wait()
        tmp.cleanup()


def main() -> int:
    if os.geteuid() != 0:
        print("bench_many_processes: needs root (BPF)", file=sys.stderr)
        return 1
    exe = build_go(GOAPPS / "idleserver", GO)
    print(f"Many idle Go processes (issue 19), idleserver built with Go {GO}, shipped plugins.toml, "
          f"{os.cpu_count()} CPUs (a shared host), lgf's CPU over {IDLE_S:.0f} s once attached")
    print(f"{'processes':>10}{'attach s':>10}{'x 1 proc':>10}{'lgf CPU %':>11}{'x 1 proc':>10}"
          f"{'RSS MB':>9}{'x 1 proc':>10}{'peak MB':>9}{'stalls':>8}{'CPU % quiet off':>17}{'x quiet off':>13}"
          f"{'quiet after s':>15}{'quiet':>7}")
    base = None
    for n in COUNTS:
        r = run(exe, n)
        off = run(exe, n, quiet=False)
        base = base or r
        print(f"{n:>10}{r['attach_s']:>10.2f}{r['attach_s'] / base['attach_s']:>10.1f}{r['cpu']:>11.2f}"
              f"{r['cpu'] / max(base['cpu'], 0.01):>10.1f}{r['rss_mb']:>9.0f}{r['rss_mb'] / base['rss_mb']:>10.2f}"
              f"{r['hwm_mb']:>9.0f}{len(r['stalls']):>8}{off['cpu']:>17.2f}{r['cpu'] / max(off['cpu'], 0.01):>13.2f}"
              f"{r['quiet_s']:>15.1f}{r['quiet_n']:>7}",
              flush=True)
        for e in r["stalls"] + off["stalls"]:  # none expected: what it was, to tell a busy host's from a false one
            extra = e.get("extra", {})
            print(f"{'':>10}stall: {extra.get('stall')} {e.get('wait_reason')!r} {e.get('duration_ns', 0) / 1e6:.0f} ms "
                  f"{extra.get('precision', 'exact')} {extra.get('verdict', '')} {extra.get('decided_by', '')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
