"""lgf's own cost on Debian 12's Go 1.19 services: node-exporter and Alertmanager, idle, as shipped.

Debian's `prometheus-node-exporter` (scraped once a second, as Prometheus would) and
`prometheus-alertmanager` (no alerts) run on loopback; `lgf run` with the shipped plugins.toml
watches both. Figures, after a 20 s warm-up, over SECONDS: lgf's CPU (% of one core), its RSS, and
its start-up CPU; the baseline is the same lgf with no target (`pids = []`) in the same run.

Run as root: `.venv/bin/python bench/bench_debian_go119.py [SECONDS]` (part of `make bench`;
`make test-apt` installs the two services).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import CLK_TCK, LgfProcess, cpu_ticks, free_port, shipped_config, vm_kb  # noqa: E402

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
WARM_UP = 20


def services(tmp: Path) -> tuple[subprocess.Popen, subprocess.Popen, int]:
    ne_port, am_port = free_port(), free_port()
    (tmp / "am.yml").write_text("route:\n  receiver: none\nreceivers:\n  - name: none\n")
    ne = subprocess.Popen([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{ne_port}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    am = subprocess.Popen([ALERTMANAGER, f"--config.file={tmp / 'am.yml'}", f"--storage.path={tmp / 'am'}",
                           f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(3)
    return ne, am, ne_port


def scrape(port: int) -> None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            resp.read()
    except OSError:
        pass


def run(tmp: Path, pids: list[int], ne_port: int, seconds: int) -> dict:
    config = shipped_config(0, tmp)
    config.write_text(re.sub(r"(?m)^pids = \[0\]$", f"pids = {pids}", config.read_text()))
    lgf = LgfProcess(config)
    try:
        for _ in range(WARM_UP):
            scrape(ne_port)
            time.sleep(1)
        c0, t0 = cpu_ticks(lgf.pid), time.monotonic()
        for _ in range(seconds):
            scrape(ne_port)
            time.sleep(1)
        c1, t1 = cpu_ticks(lgf.pid), time.monotonic()
        return {"cpu_pct": 100 * (c1 - c0) / CLK_TCK / (t1 - t0), "rss_mib": vm_kb(lgf.pid, "VmRSS") / 1024,
                "startup_cpu_s": c0 / CLK_TCK, "stalls": sum(e.get("kind") == "stall" for e in lgf.events()),
                "stall_verdicts": sum("parked (" in ln and ": arming" in ln for _, ln in lgf.lines)}
    finally:
        lgf.stop()


def main(seconds: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ne, am, ne_port = services(tmp)
        try:
            (tmp / "none").mkdir()
            (tmp / "both").mkdir()
            base = run(tmp / "none", [], ne_port, seconds)
            both = run(tmp / "both", [ne.pid, am.pid], ne_port, seconds)
        finally:
            for p in (ne, am):
                p.terminate()
                p.wait(20)
    print(f"lgf (shipped plugins.toml) watching Debian's node-exporter + Alertmanager (go1.19.8, idle), "
          f"{seconds} s after a {WARM_UP} s warm-up; baseline: the same lgf with no target")
    for key, unit in (("cpu_pct", "% of a core"), ("rss_mib", "MiB RSS"), ("startup_cpu_s", "s CPU to start")):
        print(f"  {key:<14} {both[key]:>8.2f} {unit:<15} baseline {base[key]:>8.2f}  {both[key] / base[key]:>5.1f}x")
    print(f"  stalls reported: {both['stalls']} (idle services: each is a false positive to look at)")
    print(f"  stall verdicts by the sampler (each arms the goroutine tier), warm-up included: {both['stall_verdicts']}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 60)
