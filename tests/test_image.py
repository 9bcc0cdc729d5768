"""The container image: built with podman from Debian packages (`make image`), run privileged in
the host's PID namespace, it traces a Go program running on the host and writes the stall into a
file on the host (file sink on a bind mount).

Nothing is skipped: the test needs root, podman, mmdebstrap and Debian's mirror (deploy/image.sh
installs the tools). The image is cached by content (localhost/lgf:<hash>), so only the first run
after a source change pays the build (~15 s; a new base ~1-3 min).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid

import pytest

from support.gobuild import ROOT, build_go
from support.stallfixture import STALLS_SRC, StallFixture, outside_bounds

pytestmark = [pytest.mark.bpf, pytest.mark.slow]

IMAGE_SH = ROOT / "deploy" / "image.sh"


@pytest.fixture(scope="module")
def image() -> str:
    if os.geteuid() != 0:
        pytest.fail("the image test runs as root (podman, BPF); run it as root")
    done = subprocess.run([str(IMAGE_SH), "build"], capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, f"deploy/image.sh build failed:\n{done.stderr[-4000:]}"
    name = done.stdout.strip().splitlines()[-1]
    assert name.startswith("localhost/lgf:"), done.stdout
    return name


def podman_run_args() -> list[str]:
    return subprocess.run([str(IMAGE_SH), "run-args"], capture_output=True, text=True,
                          check=True).stdout.split()


class Container:
    """`podman run` of the image in the foreground; its stderr (lgf's log) collected line by line."""

    def __init__(self, image: str, out_dir, extra: list[str]):
        self.name = f"lgf-test-{uuid.uuid4().hex[:8]}"
        uname = os.uname().release
        cmd = ["podman", "run", "--rm", "--name", self.name, *podman_run_args(),
               "--privileged", "--pid=host", "--network=none",
               "-v", "/sys/kernel/btf:/sys/kernel/btf:ro",
               "-v", "/sys/kernel/tracing:/sys/kernel/tracing",
               "-v", f"/lib/modules/{uname}:/lib/modules/{uname}:ro", "-v", "/usr/src:/usr/src:ro",
               "-v", f"{out_dir}:/out", *extra, image, "/out/plugins.toml"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_log(self, text: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(text in ln for ln in self.lines):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise AssertionError(f"the container never logged {text!r}:\n" + "".join(self.lines[-40:]))
                self._cond.wait(0.5)

    def stop(self) -> int:
        subprocess.run(["podman", "stop", "-t", "30", self.name], capture_output=True, timeout=60)
        try:
            return self.proc.wait(timeout=60)
        finally:
            subprocess.run(["podman", "rm", "-f", self.name], capture_output=True, timeout=60)


def test_image_traces_a_host_go_process_into_a_host_file(tmp_path, bpf_ok, go_toolchains, image):
    exe = build_go(STALLS_SRC, "1.25.5", ldflags="-X main.e2eCopy=image")
    out = tmp_path / "out"
    out.mkdir()
    with StallFixture(exe, "chanrecv", "-n", "3") as fx:
        (out / "plugins.toml").write_text(f"""
[lgf]
threshold = "50ms"
spool_dir = "/out/spool"

[targets]
pids = [{fx.pid}]

[[sources]]
use = "uprobe"
goroutine_tier = "always"

[[classifiers]]
use = "waitreason"

[[sinks]]
use = "file"
path = "/out/stalls.jsonl"
format = "jsonl"

[http]
enabled = false
""")
        ct = Container(image, out, [])
        try:
            ct.wait_log(f"tracing pid {fx.pid}")
            ct.wait_log("lgf running")
            results = fx.go()
            found: list[dict] = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if (out / "stalls.jsonl").exists():
                    rows = [json.loads(ln) for ln in (out / "stalls.jsonl").read_text().splitlines() if ln]
                    found = [r for r in rows if r["kind"] == "stall" and r["pid"] == fx.pid]
                    if {r["goid"] for r in found} >= {res["goid"] for res in results}:
                        break
                time.sleep(0.2)
        finally:
            code = ct.stop()
    assert code == 0, "".join(ct.lines[-30:])
    assert "lgf stopped" in "".join(ct.lines)
    by_goid = {r["goid"]: r for r in found}
    for res in results:
        row = by_goid.get(res["goid"])
        assert row is not None, f"no stall for goroutine {res['goid']} in the host file: {found}"
        assert row["cause"] == "channel" and row["wait_reason"] == "chan receive"
        # BPF measures park -> ready, inside the fixture's own clock reads around the receive.
        assert not outside_bounds(res, row["start_ns"], row["end_ns"]), (row, res)
        assert row["exe"] == str(exe)
