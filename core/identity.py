"""Who a traced process is, beyond its host pid: container, pod, its own pid, its service name.

Read from /proc once per process (the cache is keyed by pid and start time) and put on every
event of that process by the pipeline, before the enrichers (docs/stalls.md, "The event"):

- ``ns_pid``: the pid the process knows itself by, in its own PID namespace (the last ``NSpid``
  of /proc/PID/status; equal to ``pid`` outside a container): the pid its logs print.
- ``container_id``, ``container_runtime``: from /proc/PID/cgroup (:func:`parse_cgroup`), cgroup v1
  and v2, with the systemd or the cgroupfs driver: ``docker``, ``containerd``, ``cri-o``,
  ``podman``; absent outside a container.
- ``pod_uid``: the Kubernetes pod UID in that cgroup path (``kubepods...pod<UID>``); absent
  outside Kubernetes.
- ``otel_service``: the service name the process's environment declares the way OpenTelemetry
  SDKs read it: ``OTEL_SERVICE_NAME``, else ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``
  (/proc/PID/environ, the environment it was started with). The alert policy names the service
  by it when no ``[alerts] services`` pattern matches (``lgf.alerts``).
- tags ``version`` (the main module's version from build info, else its ``vcs.revision``) and
  ``deployment.environment`` (from ``OTEL_RESOURCE_ATTRIBUTES``), when known; a tag the event
  already has is kept.

Cost: per process, five small /proc reads and the build info lgf already parsed (``open_binary``
is cached by file): about 0.5 ms, measured on this project's 2-core VM; per event, a clock read
and a dict lookup (2.7 µs with the copying of the keys onto the event), and once a second per
pid one read of /proc/PID/stat to tell a reused pid apart.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import unquote

from .errors import TargetRefused
from .golang.gobinary import open_binary
from .golang.procfs import process_binary

_HEX64 = re.compile(r"[0-9a-f]{64}")
_SCOPED = re.compile(r"(docker|cri-containerd|crio|libpod|nerdctl)-([0-9a-f]{64})(?:\.scope)?")
_POD = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
_RUNTIME_OF_PREFIX = {"docker": "docker", "cri-containerd": "containerd", "crio": "cri-o",
                      "libpod": "podman", "nerdctl": "containerd"}
RECHECK_NS = 1_000_000_000
"""How often a cached pid's start time is read again (pid reuse)."""


@dataclass(frozen=True)
class Identity:
    ns_pid: int = 0
    container_id: str = ""
    container_runtime: str = ""
    pod_uid: str = ""
    otel_service: str = ""
    environment: str = ""
    version: str = ""

    def fields(self) -> dict:
        """The event keys this identity adds (empty values left out; ``ns_pid`` when read)."""
        out: dict = {"ns_pid": self.ns_pid} if self.ns_pid else {}
        for key in ("container_id", "container_runtime", "pod_uid", "otel_service"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out

    def tags(self) -> dict:
        out = {}
        if self.version:
            out["version"] = self.version
        if self.environment:
            out["deployment.environment"] = self.environment
        return out


def _container_of_path(path: str) -> tuple[str, str]:
    """(container id, runtime) named by one cgroup path; ("", "") if none."""
    segments = [s for s in path.split("/") if s]
    for i in range(len(segments) - 1, -1, -1):
        seg = segments[i]
        m = _SCOPED.fullmatch(seg)
        if m:
            return m.group(2), _RUNTIME_OF_PREFIX[m.group(1)]
        if _HEX64.fullmatch(seg):
            parents = segments[:i]
            if "docker" in parents:
                return seg, "docker"
            if "libpod_parent" in parents:
                return seg, "podman"
            if any(p.startswith("kubepods") for p in parents):
                return seg, "containerd"  # cgroupfs driver: CRI-O would have written crio-<id>
            return seg, ""
    return "", ""


def parse_cgroup(text: str) -> tuple[str, str, str]:
    """(container id, runtime, pod UID) from the text of /proc/PID/cgroup; "" for each unknown.

    Every line is ``hierarchy:controllers:path``; cgroup v2 has the one line ``0::path``. Shapes
    (docs/stalls.md): ``/system.slice/docker-<id>.scope``, ``/docker/<id>``,
    ``/kubepods.slice/.../kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope``,
    ``/kubepods/burstable/pod<uid>/<id>``, ``.../crio-<id>.scope``, ``/machine.slice/libpod-<id>.scope``
    (``/container`` below it with Podman 4), ``/libpod_parent/libpod-<id>``."""
    container = runtime = pod = ""
    paths = [line.split(":", 2)[2] for line in text.splitlines() if line.count(":") >= 2]
    for path in paths:
        if not container:
            container, runtime = _container_of_path(path)
        if not pod:
            m = _POD.search(path)
            if m:
                pod = m.group(1).replace("_", "-")
        if container and pod:
            break
    return container, runtime, pod


def parse_nspid(status: str) -> int:
    """The pid in the process's own (innermost) PID namespace, from /proc/PID/status; 0 if absent."""
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            values = line.split()[1:]
            return int(values[-1]) if values else 0
    return 0


def parse_environ(data: bytes) -> dict[str, str]:
    """The ``OTEL_*`` variables of a /proc/PID/environ blob (NUL-separated ``K=V``)."""
    out = {}
    for item in data.split(b"\0"):
        if item.startswith(b"OTEL_") and b"=" in item:
            k, _, v = item.partition(b"=")
            out[k.decode(errors="replace")] = v.decode(errors="replace")
    return out


def parse_resource_attributes(value: str) -> dict[str, str]:
    """``OTEL_RESOURCE_ATTRIBUTES`` (``k=v,k2=v2``, values percent-encoded) as a dict."""
    out = {}
    for pair in value.split(","):
        k, sep, v = pair.partition("=")
        if sep and k.strip():
            out[unquote(k.strip())] = unquote(v.strip())
    return out


def otel_naming(env: dict[str, str]) -> tuple[str, str]:
    """(service name, deployment environment) as OpenTelemetry SDKs read them from ``env``."""
    attrs = parse_resource_attributes(env.get("OTEL_RESOURCE_ATTRIBUTES", ""))
    service = env.get("OTEL_SERVICE_NAME", "").strip() or attrs.get("service.name", "")
    environment = attrs.get("deployment.environment.name") or attrs.get("deployment.environment", "")
    return service, environment


def version_of_binary(path: str | None) -> str:
    """The main module's version from build info (not ``(devel)``), else ``vcs.revision``."""
    if not path:
        return ""
    try:
        info = open_binary(path).info
    except (TargetRefused, OSError):
        return ""
    if info.module_version and info.module_version != "(devel)":
        return info.module_version
    return info.settings.get("vcs.revision", "")


def _read(path: str, binary: bool = False):
    try:
        with open(path, "rb" if binary else "r") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return b"" if binary else ""


def start_time_of(pid: int) -> int | None:
    """/proc/PID/stat field 22 (clock ticks after boot), None when the process is gone."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    rest = stat[stat.rfind(")") + 2:].split()
    return int(rest[19]) if len(rest) > 19 else 0


def read_identity(pid: int, exe: str = "") -> Identity:
    """Everything :class:`Identity` holds for ``pid``, read from /proc now."""
    container, runtime, pod = parse_cgroup(_read(f"/proc/{pid}/cgroup"))
    service, environment = otel_naming(parse_environ(_read(f"/proc/{pid}/environ", binary=True)))
    return Identity(parse_nspid(_read(f"/proc/{pid}/status")), container, runtime, pod,
                    service, environment, version_of_binary(process_binary(pid, exe)))


class ProcessIdentities:
    """The identity of each process seen, read once per (pid, start time); one per host."""

    def __init__(self, max_entries: int = 8192, clock=time.monotonic_ns) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._lock = threading.Lock()
        self._cache: OrderedDict[int, tuple[int | None, int, Identity]] = OrderedDict()
        """pid -> (start time, when last checked, identity)."""

    def of(self, pid: int, exe: str = "") -> Identity | None:
        """The identity of ``pid``; None if it never could be read (gone before lgf looked)."""
        if pid <= 0:
            return None
        now = self.clock()
        with self._lock:
            hit = self._cache.get(pid)
        if hit is not None and now - hit[1] < RECHECK_NS:
            return hit[2]
        start = start_time_of(pid)
        if hit is not None and (start is None or start == hit[0]):  # same process, or exited: keep
            with self._lock:
                self._cache[pid] = (hit[0], now, hit[2])
            return hit[2]
        if start is None:
            return None
        identity = read_identity(pid, exe)
        with self._lock:
            self._cache[pid] = (start, now, identity)
            self._cache.move_to_end(pid)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return identity

    def apply(self, event) -> None:
        """Put ``event``'s process identity on it (keys already there, e.g. replayed, are kept)."""
        if "ns_pid" in event.extra or not event.pid:
            return
        identity = self.of(event.pid, event.exe)
        if identity is None:
            return
        for key, value in identity.fields().items():
            event.extra.setdefault(key, value)
        tags = identity.tags()
        if tags:
            event.tags = {**tags, **event.tags}


def shown(d) -> list[tuple[str, str]]:
    """What of an event's identity a person reading its pid should see, as (label, value) pairs,
    from an event's dict or ``extra``: ``ns_pid`` when it differs from ``pid``, the container (its
    id's first 12 characters, as ``docker ps`` shows it, and its runtime) and the pod UID."""
    out = []
    ns_pid = d.get("ns_pid")
    if ns_pid and ns_pid != d.get("pid"):
        out.append(("ns_pid", str(ns_pid)))
    if d.get("container_id"):
        runtime = d.get("container_runtime")
        out.append(("container", str(d["container_id"])[:12] + (f" ({runtime})" if runtime else "")))
    if d.get("pod_uid"):
        out.append(("pod", str(d["pod_uid"])))
    return out
