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
- ``pod_name``, ``namespace``, ``node``, ``container_name``: where the process's environment
  says so (the Downward API variables ``POD_NAME``/``POD_NAMESPACE``/``NODE_NAME`` and their
  ``K8S_``/``MY_`` spellings, or ``k8s.pod.name``, ``k8s.namespace.name``, ``k8s.node.name``,
  ``k8s.container.name`` in ``OTEL_RESOURCE_ATTRIBUTES``, as the OpenTelemetry operator sets
  them); and, with ``[kubernetes]`` (``lgf.kubernetes``), from the pod the API server or the
  kubelet knows by the cgroup's pod UID: those win, and add ``owner_kind``/``owner_name`` (the
  Deployment, StatefulSet, DaemonSet...), ``app_label`` (``app.kubernetes.io/name``, else
  ``app``) and ``pod_labels``. Looked up at each event (a dict read), so a pod the watch learns
  of after the process was first seen is named from then on.
- tags ``version`` (the main module's version from build info, else its ``vcs.revision``),
  ``deployment.environment`` (from ``OTEL_RESOURCE_ATTRIBUTES``), ``namespace``, ``node`` and
  ``zone`` (the node's ``topology.kubernetes.io/zone``, else ``cloud.availability_zone`` in the
  resource attributes), when known; a tag the event already has is kept, the config's
  ``[alerts] tags`` still apply.

Cost: per process, five small /proc reads and the build info lgf already parsed (``open_binary``
is cached by file): about 0.5 ms, measured on this project's 2-core VM; per event, a clock read
and a dict lookup (2.7 µs with the copying of the keys onto the event), and once a second per
pid one read of /proc/PID/stat to tell a reused pid apart. With ``[kubernetes]``'s pods, per event
one more dict look-up (the pod's keys are computed once per version of the pod): 1.21-1.27x the
per-event cost without (event made + identity applied, 4.4-5.4 µs without pods here;
``bench/bench_identity.py``).
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


FIELDS = ("container_id", "container_runtime", "pod_uid", "otel_service", "pod_name", "namespace",
          "node", "container_name")
"""The string keys an :class:`Identity` puts on an event (``ns_pid`` besides)."""
POD_FIELDS = ("pod_name", "namespace", "node", "container_name", "owner_kind", "owner_name",
              "app_label", "pod_labels")
"""The keys a pod known to Kubernetes (``lgf.kubernetes``) adds or overrides."""
EVENT_KEYS = ("ns_pid", *FIELDS, *POD_FIELDS[4:])
"""Every identity key of an event (what an alert carries from its worst stall)."""


@dataclass(frozen=True)
class Identity:
    ns_pid: int = 0
    container_id: str = ""
    container_runtime: str = ""
    pod_uid: str = ""
    otel_service: str = ""
    environment: str = ""
    version: str = ""
    pod_name: str = ""
    namespace: str = ""
    node: str = ""
    container_name: str = ""
    zone: str = ""

    def fields(self) -> dict:
        """The event keys this identity adds (empty values left out; ``ns_pid`` when read)."""
        out: dict = {"ns_pid": self.ns_pid} if self.ns_pid else {}
        for key in FIELDS:
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out

    def tags(self) -> dict:
        out = {}
        for tag, value in (("version", self.version), ("deployment.environment", self.environment),
                           ("namespace", self.namespace), ("node", self.node), ("zone", self.zone)):
            if value:
                out[tag] = value
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


POD_ENV = {
    "pod_name": ("POD_NAME", "K8S_POD_NAME", "MY_POD_NAME", "KUBERNETES_POD_NAME"),
    "namespace": ("POD_NAMESPACE", "K8S_NAMESPACE", "K8S_POD_NAMESPACE", "MY_POD_NAMESPACE",
                  "KUBERNETES_NAMESPACE"),
    "node": ("NODE_NAME", "K8S_NODE_NAME", "MY_NODE_NAME", "KUBERNETES_NODE_NAME"),
}
"""Where a pod's environment names it: the variables deployments set from the Downward API
(``fieldRef: metadata.name``...), by the names the ecosystem's charts use."""
POD_ATTRIBUTES = {"pod_name": "k8s.pod.name", "namespace": "k8s.namespace.name",
                  "node": "k8s.node.name", "container_name": "k8s.container.name",
                  "zone": "cloud.availability_zone"}
"""The same in ``OTEL_RESOURCE_ATTRIBUTES`` (OpenTelemetry's semantic conventions)."""
_KEPT = tuple(v.encode() for names in POD_ENV.values() for v in names)


def parse_environ(data: bytes) -> dict[str, str]:
    """The ``OTEL_*`` and pod-naming (:data:`POD_ENV`) variables of a /proc/PID/environ blob
    (NUL-separated ``K=V``)."""
    out = {}
    for item in data.split(b"\0"):
        if (item.startswith(b"OTEL_") or item.split(b"=", 1)[0] in _KEPT) and b"=" in item:
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


def pod_naming(env: dict[str, str]) -> dict[str, str]:
    """pod_name, namespace, node, container_name, zone as ``env`` declares them (absent: left out):
    the Downward API variables first, then the resource attributes."""
    attrs = parse_resource_attributes(env.get("OTEL_RESOURCE_ATTRIBUTES", ""))
    out = {}
    for key, attr in POD_ATTRIBUTES.items():
        value = next((env[v].strip() for v in POD_ENV.get(key, ()) if env.get(v, "").strip()), "")
        if value or attrs.get(attr):
            out[key] = value or attrs[attr]
    return out


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
    env = parse_environ(_read(f"/proc/{pid}/environ", binary=True))
    service, environment = otel_naming(env)
    return Identity(parse_nspid(_read(f"/proc/{pid}/status")), container, runtime, pod,
                    service, environment, version_of_binary(process_binary(pid, exe)),
                    **pod_naming(env))


def pod_fields(pods, identity: Identity) -> tuple[dict, dict]:
    """(event keys, tags) of the pod ``identity``'s cgroup names, as ``pods``
    (:class:`lgf.kubernetes.Pods`) knows it; empty when it knows none."""
    pod = pods.pod(identity.pod_uid) if pods is not None and identity.pod_uid else None
    if pod is None:
        return {}, {}
    fields = {"pod_name": pod.name, "namespace": pod.namespace, "node": pod.node or pods.node,
              "container_name": pod.containers.get(identity.container_id, ""),
              "owner_kind": pod.owner_kind, "owner_name": pod.owner_name, "app_label": pod.app(),
              "pod_labels": dict(pod.labels)}
    fields = {k: v for k, v in fields.items() if v}
    tags = {"namespace": pod.namespace, "node": fields.get("node", ""), "zone": pods.zone}
    return fields, {k: v for k, v in tags.items() if v}


class ProcessIdentities:
    """The identity of each process seen, read once per (pid, start time); one per host."""

    def __init__(self, max_entries: int = 8192, clock=time.monotonic_ns, pods=None) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self.pods = pods
        """:class:`lgf.kubernetes.Pods` (``[kubernetes]``), or None."""
        self._lock = threading.Lock()
        self._cache: OrderedDict[int, tuple[int | None, int, Identity]] = OrderedDict()
        """pid -> (start time, when last checked, identity)."""
        self._pod_views: dict[tuple[str, str], tuple] = {}
        """(pod UID, container id) -> (the pod object, its event keys, its tags)."""

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

    def _pod_fields(self, identity: Identity) -> tuple[dict, dict]:
        """:func:`pod_fields`, computed again only when the pod cache holds another object for
        the pod (the watch saw it change): per stall, one dict look-up."""
        if self.pods is None or not identity.pod_uid:
            return {}, {}
        pod = self.pods.pod(identity.pod_uid)
        key = (identity.pod_uid, identity.container_id)
        with self._lock:
            hit = self._pod_views.get(key)
        if hit is not None and hit[0] is pod:
            return hit[1], hit[2]
        fields, tags = pod_fields(self.pods, identity)
        with self._lock:
            if len(self._pod_views) >= self.max_entries:
                self._pod_views.clear()
            self._pod_views[key] = (pod, fields, tags)
        return fields, tags

    def apply(self, event) -> None:
        """Put ``event``'s process identity on it (keys already there, e.g. replayed, are kept)."""
        if "ns_pid" in event.extra or not event.pid:
            return
        identity = self.of(event.pid, event.exe)
        if identity is None:
            return
        pod, pod_tags = self._pod_fields(identity)
        for key, value in {**identity.fields(), **pod}.items():
            event.extra.setdefault(key, value)
        tags = {**identity.tags(), **pod_tags}
        if tags:
            event.tags = {**tags, **event.tags}


def shown(d) -> list[tuple[str, str]]:
    """What of an event's identity a person reading its pid should see, as (label, value) pairs,
    from an event's dict or ``extra``: ``ns_pid`` when it differs from ``pid``, the container (its
    name when Kubernetes named it, else its id's first 12 characters, as ``docker ps`` shows it;
    and its runtime), the pod (``namespace/name`` when known, else its UID), its owner
    (``Deployment/checkout-api``) and node."""
    out = []
    ns_pid = d.get("ns_pid")
    if ns_pid and ns_pid != d.get("pid"):
        out.append(("ns_pid", str(ns_pid)))
    if d.get("container_id") or d.get("container_name"):
        runtime = d.get("container_runtime")
        what = str(d.get("container_name") or str(d["container_id"])[:12])
        out.append(("container", what + (f" ({runtime})" if runtime else "")))
    if d.get("pod_name"):
        ns = d.get("namespace")
        out.append(("pod", f"{ns}/{d['pod_name']}" if ns else str(d["pod_name"])))
    elif d.get("pod_uid"):
        out.append(("pod", str(d["pod_uid"])))
    if d.get("owner_kind") and d.get("owner_name"):
        out.append(("owner", f"{d['owner_kind']}/{d['owner_name']}"))
    if d.get("node"):
        out.append(("node", str(d["node"])))
    return out
