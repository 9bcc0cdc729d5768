"""End to end: `lgf run` with the uprobe and tracepoint sources, the waitreason classifier and a
file sink, attached to the real Go fixture. What a user sees in the JSONL file is checked against
the fixture's own figures; SIGINT must detach every probe and exit 0.

This is issue 2's first-light proof: a goroutine blocked 120 ms on a channel receive is reported
with the fixture's pid and goid, cause "channel" and a duration within 5 ms of its own measure,
on Go 1.21, 1.25 and the newest toolchain; the noise fixture reports nothing over 50 ms.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import pytest

from support.cli import LGF, write
from support.gobuild import GO_VERSIONS, build_go
from support.stallfixture import STALLS_SRC, StallFixture, outside_bounds, probe_bytes, unexplained
from support.wait import poll_until

pytestmark = pytest.mark.bpf


class LgfRun:
    """`lgf --log-level info run CONFIG` in the background; knows when a pid is attached."""

    def __init__(self, config):
        self.proc = subprocess.Popen([*LGF, "--log-level", "info", "run", str(config)],
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_log(self, text: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(text in ln for ln in self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"lgf never logged {text!r}:\n" + "".join(self.lines[-30:]))
                self._cond.wait(min(left, 0.5))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


def config_for(tmp_path, pid: int, sources: str) -> tuple:
    out = tmp_path / "lgf" / "stalls.jsonl"
    config = write(tmp_path / "plugins.toml", f"""
[lgf]
threshold = "50ms"
spool_dir = "{tmp_path / 'spool'}"
plugins = ["lgf.sources.uprobe", "lgf.sources.tracepoint"]

[targets]
pids = [{pid}]

{sources}

[[classifiers]]
use = "waitreason"

[[sinks]]
use = "file"
path = "{out}"
format = "jsonl"

[http]
enabled = false
""")
    return config, out


def stalls_in(path, pred, timeout: float = 60.0) -> list[dict]:
    def found() -> list[dict]:
        rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
        return [r for r in rows if r.get("kind") == "stall" and pred(r)]
    return poll_until(found, timeout, 0.1)


UPROBE_ALWAYS = '[[sources]]\nuse = "uprobe"\ngoroutine_tier = "always"\n'


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_channel_receive_stall_reaches_the_file_sink(tmp_path, bpf_ok, go_toolchains, version):
    # A build at a path of its own: no other test's source may hold probes on this binary.
    exe = build_go(STALLS_SRC, version, ldflags="-X main.e2eCopy=1")
    with StallFixture(exe, "chanrecv") as fx:
        config, out = config_for(tmp_path, fx.pid, UPROBE_ALWAYS)
        run = LgfRun(config)
        try:
            run.wait_log(f"tracing pid {fx.pid}")
            (res,) = fx.go()
            found = stalls_in(out, lambda r: r["goid"] == res["goid"])
            probes = _probe_addrs(exe)
        finally:
            code = run.stop()
        assert code == 0, "".join(run.lines[-20:])
        assert found, "no stall for the fixture's goroutine in " + str(out)
        row = found[0]
        assert row["pid"] == fx.pid and row["cause"] == "channel" and row["wait_reason"] == "chan receive"
        assert not outside_bounds(res, row["start_ns"], row["end_ns"]), (row, res)
        assert row["go_version"] == f"go{version}"
        assert 0xCC not in probe_bytes(fx.pid, probes), "lgf left a breakpoint in the target after SIGINT"


def _probe_addrs(exe) -> list[int]:
    """Where the goroutine tier's probes sit in this binary (non-PIE: ELF address = runtime)."""
    from lgf.golang.gobinary import open_binary

    b = open_binary(exe)
    return [b.func_addr(f) + b.probe_offset(f) for f in ("runtime.execute", "runtime.ready")]


def test_noise_reports_nothing_over_threshold(tmp_path, bpf_ok, go_toolchains):
    exe = build_go(STALLS_SRC, GO_VERSIONS[-1])
    with StallFixture(exe, "noise", "-n", "40") as fx:
        config, out = config_for(tmp_path, fx.pid, UPROBE_ALWAYS + '[[sources]]\nuse = "tracepoint"\n')
        run = LgfRun(config)
        try:
            run.wait_log(f"tracing pid {fx.pid}")
            run.wait_log(f"tracing syscalls of pid {fx.pid}")
            (res,) = fx.go()
            time.sleep(0.5)
        finally:
            assert run.stop() == 0
        rows = stalls_in(out, lambda r: True, timeout=0)
        assert not [r for r in rows if r["goid"] == 0], rows
        workers = [(r["goid"], r["start_ns"], r["end_ns"]) for r in rows if r["goid"] in res["goids"]]
        assert not unexplained(workers, res["long_waits"]), (workers, res["long_waits"])


def test_syscall_stall_through_lgf_run(tmp_path, bpf_ok, go_toolchains):
    exe = build_go(STALLS_SRC, GO_VERSIONS[0])
    with StallFixture(exe, "pipe") as fx:
        config, out = config_for(tmp_path, fx.pid, '[[sources]]\nuse = "tracepoint"\n')
        run = LgfRun(config)
        try:
            run.wait_log(f"tracing syscalls of pid {fx.pid}")
            (res,) = fx.go()
            found = stalls_in(out, lambda r: r["goid"] == res["goid"] and r["syscall"] == "read")
        finally:
            assert run.stop() == 0
        assert found and found[0]["cause"] == "syscall"
        assert not outside_bounds(res, found[0]["start_ns"], found[0]["end_ns"]), (found[0], res)
