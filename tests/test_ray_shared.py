"""Symbols shared over a Ray cluster: one actor per build id serves every lgf attached to it.

A real Ray head (``ray start --head --block`` on this host, its own temp dir and port) serves the
module; three lgf instances run as separate processes (``support.raydriver``), each in a mount
namespace of its own holding its own copy of one Go binary on a tmpfs the cluster cannot see, as
on three other hosts: the first ships the binary to the build's actor, the other two find that
actor warm. Then the head is stopped: the next symbolization is local, correct, and logged once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from lgf.golang.pclntab import Pclntab
from lgf.golang.ray_symbols import ACTOR_PREFIX, NAMESPACE, actor_name, file_build_id
from lgf.plugins.symbolizer import LocalBackend
from support.gobuild import GO_VERSIONS, GOAPPS, ROOT, build_go

pytest.importorskip("ray")
if shutil.which("unshare") is None or os.geteuid() != 0:
    pytest.skip("needs root and unshare (a mount namespace per simulated host)", allow_module_level=True)

RAY = Path(sys.executable).with_name("ray")
START_WAIT_S = 120.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_of(root: int, tmp: str) -> set[int]:
    """Pids descending from ``root`` (the head and the workers its raylet started, which rename
    themselves ``ray::...``), and any whose command line names the head's ``tmp`` dir."""
    parent: dict[int, int] = {}
    mine: set[int] = set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                parent[int(d)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{d}/cmdline", "rb") as fh:
                if tmp.encode() in fh.read():
                    mine.add(int(d))
        except (OSError, IndexError, ValueError):
            pass
    grew = True
    mine.add(root)
    while grew:
        more = {pid for pid, pp in parent.items() if pp in mine and pid not in mine}
        mine |= more
        grew = bool(more)
    return mine & set(parent)


class Head:
    """One Ray head of this module's own; :meth:`stop` ends exactly the processes it started."""

    def __init__(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="lgfray", dir="/tmp")  # short: Ray's socket paths
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        env = {**os.environ, "RAY_AUTH_MODE": "disabled"}  # loopback only; no token to hand out
        self.proc = subprocess.Popen(
            [str(RAY), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={self.port}",
             "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={self.tmp}", "--num-cpus=1",
             "--object-store-memory=100000000"],
            start_new_session=True, env=env, stdout=open(f"{self.tmp}/head.log", "w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_WAIT_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"ray head did not start: {open(f'{self.tmp}/head.log').read()[-2000:]}")
                time.sleep(0.5)

    def stop(self) -> None:
        pids = _processes_of(self.proc.pid, self.tmp)  # before the raylet dies and orphans them
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        for _ in range(20):  # workers are not in the head's process group: end them by pid
            pids = (pids | _processes_of(self.proc.pid, self.tmp)) - {self.proc.pid}
            pids = {p for p in pids if os.path.exists(f"/proc/{p}")}
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)
        self.proc.wait(30)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


class Lgf:
    """One lgf instance (``support.raydriver``) in a mount namespace of its own, its copy of the
    binary on a private tmpfs at ``where`` (invisible to the Ray head: another host's file)."""

    def __init__(self, address: str, binary: Path, where: Path) -> None:
        where.mkdir(parents=True)
        self.exe = where / "app"
        script = (f'mount -t tmpfs lgf "{where}" && cp "{binary}" "{self.exe}" && '
                  f'exec "{sys.executable}" -m support.raydriver "{address}" "{self.exe}"')
        self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                     cwd=ROOT / "tests", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(where.with_suffix(".log"), "w"), text=True)
        self.log = where.with_suffix(".log")
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()  # the driver's own calls are bounded (Ray timeouts)
        if not line:
            raise AssertionError(f"lgf driver exited: {self.log.read_text()[-3000:]}")
        return json.loads(line)

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask(op="quit")
            except (AssertionError, BrokenPipeError, ValueError):
                pass
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def head():
    h = Head()
    yield h
    h.close()


@pytest.fixture(scope="module")
def binary(go_toolchains):
    return build_go(GOAPPS / "inline", GO_VERSIONS[-1])


def _expected(binary: Path, pcs: list[int]) -> list[list[str]]:
    frames = LocalBackend().resolve([("k", str(binary), pcs)])[0]
    return [[f.func for f in fs] for fs in frames]


@pytest.mark.slow
def test_one_actor_per_build_serves_three_lgfs_and_a_lost_head_falls_back_locally(head, binary, tmp_path):
    tab = Pclntab.from_elf(binary)
    pcs = sorted({e + (end - e) // 2 + 1 for _, e, end in tab.funcs()})
    first, later = pcs[::2], pcs[1::2]
    expected_first, expected_later = _expected(binary, first), _expected(binary, later)
    build_id = file_build_id(binary)
    assert build_id

    lgfs: list[Lgf] = []
    try:
        for n in range(3):
            lgfs.append(Lgf(head.address, binary, tmp_path / f"host{n}"))
            assert lgfs[-1].ready == {"ready": "ray"}
            got = lgfs[-1].ask(op="sym", pcs=first)
            assert got["backend"] == "ray" and got["funcs"] == expected_first
        info = lgfs[2].ask(op="info")
        ours = [a for a in info["named"] if a["name"].startswith(ACTOR_PREFIX)]
        assert ours == [{"name": actor_name(build_id), "namespace": NAMESPACE}], info["named"]
        actor = info["actor"]
        assert actor["decoded"] == 1 and actor["shipped"] == 1, actor  # once per cluster, not per host
        assert len(actor["clients"]) == 3, actor  # every lgf found the first one's actor
        assert actor["build_id"] == build_id

        head.stop()
        survivor = lgfs[0]
        got = survivor.ask(op="sym", pcs=later)  # PCs its driver cache has not seen: needs a decode
        assert got["backend"] == "local" and got["funcs"] == expected_later
        assert got["lost"] == 1
        again = survivor.ask(op="sym", pcs=later[:50] + first[:50])
        assert again["funcs"] == expected_later[:50] + expected_first[:50] and again["lost"] == 1
        # Ray ends a driver whose GCS is gone for 60 s; lgf must have let go of the cluster first
        time.sleep(75)
        assert survivor.proc.poll() is None, survivor.log.read_text()[-3000:]
        assert survivor.ask(op="sym", pcs=first[:10])["funcs"] == expected_first[:10]
    finally:
        for lgf in lgfs:
            lgf.close()
    lines = [ln for ln in lgfs[0].log.read_text().splitlines() if "lost the Ray cluster" in ln]
    assert len(lines) == 1, lgfs[0].log.read_text()[-3000:]
