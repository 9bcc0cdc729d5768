"""``lgf demo``: a Go program that stalls on purpose, watched with the shipped config.

Why it exists: on a host with no Go service, ``lgf run`` has nothing to say, and a newcomer cannot
tell a working lgf from a broken one. The demo shows real stalls of every cause lgf knows (channel,
select, lock, syscall, network, sleep, scheduler starvation, GC stop-the-world, and a slow HTTP
request carrying a W3C ``traceparent``), the alerts they make, and the latency page, within a
minute, on any host lgf runs on.

Why the Go source ships inside the package (``lgf/demo/lgfdemo``) and is built here rather than a
binary shipped: an installed lgf must be able to run it, and a prebuilt binary would tie the wheel
to one architecture and one Go release and hide what the program does. The source is the
documentation of every stall the demo makes. Building needs a Go toolchain (1.21 or newer), found
in this order: ``$LGF_GO``, ``go`` on PATH, the toolchains of a checkout (``.toolchains/go*``, which
``make test`` installs), ``/usr/local/go`` and ``/usr/lib/go``. The build is cached under
``$XDG_CACHE_HOME/lgf`` (``~/.cache/lgf``) by the source's hash and the toolchain's version:
~10-30 s the first time, nothing after.

The config is the shipped ``plugins.toml`` (``lgf/demo/plugins.toml`` is a link to it), with
three changes, each said on start: ``[targets]`` is the demo's pid only, ``spool_dir`` a directory
of the demo's own, and the ``tracepoint`` source is added, since blocking syscalls are only seen
by it and the shipped config leaves it out for its cost.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "lgfdemo"
SHIPPED_CONFIG = HERE / "plugins.toml"
MIN_GO = (1, 21)

log = logging.getLogger("lgf.demo")


class DemoError(Exception):
    """Why the demo cannot run, said so that the reader knows what to do."""


# --- the Go program -------------------------------------------------------------------------

def _go_version(go: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, timeout=30,
                             env={**os.environ, "GOTOOLCHAIN": "local"}).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    digits = out.removeprefix("go").split(".")
    try:
        return tuple(int(d) for d in digits[:2])
    except ValueError:
        return None


def go_candidates() -> list[str]:
    """Where a Go toolchain may be, in the order they are tried."""
    found = [os.environ.get("LGF_GO", ""), shutil.which("go") or ""]
    checkout = HERE.parent.parent / ".toolchains"  # core/demo -> the checkout (editable install)
    found += sorted((str(p) for p in checkout.glob("go*/go/bin/go")), reverse=True)
    found += ["/usr/local/go/bin/go", "/usr/lib/go/bin/go"]
    return [f for f in found if f and os.access(f, os.X_OK)]


def find_go() -> str:
    for go in go_candidates():
        version = _go_version(go)
        if version and version >= MIN_GO:
            return go
    raise DemoError("lgf demo builds a small Go program and needs a Go toolchain (1.21 or newer): "
                    "apt-get install golang-go, or set LGF_GO=/path/to/go/bin/go "
                    "(in a checkout, `make toolchains` installs one under .toolchains/)")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lgf"


def build(go: str | None = None) -> Path:
    """Build the demo program (cached by source and toolchain); returns the executable."""
    go = go or find_go()
    h = hashlib.sha256((".".join(map(str, _go_version(go) or ())) + "|-trimpath").encode())
    for p in sorted(SOURCE.iterdir()):
        h.update(p.name.encode() + p.read_bytes())
    out = cache_dir() / f"lgfdemo-{h.hexdigest()[:12]}"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lgfdemo-src-") as src:
        for p in SOURCE.iterdir():  # the package may be read-only: build a copy
            shutil.copy(p, src)
        env = {**os.environ, "GOTOOLCHAIN": "local", "GOPROXY": "off", "GOFLAGS": "-mod=mod",
               "CGO_ENABLED": "0", "GOCACHE": os.environ.get("GOCACHE") or str(cache_dir() / "gocache")}
        tmp = out.with_suffix(".tmp")
        done = subprocess.run([go, "build", "-trimpath", "-o", str(tmp), "."], cwd=src, env=env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise DemoError(f"building the demo program with {go} failed:\n{done.stderr.strip()}")
        tmp.rename(out)
    return out


# --- the config -----------------------------------------------------------------------------

def demo_raw_config(pid: int, spool_dir: str, listen: str, config_path: Path = SHIPPED_CONFIG) -> dict:
    """The shipped config as a dict, pointed at the demo: its pid, its spool, the tracepoint source."""
    from lgf import config as cfg

    raw = cfg.parse_toml(config_path)
    raw["targets"] = {"pids": [pid]}
    raw.setdefault("lgf", {})["spool_dir"] = spool_dir
    sources = raw.setdefault("sources", [])
    if not any(isinstance(s, dict) and s.get("use") == "tracepoint" for s in sources):
        sources.append({"use": "tracepoint"})
    raw.setdefault("http", {})["listen"] = listen
    return raw


# --- running it -----------------------------------------------------------------------------

def run(seconds: float = 0, listen: str = "127.0.0.1:9464", config_path: Path = SHIPPED_CONFIG,
        hold: str = "150ms", every: str = "2s") -> int:
    """Build and start the demo program, watch it until SIGINT/SIGTERM or ``seconds``; exit code."""
    from lgf import config as cfg
    from lgf.manager import make_manager
    from lgf.run import Host

    if os.geteuid() != 0:
        raise DemoError("lgf demo loads BPF programs: run it as root (sudo lgf demo)")
    exe = build()
    spool = tempfile.mkdtemp(prefix="lgf-demo-spool-")
    proc = subprocess.Popen([str(exe), "-hold", hold, "-every", every], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    threading.Thread(target=_relay, args=(proc,), daemon=True).start()
    try:
        raw = demo_raw_config(proc.pid, spool, listen, config_path)
        manager = make_manager(entry_points=True)
        config = cfg.validate(raw, manager.components(), str(config_path))
        log.info("demo: watching %s (pid %d) with %s, changed for the demo: [targets] pids = [%d], "
                 "spool_dir = %s, + the tracepoint source (syscall stalls)", exe.name, proc.pid,
                 config_path, proc.pid, spool)
        log.info("demo: the latency page is at http://%s/ui ; Ctrl-C stops", listen)
        host = Host(manager, config)
        host.build()
        if seconds:
            timer = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGTERM))
            timer.daemon = True
            timer.start()
        return host.run()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(spool, ignore_errors=True)


def _relay(proc: subprocess.Popen) -> None:
    """The demo program's own lines ("demo: lock stall of 150ms in main.lockStall") to stderr, so
    stdout stays lgf's: what lgf saw, beside what the program says it did."""
    for line in proc.stdout:
        sys.stderr.write(line)
        sys.stderr.flush()
