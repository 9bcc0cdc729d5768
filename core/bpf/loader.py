"""What lgf's BPF sources share: compiling their C, kernel offsets from BTF, polling, reading maps.

Both loaders (``sources/uprobe/program.py``, ``sources/tracepoint.py``) keep their C beside them and compile it with BCC,
passing every number the program needs as a ``-D`` constant: the threshold, Go struct offsets from
the target binary, and kernel struct offsets from the running kernel's BTF. Never from kernel
headers: on this kind of host the headers are a different kernel's (docs/sources.md: measured
``task_struct.thread.fsbase`` at 5416 in the 6.1 headers, 3128 in the running 6.18 kernel).

``LGF_PRINT_BPF=1`` makes :func:`load` print the final C (the ``-D`` constants as ``#define`` lines
followed by the file) to stderr before compiling, like the ``--ebpf`` switch of BCC's tools.

Cost: a BCC compile takes about a second of CPU and is done once per distinct set of constants
(one per Go runtime layout in use), not per process. The BTF lookup runs ``bpftool`` once (about
0.3 s) and is cached for the life of the process.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from lgf.bpf.constants import shared as shared_constants
from lgf.errors import TargetRefused

log = logging.getLogger("lgf")

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
UPROBE_EVENTS = ("/sys/kernel/tracing/uprobe_events", "/sys/kernel/debug/tracing/uprobe_events")

BASE_CFLAGS = ("-Wno-macro-redefined", "-Wno-unused-function", "-Wno-unused-variable")

CLOCK_NOTE = "durations are CLOCK_MONOTONIC nanoseconds from bpf_ktime_get_ns()"


def cflags_of(constants: dict[str, int | str]) -> list[str]:
    """``{"THRESHOLD_NS": 50000000}`` -> ``["-DTHRESHOLD_NS=50000000", ...]`` plus the base flags."""
    return [*BASE_CFLAGS, *(f"-D{k}={_c_value(v)}" for k, v in sorted(constants.items()))]


def _c_value(v: int | str) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return f"{v}ULL" if v > 0x7FFFFFFF else str(v)
    return str(v)


SHARED_C = Path(__file__).with_name("lgf_maps.h")
"""Maps and helpers every program shares with this module's readers; put before each program."""


def program_text(c_file: str | Path) -> str:
    """``lgf_maps.h`` then the program: what BCC is given to compile."""
    return SHARED_C.read_text() + "\n" + Path(c_file).read_text()


def final_c(c_file: str | Path, constants: dict[str, int | str]) -> str:
    """The program exactly as BCC compiles it: the constants as ``#define`` lines, then the text."""
    defines = "".join(f"#define {k} {_c_value(v)}\n" for k, v in sorted(constants.items()))
    return f"/* constants passed as -D flags by lgf */\n{defines}\n" + program_text(c_file)


def load(c_file: str | Path, constants: dict[str, int | str]):
    """Compile ``c_file`` (a path beside the loader) with ``constants``; returns the ``bcc.BPF``.

    ``lgf.bpf.constants.shared()`` (stall kinds, counter indexes, goroutine states, the
    wait-slot hash) is always passed too, so no C file keeps its own copy of those numbers.

    Raises TargetRefused when BCC is missing (the source cannot run at all on this host).
    """
    try:
        from bcc import BPF
    except ImportError:
        raise TargetRefused("BCC is not importable: apt-get install python3-bpfcc (and use a venv "
                            "made with --system-site-packages)") from None
    constants = {**shared_constants(), **constants}
    if os.environ.get("LGF_PRINT_BPF") == "1":
        print(final_c(c_file, constants), file=sys.stderr)
    return BPF(text=program_text(c_file).encode(), cflags=cflags_of(constants))


# -- kernel struct offsets from BTF -----------------------------------------------------------

_STRUCT_RE = re.compile(r"^\[(\d+)\] STRUCT '([^']*)' size=\d+ vlen=\d+")
_MEMBER_RE = re.compile(r"^\s+'([^']*)' type_id=(\d+) bits_offset=(\d+)")


@functools.cache
def _btf_structs(btf_path: str = VMLINUX_BTF) -> dict[str, dict[str, tuple[int, int]]]:
    """``{struct name: {member: (type id, bit offset)}}`` plus ``{"#id": name}`` for every STRUCT."""
    try:
        raw = subprocess.run(["bpftool", "btf", "dump", "file", btf_path, "format", "raw"],
                             check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise TargetRefused(f"cannot read kernel BTF from {btf_path} with bpftool: {exc}") from None
    structs: dict[str, dict] = {}
    current: dict | None = None
    for line in raw.splitlines():
        m = _STRUCT_RE.match(line)
        if m:
            current = structs.setdefault(m.group(2), {})
            structs.setdefault("#" + m.group(1), {"name": m.group(2)})
            continue
        if line.startswith("["):
            current = None
            continue
        if current is not None:
            mm = _MEMBER_RE.match(line)
            if mm:
                current[mm.group(1)] = (int(mm.group(2)), int(mm.group(3)))
    return structs


def btf_offset(path: str, btf_path: str = VMLINUX_BTF) -> int:
    """Byte offset of a member path in a kernel struct, from the running kernel's BTF.

    ``btf_offset("task_struct.thread.fsbase")`` -> 3128 on this machine's 6.18 kernel.
    """
    structs = _btf_structs(btf_path)
    struct, *members = path.split(".")
    total = 0
    for member in members:
        fields = structs.get(struct)
        if not fields or member not in fields:
            raise TargetRefused(f"kernel BTF has no {struct}.{member} (needed for {path})")
        type_id, bits = fields[member]
        total += bits // 8
        struct = structs.get(f"#{type_id}", {}).get("name", "")
    return total


def fsbase_offset() -> int:
    """Offset of ``task_struct.thread.fsbase``: a pure-Go thread's current g is at fsbase - 8."""
    return btf_offset("task_struct.thread.fsbase")


# -- polling -----------------------------------------------------------------------------------

class RingPoller:
    """A daemon thread that polls one BPF object's ring buffers until :meth:`stop`.

    The callbacks run on this thread. ``timeout_ms`` bounds how long an event waits in the ring
    when the consumer sleeps (BCC wakes the poll as soon as data arrives, so it is the worst case
    for stop, not the latency of an event).
    """

    def __init__(self, bpf, name: str, timeout_ms: int = 100):
        self.bpf, self.timeout_ms = bpf, timeout_ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lgf-poll-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.bpf.ring_buffer_poll(self.timeout_ms)
            except Exception:  # a callback's bug must not silently end delivery: log and go on
                log.exception("lgf: ring buffer callback failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)


# -- maps --------------------------------------------------------------------------------------

def log2_buckets(slots: dict[int, int]) -> list[int]:
    """``{slot: count}`` -> ``[count for slot 0 .. highest]`` (the ``log2_us`` list of histograms)."""
    if not slots:
        return []
    out = [0] * (max(slots) + 1)
    for slot, n in slots.items():
        out[slot] += n
    return out


def read_map_items(table) -> list[tuple]:
    """Every (key, value) of a BCC hash map, read once (keys and values are ctypes structs)."""
    try:
        return list(table.items())
    except Exception:  # noqa: BLE001 - a map torn down under us reads as empty
        return []


def delete_pid_entries(table, pid: int, field: str = "tgid", in_value: bool = False) -> int:
    """Remove every entry of ``table`` whose key's (or value's) ``field`` is ``pid`` (a process left)."""
    n = 0
    for key, value in read_map_items(table):
        if getattr(value if in_value else key, field, None) == pid:
            try:
                del table[key]
                n += 1
            except KeyError:
                pass
    return n


def comm_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def attach_uprobe(bpf, path: str, addr: int, fn_name: str, pid: int) -> bytes:
    """Attach ``fn_name`` at ELF address ``addr`` of ``path`` in process ``pid`` only; returns the
    probe's name, which :func:`detach_uprobe` takes (so detaching never needs the process alive)."""
    before = set(bpf.uprobe_fds)
    bpf.attach_uprobe(name=path.encode(), addr=addr, fn_name=fn_name.encode(), pid=pid)
    new = set(bpf.uprobe_fds) - before
    return new.pop() if new else b""


def detach_uprobe(bpf, ev_name: bytes) -> None:
    """Remove one uprobe made by :func:`attach_uprobe`.

    BCC 0.26's own ``detach_uprobe`` re-resolves the path in the process (which fails once it has
    exited), raises when tracefs is not mounted (it always tries to remove a tracefs event, even for
    a probe made through the perf "uprobe" PMU, which has none), and then leaves the closed fd in its
    table for ``cleanup()`` to fail on again. Here: close the perf event (that removes the probe) and
    remove a tracefs event only where one can exist. BCC counts open probes in a module global
    against a quota (1,000 by default, ``BCC_PROBE_LIMIT``) and only its own detach gives one back:
    so does this one, or a long-running lgf that arms and disarms goroutine tiers would find every
    attach refused ("Number of open probes would exceed global quota") after about 90 armings.
    """
    import bcc
    from bcc import lib

    fd = bpf.uprobe_fds.pop(ev_name, None)
    if fd is None:
        return
    lib.bpf_close_perf_event_fd(fd)
    bcc._num_open_probes = max(0, bcc._num_open_probes - 1)
    if any(Path(p).exists() for p in UPROBE_EVENTS):
        lib.bpf_detach_uprobe(ev_name)


def kernel_uprobes(match: Callable[[str], bool] | None = None) -> list[str]:
    """The kernel's own listing of uprobes (``uprobe_events``), optionally filtered: how a test
    checks that lgf left nothing behind."""
    for path in UPROBE_EVENTS:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            continue
        return [ln for ln in lines if ln and (match is None or match(ln))]
    return []


def pcs_of(event) -> list[int]:
    """The user stack return addresses of a ring-buffer event, innermost first."""
    return [int(event.pcs[i]) for i in range(min(int(event.nframes), len(event.pcs)))]


def masks_of(indexes: Iterable[int]) -> tuple[int, int]:
    """Bit masks (0-63, 64-127) of small integers: how a set of wait reasons goes into -D flags."""
    lo = hi = 0
    for i in indexes:
        if 0 <= i < 64:
            lo |= 1 << i
        elif 64 <= i < 128:
            hi |= 1 << (i - 64)
    return lo, hi
