"""The pods of this node, as Kubernetes knows them: name, namespace, labels, owner, containers.

A process's cgroup path names its pod only by UID (``lgf.identity``). What a person reading an
alert knows a pod by comes from Kubernetes itself, from one of two places (``[kubernetes]``):

- **The API server** (``enabled = true``), through the official ``kubernetes`` Python client
  (the optional dependency ``lgf[kubernetes]``): in-cluster config (the DaemonSet's service
  account, ``deploy/daemonset.yaml`` grants it get/list/watch on pods, replicasets and get on
  nodes), or ``api_server`` (a ``kubectl proxy`` URL). One thread lists the pods whose
  ``spec.nodeName`` is this node, then watches them from that list's resourceVersion, keeping a
  cache by pod UID: a look-up is a dict read, never a request. A watch that ends is resumed from
  the last resourceVersion seen; one the server says is too old (410 Gone) lists again. A pod
  owned by a ReplicaSet is owned, for a person, by the ReplicaSet's Deployment: the ReplicaSet is
  read once (cached by namespace and name). The node's zone is its
  ``topology.kubernetes.io/zone`` label, read once.
- **The kubelet's read-only pod list** (``kubelet_pods``, e.g. ``http://127.0.0.1:10255/pods``,
  a port most clusters now close): the same pod objects, no client library, re-read at most every
  ``kubelet_refresh`` when a UID is not in the last copy, on a thread of its own (the stall that
  missed waits for it at most ``MISS_WAIT_S``).

Both give the same :class:`Pod`, read from a pod object's JSON by :func:`pod_of` (what the API
server lists and watches, and what the kubelet serves, are the same ``v1.Pod``). Without an API
server, a ReplicaSet's Deployment is named by removing the pod's ``pod-template-hash`` label
from the ReplicaSet's name, which is how the Deployment controller names them.

No cluster runs where lgf is developed: ``tests/test_kubernetes.py`` drives the real client
against a local HTTP server serving API-server responses of the real shape
(``tests/support/fakekube.py``).

Cost: nothing per event but a dict look-up; one watch connection per node; a ReplicaSet read per
ReplicaSet seen.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("lgf.kubernetes")

ZONE_LABEL = "topology.kubernetes.io/zone"
APP_LABELS = ("app.kubernetes.io/name", "app")
"""The pod labels that name an application, in the order Grafana Beyla reads them."""
DELETED_KEPT_S = 300.0
"""How long a deleted pod is still known: its last stalls may still be on their way."""
KUBELET_TIMEOUT_S = 5.0
MISS_WAIT_S = 0.2
"""How long a stall of a pod not in the kubelet's last list waits for the list being read."""
RETRY_S = 5.0
RETRY_MAX_S = 120.0
"""Wait before listing again after the API server failed: 5 s, doubled at each failure up to 2 min."""


@dataclass
class KubernetesOptions:
    """``[kubernetes]``: name pods, their owners and nodes (``lgf.kubernetes``)."""

    enabled: bool = False
    """Read this node's pods from the API server (needs ``pip install lgf[kubernetes]`` and the
    DaemonSet's RBAC, ``deploy/daemonset.yaml``): pod name, namespace, labels, owner
    (Deployment, StatefulSet, DaemonSet...), container name, node and zone on every stall."""
    api_server: str = ""
    """The API server's URL (e.g. ``http://127.0.0.1:8001`` from ``kubectl proxy``); empty: the
    in-cluster config of the pod lgf runs in (its service account)."""
    node_name: str = ""
    """This node's name, which selects the pods watched; empty: ``$NODE_NAME`` (the DaemonSet sets
    it from ``spec.nodeName``), else the host name."""
    kubelet_pods: str = ""
    """URL of the kubelet's read-only pod list (``http://127.0.0.1:10255/pods``); works without
    ``enabled``. Empty: not read."""
    kubelet_refresh: float = 10.0
    """Seconds between two reads of ``kubelet_pods`` (read only when a pod is not known)."""
    watch_timeout: int = 300
    """Seconds one watch request lasts before it is resumed (the server may end it sooner)."""

    def __post_init__(self):
        for key in ("api_server", "kubelet_pods"):
            url = getattr(self, key)
            if url and not url.startswith(("http://", "https://")):
                raise ValueError(f"{key}: {url!r} is not an http(s) URL")
        if self.kubelet_refresh <= 0 or self.watch_timeout <= 0:
            raise ValueError("kubelet_refresh and watch_timeout must be more than 0")
        if self.enabled and importlib.util.find_spec("kubernetes") is None:
            raise ValueError("enabled: needs the kubernetes client, not installed here: "
                             "pip install 'lgf[kubernetes]' (the container image has it)")


@dataclass(frozen=True)
class Pod:
    """What lgf keeps of one pod."""

    uid: str
    name: str
    namespace: str
    node: str = ""
    labels: dict = field(default_factory=dict, hash=False, compare=False)
    owner_kind: str = ""
    """The controller that owns the pod as a person names it: ``Deployment`` rather than its
    ReplicaSet, ``StatefulSet``, ``DaemonSet``, ``Job``...; "" for a bare pod."""
    owner_name: str = ""
    containers: dict = field(default_factory=dict, hash=False, compare=False)
    """Container id (without its ``containerd://`` prefix) -> container name."""

    def app(self) -> str:
        """The application its labels name (``app.kubernetes.io/name``, else ``app``), or ""."""
        return next((self.labels[k] for k in APP_LABELS if self.labels.get(k)), "")


def _controller(meta: dict) -> tuple[str, str]:
    refs = meta.get("ownerReferences") or []
    ref = next((r for r in refs if r.get("controller")), refs[0] if refs else None)
    return (ref.get("kind", ""), ref.get("name", "")) if ref else ("", "")


def pod_of(obj: dict, replicaset_owner: Callable[[str, str], tuple[str, str] | None] | None = None) -> Pod:
    """A :class:`Pod` from a ``v1.Pod`` object's JSON (camelCase keys, as served).
    ``replicaset_owner(namespace, name)`` names a ReplicaSet's owner (None: not known); without
    it, or when it does not know, the Deployment is named from ``pod-template-hash``."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    labels = dict(meta.get("labels") or {})
    namespace = meta.get("namespace", "")
    kind, name = _controller(meta)
    if kind == "ReplicaSet":
        owner = replicaset_owner(namespace, name) if replicaset_owner else None
        if owner is None:
            suffix = "-" + labels.get("pod-template-hash", "\0")
            owner = ("Deployment", name.removesuffix(suffix)) if name.endswith(suffix) else (kind, name)
        if owner[0]:
            kind, name = owner
    containers = {}
    for key in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
        for c in status.get(key) or []:
            cid = c.get("containerID") or ""
            if cid:
                containers[cid.partition("://")[2] or cid] = c.get("name", "")
    return Pod(uid=meta.get("uid", ""), name=meta.get("name", ""), namespace=namespace,
               node=spec.get("nodeName", ""), labels=labels, owner_kind=kind, owner_name=name,
               containers=containers)


class KubeletPods:
    """The kubelet's read-only pod list, re-read at most every ``refresh`` seconds on a miss.

    A miss is asked on the pipeline's thread (``lgf.identity``, per stall of a pod not known yet),
    so the read runs on a thread of its own and the miss waits for it at most ``MISS_WAIT_S``: a
    kubelet that hangs used to hold every stall behind it for the request's whole timeout (5 s in
    each ``refresh`` of 10 s: half the pipeline's time). A stall that does not wait long enough is
    delivered without its pod's name (its cgroup's pod UID is still on it); the next ones have it.
    Only the miss that starts a read waits for it: the others of a hung read pass at once.
    """

    def __init__(self, url: str, refresh: float = 10.0, clock=time.monotonic) -> None:
        self.url, self.refresh, self.clock = url, refresh, clock
        self._lock = threading.Lock()
        self._pods: dict[str, Pod] = {}
        self._read_at: float | None = None
        self._reading: threading.Thread | None = None

    def read(self) -> None:
        """Read the list now (errors logged: the last copy stays)."""
        import urllib.request  # here: 20 ms of imports every lgf without [kubernetes] would pay at start

        try:
            with urllib.request.urlopen(self.url, timeout=KUBELET_TIMEOUT_S) as resp:
                items = json.load(resp).get("items") or []
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("cannot read the kubelet's pod list %s: %s", self.url, exc)
            return
        pods = {p.uid: p for p in (pod_of(item) for item in items) if p.uid}
        with self._lock:
            self._pods = pods

    def pod(self, uid: str) -> Pod | None:
        with self._lock:
            hit = self._pods.get(uid)
            if hit is not None:
                return hit
            if (self._reading is not None and self._reading.is_alive()) or (
                    self._read_at is not None and self.clock() - self._read_at < self.refresh):
                return None  # (read lately, or being read: only the miss that asked waits)
            self._read_at = self.clock()
            reading = self._reading = threading.Thread(target=self.read, name="lgf-kubelet-pods", daemon=True)
            reading.start()
        reading.join(MISS_WAIT_S)
        with self._lock:
            return self._pods.get(uid)


class ApiPods:
    """This node's pods from the API server: a list, then a watch, kept in a cache by UID."""

    def __init__(self, options: KubernetesOptions, node: str) -> None:
        self.options, self.node = options, node
        self._lock = threading.Lock()
        self._pods: dict[str, Pod] = {}
        self._deleted: dict[str, float] = {}
        self._owners: dict[tuple[str, str], tuple[str, str]] = {}
        self.zone = ""
        self.synced = threading.Event()
        """Set once the first list is in the cache."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._api = self._core = self._apps = None
        self._resp = None

    # -- the client --------------------------------------------------------------------------

    def _connect(self) -> None:
        try:
            from kubernetes import client, config
        except ImportError as exc:
            raise RuntimeError("[kubernetes] enabled needs the kubernetes client: "
                               "pip install 'lgf[kubernetes]'") from exc
        if self.options.api_server:
            conf = client.Configuration()
            conf.host = self.options.api_server.rstrip("/")
        else:
            conf = client.Configuration()
            config.load_incluster_config(client_configuration=conf)
        self._api = client.ApiClient(conf)
        self._core = client.CoreV1Api(self._api)
        self._apps = client.AppsV1Api(self._api)

    @staticmethod
    def _json(resp) -> dict:
        """The JSON body of a response asked with ``_preload_content=False``: lgf reads the pod
        objects as JSON itself rather than through the client's models, which refuse an object
        that lacks a field lgf never reads."""
        try:
            return json.loads(resp.data)
        finally:
            resp.release_conn()

    def replicaset_owner(self, namespace: str, name: str) -> tuple[str, str] | None:
        """The controller of ReplicaSet ``namespace/name`` (read once); None if it cannot be read."""
        key = (namespace, name)
        with self._lock:
            hit = self._owners.get(key)
        if hit is not None:
            return hit
        try:
            rs = self._json(self._apps.read_namespaced_replica_set(name, namespace, _preload_content=False))
        except Exception as exc:  # noqa: BLE001 - RBAC or a deleted ReplicaSet: name it from the hash
            log.debug("cannot read replicaset %s/%s: %s", namespace, name, exc)
            return None
        owner = _controller(rs.get("metadata") or {})
        owner = owner if owner[0] else ("ReplicaSet", name)
        with self._lock:
            self._owners[key] = owner
        return owner

    def _read_zone(self) -> None:
        try:
            node = self._json(self._core.read_node(self.node, _preload_content=False))
            self.zone = ((node.get("metadata") or {}).get("labels") or {}).get(ZONE_LABEL, "")
        except Exception as exc:  # noqa: BLE001 - no RBAC on nodes: no zone
            log.info("cannot read node %s (its zone stays unknown): %s", self.node, exc)

    # -- list and watch ----------------------------------------------------------------------

    def _selector(self) -> str:
        return f"spec.nodeName={self.node}"

    def _list(self) -> str:
        """List this node's pods into the cache; the list's resourceVersion."""
        listed = self._json(self._core.list_pod_for_all_namespaces(field_selector=self._selector(),
                                                                    _preload_content=False))
        pods = {p.uid: p for p in (pod_of(i, self.replicaset_owner) for i in listed.get("items") or [])}
        with self._lock:
            now = time.monotonic()
            for uid in set(self._pods) - set(pods):  # deleted while no watch ran: kept a while too
                pods[uid] = self._pods[uid]
                self._deleted.setdefault(uid, now)
            self._pods = pods
            self._expire()
        self.synced.set()
        return (listed.get("metadata") or {}).get("resourceVersion", "")

    def _apply(self, kind: str, obj: dict) -> None:
        pod = pod_of(obj, self.replicaset_owner)
        if not pod.uid:
            return
        with self._lock:
            if kind == "DELETED":
                self._deleted[pod.uid] = time.monotonic()
                self._pods[pod.uid] = pod
            else:
                self._pods[pod.uid] = pod
                self._deleted.pop(pod.uid, None)
            self._expire()

    def _expire(self) -> None:
        cut = time.monotonic() - DELETED_KEPT_S
        for uid in [u for u, at in self._deleted.items() if at < cut]:
            self._deleted.pop(uid, None)
            self._pods.pop(uid, None)

    def _watch_from(self, version: str) -> str:
        """One watch request from ``version``: its events (one JSON object a line, the body
        chunked) go into the cache as they come. The last resourceVersion seen; "" when the
        server said it is too old (410 Gone: list again)."""
        resp = self._core.list_pod_for_all_namespaces(
            field_selector=self._selector(), watch=True, resource_version=version,
            allow_watch_bookmarks=True, timeout_seconds=self.options.watch_timeout,
            _preload_content=False)
        self._resp = resp
        try:
            pending = b""
            for chunk in resp.stream(amt=None, decode_content=False):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if self._stop.is_set():
                        return version
                    if line.strip():
                        version = self._event(json.loads(line), version)
                        if not version:
                            return ""
        finally:
            self._resp = None
            resp.close()
            resp.release_conn()
        return version

    def _event(self, ev: dict, version: str) -> str:
        """Apply one watch event; the resourceVersion to resume from ("" to list again)."""
        kind, obj = ev.get("type", ""), ev.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") != 410:
                log.warning("pod watch error: %s", obj.get("message", obj))
            return ""
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self._apply(kind, obj)
        return (obj.get("metadata") or {}).get("resourceVersion") or version

    def _run(self) -> None:
        version, delay = "", RETRY_S
        while not self._stop.is_set():
            try:
                if self._api is None:
                    self._connect()
                    self._read_zone()
                if not version:
                    version = self._list()
                    delay = RETRY_S
                version = self._watch_from(version)
            except Exception as exc:  # noqa: BLE001 - the API server away: retry, keep the cache
                if self._stop.is_set():
                    break
                log.warning("reading pods from the API server failed (retrying in %.0fs): %s", delay, exc)
                version = ""
                self._stop.wait(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    def start(self) -> ApiPods:
        self._thread = threading.Thread(target=self._run, name="lgf-kubernetes", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        resp = self._resp
        if resp is not None:  # unblock the watch's read
            try:
                resp.shutdown()
            except Exception:  # noqa: BLE001 - an older urllib3 has no shutdown: the read times out
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def pod(self, uid: str) -> Pod | None:
        with self._lock:
            return self._pods.get(uid)


class Pods:
    """What lgf asks: the pod of a UID, from the API server's cache, else the kubelet's list."""

    def __init__(self, api: ApiPods | None = None, kubelet: KubeletPods | None = None, node: str = ""):
        self.api, self.kubelet, self.node = api, kubelet, node

    @property
    def zone(self) -> str:
        return self.api.zone if self.api is not None else ""

    def pod(self, uid: str) -> Pod | None:
        if not uid:
            return None
        hit = self.api.pod(uid) if self.api is not None else None
        if hit is None and self.kubelet is not None:
            hit = self.kubelet.pod(uid)
        return hit

    def start(self) -> Pods:
        if self.api is not None:
            self.api.start()
        return self

    def stop(self) -> None:
        if self.api is not None:
            self.api.stop()


def node_name(options: KubernetesOptions, environ: dict | None = None) -> str:
    import os
    import socket

    env = os.environ if environ is None else environ
    return options.node_name or env.get("NODE_NAME", "") or socket.gethostname()


def pods_of(options: KubernetesOptions | None) -> Pods | None:
    """The :class:`Pods` the config asks for (not started), or None when it asks for none."""
    if options is None or not (options.enabled or options.kubelet_pods):
        return None
    node = node_name(options)
    api = ApiPods(options, node) if options.enabled else None
    kubelet = KubeletPods(options.kubelet_pods, options.kubelet_refresh) if options.kubelet_pods else None
    return Pods(api, kubelet, node)
