"""What the benchmarks share: timing, and `lgf run` with the shipped config against one process.

Each bench script runs from bench/, so this module is importable by its bare name.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path


def best_of(n: int, fn) -> float:
    """Seconds of the fastest of ``n`` calls: on a shared host the minimum is the least noisy."""
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# -- `lgf run` against one process, with the shipped plugins.toml (bench_stalling_service.py,
#    bench_many_goroutines.py) -------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shipped_config(pid: int, tmp: Path, *, port: int | None = None, tier: str | None = None) -> Path:
    """The repo's plugins.toml aimed at ``pid``: its targets, spool_dir and sink rewritten (the
    stdout sink becomes a ``file`` sink of JSON lines, ``tmp/events.jsonl``); ``[http]`` on a free
    loopback ``port`` (None: disabled); ``tier`` replaces ``goroutine_tier`` (None: as shipped)."""
    text = (ROOT / "plugins.toml").read_text()
    text = re.sub(r"(?m)^all = true.*$", f"pids = [{pid}]", text)
    text = re.sub(r'(?m)^spool_dir = .*$', f'spool_dir = "{tmp / "spool"}"', text)
    text = re.sub(r'(?m)^use = "stdout"\n', f'use = "file"\npath = "{tmp / "events.jsonl"}"\n', text)
    if tier is not None:
        text = re.sub(r'(?m)^goroutine_tier = .*$', f'goroutine_tier = "{tier}"', text)
    if port is None:
        text = re.sub(r"(?m)^\[http\]\n", "[http]\nenabled = false\n", text)
    else:
        text = re.sub(r"(?m)^listen = .*$", f'listen = "127.0.0.1:{port}"', text)
    path = tmp / "plugins.toml"
    path.write_text(text)
    return path


class LgfProcess:
    """`lgf --log-level info run CONFIG` in the background: its log lines, each stamped with this
    script's CLOCK_MONOTONIC when read, and its events (the ``file`` sink of ``shipped_config``)."""

    def __init__(self, config: Path):
        self.config = config
        self.proc = subprocess.Popen([sys.executable, "-m", "lgf.cli", "--log-level", "info", "run", str(config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append((time.monotonic(), line))
                self._cond.notify_all()

    def count_log(self, text: str) -> int:
        """Log lines so far that contain ``text``."""
        with self._cond:
            return sum(1 for _, ln in self.lines if text in ln)

    def wait_log(self, text: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(text in ln for _, ln in self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError(f"lgf never logged {text!r}:\n" + "".join(ln for _, ln in self.lines[-30:]))
                self._cond.wait(min(left, 0.5))

    def events(self) -> list[dict]:
        path = self.config.parent / "events.jsonl"
        if not path.exists():
            return []
        return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]

    def armed_seconds(self, pid: int, t0: float, t1: float) -> float:
        """Seconds of [t0, t1] (time.monotonic) the goroutine tier of ``pid`` was armed, from the
        log lines "goroutine tier armed" / "disarmed" (stamped when read: within ~ms)."""
        armed_at, total = None, 0.0
        with self._cond:
            lines = list(self.lines)
        for t, ln in lines:
            if f"pid {pid}: goroutine tier armed" in ln and armed_at is None:
                armed_at = t
            elif f"pid {pid}: goroutine tier disarmed" in ln and armed_at is not None:
                total += max(0.0, min(t, t1) - max(armed_at, t0))
                armed_at = None
        if armed_at is not None:
            total += max(0.0, t1 - max(armed_at, t0))
        return total

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` (every thread), in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


CLK_TCK = os.sysconf("SC_CLK_TCK")


def vm_kb(pid: int, key: str = "VmHWM") -> int:
    """``key`` of /proc/PID/status in kB (VmHWM: peak RSS; VmRSS: RSS now)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def scrape(port: int, prefix: str = "lgf_") -> list[str]:
    """The sample lines of lgf's /metrics starting with ``prefix``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return [ln for ln in text.splitlines() if ln.startswith(prefix)]
