"""The symbolizer's shared Ray backend: one actor per build id for every lgf on a cluster.

**SharedRayBackend** (a cluster: ``"auto"`` or ``"host:port"``): many hosts, one decode per build.

* **Found by build id**: the binary's Go build id (else GNU build id) from its ELF notes names a
  detached actor (:func:`actor_name`, namespace ``lgf``), made by the first lgf that needs it
  with ``get_if_exists`` and found by every other. ``num_cpus=0``; one build per actor.
* **Bytes**: the actor opens the caller's path only when the file there has its build id (same
  node, shared volume); otherwise one caller ships the whole file once (:meth:`BuildSymbolActor.load`).
* **Bounded by use**: an actor not called for ``idle_exit_s`` kills itself; a caller whose
  handle died makes it again, once, before calling the cluster lost.
* **Lost cluster**: a failed call whose head does not answer, or a watchdog knock (every
  ``WATCH_INTERVAL_S``) that fails, switches to the fallback (the host's local symbol cache),
  calls ``on_lost`` once and disconnects: Ray ends a driver process whose GCS has been gone for
  60 s. Every ``REJOIN_INTERVAL_S`` it knocks again and re-attaches when the head answers.
* Measured by ``bench/bench_ray_symbolizer.py shared``: see docs/many-hosts.md "Symbols on a Ray cluster".
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections import OrderedDict

from lgf.golang.pclntab import Frame, PclntabError
from lgf.golang.symbols import Symbolizer

from .ray_symbols import CONNECT_TIMEOUT_S, DRIVER_CACHE, NEED_BYTES, RayUnavailable, reachable_cluster

log = logging.getLogger("lgf.symbolizer")

NAMESPACE = "lgf"
"""The Ray namespace the shared symbol actors are named in."""
ACTOR_PREFIX = "lgf-symbols-"
IDLE_EXIT_S = 3600.0
"""A shared actor no lgf has called for this long kills itself (its build is likely retired)."""
SHARED_CALL_TIMEOUT_S = 20.0
"""Longest wait for one shared actor call; kept well under the 60 s after which Ray ends a driver
whose GCS is gone, so the watchdog can always disconnect first."""
WATCH_INTERVAL_S = 5.0
"""How often the backend knocks on the cluster's GCS port while attached."""
REJOIN_INTERVAL_S = 60.0
"""After losing the cluster, how often to knock again and, when the head answers, re-attach."""
MAX_HANDLES = 4096
"""Actor handles and file build ids remembered on the driver side."""


def file_build_id(path: str | os.PathLike) -> str:
    """The binary's Go build id (else its GNU build id, hex); "" when it has neither or is no ELF."""
    from .gobinary import GNU_NOTE_BUILDID, GNU_NOTE_NAME, GO_NOTE_BUILDID, GO_NOTE_NAME
    from .goelf import ElfError, ElfImage

    try:
        elf = ElfImage(path)
    except (ElfError, ValueError):
        return ""
    try:
        notes = elf.notes()
    except (ElfError, ValueError):
        return ""
    finally:
        elf.close()
    gnu = ""
    for name, ntype, desc in notes:
        if name == GO_NOTE_NAME and ntype == GO_NOTE_BUILDID:
            return "go:" + desc.decode("utf-8", "replace")
        if name == GNU_NOTE_NAME and ntype == GNU_NOTE_BUILDID and not gnu:
            gnu = "gnu:" + desc.hex()
    return gnu


def actor_name(build_id: str) -> str:
    """The shared actor's name for a build: ``lgf-symbols-`` and a digest of the build id (Go
    build ids hold ``/``; a digest keeps the name short and plain)."""
    return ACTOR_PREFIX + hashlib.sha256(build_id.encode()).hexdigest()[:32]


class BuildSymbolActor:
    """The symbols of one build, for a whole cluster: named after the build id (:func:`actor_name`),
    detached, shared by every lgf attached to the cluster. Decodes the binary once: from the
    caller's path when the file there has this build id (same node), else from bytes one caller
    ships (:meth:`load`). Exits by itself after ``idle_exit_s`` without a call (0: never)."""

    def __init__(self, build_id: str, idle_exit_s: float = IDLE_EXIT_S) -> None:
        self.build_id = build_id
        self._sym: Symbolizer | None = None
        self._decoded = 0
        self._shipped = 0
        self._calls = 0
        self._clients: set[str] = set()
        self._last = time.monotonic()
        if idle_exit_s > 0:
            threading.Thread(target=self._exit_when_idle, args=(idle_exit_s,), daemon=True,
                             name="lgf-symbols-idle").start()

    def _exit_when_idle(self, idle_s: float) -> None:
        while True:
            time.sleep(min(idle_s / 2, 30.0))
            if time.monotonic() - self._last > idle_s:
                import ray

                ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
                return

    def symbolize(self, path: str, pcs: list[int], client: str = "") -> list | str:
        """Frames per PC as tuples, ``NEED_BYTES`` (ship the binary), or an error string."""
        self._last = time.monotonic()
        self._calls += 1
        if client:
            self._clients.add(client)
        if self._sym is None:
            if file_build_id(path) != self.build_id:
                return NEED_BYTES
            self._sym = Symbolizer(path)
            self._decoded += 1
        try:
            return [[tuple(f) for f in self._sym.frames(pc)] for pc in pcs]
        except PclntabError as exc:
            return f"PclntabError: {exc}"

    def load(self, data: bytes) -> bool:
        """Take the binary's bytes from a caller whose file is not on this node (once per build)."""
        self._last = time.monotonic()
        if self._sym is None:
            self._sym = Symbolizer.of_image(f"<{self.build_id}>", data)
            self._decoded += 1
            self._shipped += 1
        return True

    def info(self) -> dict:
        """What this actor did: binaries decoded (1 once warm), shipped, calls, the lgf clients."""
        return {"build_id": self.build_id, "decoded": self._decoded, "shipped": self._shipped,
                "calls": self._calls, "clients": sorted(self._clients)}


class _Lost(Exception):
    """The cluster stopped answering: the shared backend falls back to local symbolization."""


class SharedRayBackend:
    """Client side of the shared actors: one named, detached actor per build id, found or made
    with ``get_if_exists``, so every lgf attached to the cluster uses the same one.

    ``fallback``: what answers when the cluster is lost (the enricher's local backend, over the
    host's shared symbol cache); ``on_lost(why)`` is called once per loss (the enricher's log line
    and metric). While attached, a watchdog thread knocks on the GCS port every
    ``WATCH_INTERVAL_S`` and disconnects when it is gone (Ray ends a driver whose GCS has been
    unreachable for 60 s). Lost, the backend knocks every ``REJOIN_INTERVAL_S`` and re-attaches
    when the head answers again (its actors are made again, and the binaries shipped again).

    A cluster that cannot be reached at start raises :class:`RayUnavailable`, unless
    ``retry_unreachable``: then the backend starts lost (:attr:`lost` says why, ``on_lost`` is not
    called: the caller reports it) and attaches when the head first answers."""

    def __init__(self, address: str, fallback, on_lost=None, idle_exit_s: float = IDLE_EXIT_S,
                 on_rejoin=None, retry_unreachable: bool = False) -> None:
        try:
            import ray
        except ImportError as exc:
            raise RayUnavailable(f"ray is not installed ({exc}); pip install 'lgf[ray]'") from None
        self._ray = ray
        self._address = address
        self._fallback = fallback
        self._on_lost = on_lost
        self._on_rejoin = on_rejoin
        self._idle_exit_s = idle_exit_s
        self.client = f"{socket.gethostname()}:{os.getpid()}"
        self._lock = threading.RLock()
        self._handles: OrderedDict[str, object] = OrderedDict()
        self._ids: OrderedDict[tuple, str] = OrderedDict()
        self._cache: OrderedDict[tuple[str, int], list[Frame]] = OrderedDict()
        self._connected = False
        self.lost: str | None = None
        """Why the cluster was lost (None while attached)."""
        self._next_rejoin = 0.0
        self._stop = threading.Event()
        self._owned = False
        """This backend called ``ray.init`` (and so shuts Ray down on :meth:`close`)."""
        try:
            self._connect()
        except RayUnavailable as exc:
            if not retry_unreachable:
                raise
            self.lost = f"unavailable at start: {exc}"  # the caller says so; we knock again later
            self._next_rejoin = time.monotonic() + REJOIN_INTERVAL_S
        self._watchdog = threading.Thread(target=self._watch, daemon=True, name="lgf-ray-watchdog")
        self._watchdog.start()

    @property
    def name(self) -> str:
        return "local" if self.lost else "ray"

    def _connect(self) -> None:
        """Join the cluster; a process has one Ray connection, so one made already (a reload's new
        enricher beside the old one) is used as it is, and left to its maker to close."""
        ray = self._ray
        gcs = reachable_cluster(self._address)
        if ray.is_initialized():
            self._owned = False
        else:
            try:
                ray.init(address=gcs, namespace=NAMESPACE, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            except Exception as exc:  # ConnectionError, RuntimeError, auth errors...
                self._disconnect()
                raise RayUnavailable(f"{type(exc).__name__}: {exc}") from None
            self._owned = True
        self._connected = True
        self._gcs = gcs
        self._actor_cls = ray.remote(num_cpus=0, max_restarts=0)(BuildSymbolActor)

    def _disconnect(self) -> None:
        try:
            self._ray.shutdown()
        except Exception:  # noqa: BLE001 - a dead cluster may complain on the way out
            pass
        self._connected = False
        self._handles.clear()

    # -- watching the cluster ------------------------------------------------------------------

    def _knock(self) -> bool:
        host, _, port = self._gcs.removeprefix("ray://").rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
            return True
        except (OSError, ValueError):
            return False

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL_S):
            with self._lock:
                if self._connected and not self._knock():
                    self._lose(f"the head at {self._gcs} stopped answering")

    def _lose(self, why: str) -> None:
        """Called with the lock held: disconnect, fall back, say so once."""
        if self.lost is None:
            self.lost = why
            if self._on_lost is not None:
                self._on_lost(why)
        self._disconnect()
        self._next_rejoin = time.monotonic() + REJOIN_INTERVAL_S

    def _maybe_rejoin(self) -> None:
        if time.monotonic() < self._next_rejoin:
            return
        self._next_rejoin = time.monotonic() + REJOIN_INTERVAL_S
        try:
            self._connect()
        except RayUnavailable:
            return
        self.lost = None
        self._cache.clear()
        if self._on_rejoin is not None:
            self._on_rejoin(self._gcs)

    # -- symbolizing ---------------------------------------------------------------------------

    def build_id(self, path: str) -> str:
        """The build id shared actors are found by (read from the file once per file identity)."""
        st = os.stat(path)
        ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        bid = self._ids.get(ident)
        if bid is None:
            bid = self._ids[ident] = file_build_id(path)
            if len(self._ids) > MAX_HANDLES:
                self._ids.popitem(last=False)
        return bid

    def actor(self, build_id: str):
        """The build's shared actor: found by name, else made (detached, ``num_cpus=0``)."""
        handle = self._handles.get(build_id)
        if handle is None:
            handle = self._actor_cls.options(
                name=actor_name(build_id), namespace=NAMESPACE, lifetime="detached",
                get_if_exists=True).remote(build_id, self._idle_exit_s)
            self._handles[build_id] = handle
            if len(self._handles) > MAX_HANDLES:
                self._handles.popitem(last=False)
        return handle

    def resolve(self, requests: list[tuple[str, str, list[int]]]) -> list:
        """Like the local backend: frames per PC for each ``(key, path, pcs)``, or an error string."""
        with self._lock:
            if self.lost is not None:
                self._maybe_rejoin()
            if self.lost is not None:
                return self._fallback.resolve(requests)
            try:
                return self._resolve(requests)
            except _Lost as exc:
                self._lose(str(exc))
                return self._fallback.resolve(requests)

    def _resolve(self, requests: list) -> list:
        results: list = [None] * len(requests)
        todo: list[tuple[int, str, str, list[int]]] = []
        local: list[int] = []
        for i, (_key, path, pcs) in enumerate(requests):
            try:
                bid = self.build_id(path)
            except OSError as exc:
                results[i] = f"OSError: {exc}"
                continue
            if not bid:  # nothing to find a shared actor by: this binary stays local
                local.append(i)
                continue
            results[i] = [self._cache.get((bid, pc)) for pc in pcs]
            missing = sorted({pc for pc, f in zip(pcs, results[i], strict=True) if f is None})
            if missing:
                todo.append((i, bid, path, missing))
        refs = [self._submit(bid, path, missing) for _, bid, path, missing in todo]
        for (i, bid, path, missing), ref in zip(todo, refs, strict=True):
            answer = self._answer(ref, bid, path, missing)
            if isinstance(answer, str):
                results[i] = answer
                continue
            for pc, frames in zip(missing, answer, strict=True):
                self._cache[(bid, pc)] = [Frame(*f) for f in frames]
            while len(self._cache) > DRIVER_CACHE:
                self._cache.popitem(last=False)
            pcs = requests[i][2]
            results[i] = [f if f is not None else self._cache.get((bid, pc), []) for pc, f
                          in zip(pcs, results[i], strict=True)]
        if local:
            for i, res in zip(local, self._fallback.resolve([requests[i] for i in local]), strict=True):
                results[i] = res
        return results

    def _submit(self, bid: str, path: str, pcs: list[int]):
        try:
            return self.actor(bid).symbolize.remote(path, pcs, self.client)
        except Exception as exc:  # noqa: BLE001 - Ray's many kinds; the answer step retries
            return exc

    def _answer(self, ref, bid: str, path: str, pcs: list[int]):
        """The actor's answer to ``ref``; ships the binary once if it asks; makes the actor again
        once if it died (idle exit, node gone); raises _Lost when the cluster does not answer."""
        ray = self._ray
        for attempt in (1, 2):
            try:
                if isinstance(ref, Exception):
                    raise ref
                answer = ray.get(ref, timeout=SHARED_CALL_TIMEOUT_S)
                if answer == NEED_BYTES:
                    with open(path, "rb") as fh:
                        data = fh.read()
                    actor = self.actor(bid)
                    ray.get(actor.load.remote(ray.put(data)), timeout=SHARED_CALL_TIMEOUT_S)
                    answer = ray.get(actor.symbolize.remote(path, pcs, self.client), timeout=SHARED_CALL_TIMEOUT_S)
                    if answer == NEED_BYTES:
                        return "binary could not be shipped"
                return answer
            except OSError as exc:
                return f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # noqa: BLE001 - RayTaskError (a bad image), ActorDiedError, timeouts
                cause = getattr(exc, "cause", None)
                if isinstance(cause, PclntabError):
                    return f"PclntabError: {cause}"
                self._handles.pop(bid, None)
                if attempt == 2 or not self._knock():
                    first = str(exc).splitlines()[0] if str(exc) else ""
                    raise _Lost(f"{type(exc).__name__}: {first[:160]}") from None
                ref = self._submit(bid, path, pcs)
        raise AssertionError("unreachable")

    def info(self, build_id: str) -> dict:
        """The build's shared actor's :meth:`BuildSymbolActor.info` (tests, ``bench``)."""
        with self._lock:
            return self._ray.get(self.actor(build_id).info.remote(), timeout=SHARED_CALL_TIMEOUT_S)

    def close(self) -> None:
        """Disconnect from the cluster if this backend connected; the shared actors stay for the
        other lgf instances (they exit after ``idle_exit_s`` unused)."""
        self._stop.set()
        with self._lock:
            if self._connected and self._owned:
                self._disconnect()
            self._connected = False
