"""The symbolizer's private Ray backend: sharded actors started by this lgf (:class:`RayBackend`).

**RayBackend** (``ray_address = "local"``): long-lived actors, each owning the binaries of its shard.

Why: one host can run hundreds of distinct Go binaries (every build id is a different table);
spreading them over ``workers`` actors keeps each binary mapped and its caches warm in exactly one
place, and lets several CPUs (or cluster nodes) decode cold tables in parallel.

* **Sharding**: a binary goes to actor ``crc32(build key) % workers``, so its table is mapped
  by one actor only and its per-PC cache stays warm there.
* **Batching**: :meth:`RayBackend.resolve` takes many (binary, PCs) requests and makes one call
  per actor carrying all of that actor's PCs (hundreds per call in a busy run); calls to
  different actors run in parallel. A driver-side frame cache answers PCs seen before without a
  round trip, so a warm enricher costs about what the local backend does.
* **Binaries on other nodes**: an actor opens the path it is given if the file there has the
  same size and mtime; otherwise (a remote cluster) it asks, and the driver ships the file's
  bytes once through the object store.
* **Failure**: if Ray cannot start or join, :class:`RayUnavailable` is raised and the enricher
  logs one line and uses the local backend. A call that times out is answered locally.

Cost, measured by ``bench/bench_ray_symbolizer.py`` on this 2-core host (120 binaries, 36,000
PCs, other work running): Ray start-up ~4.5 s (once); cold actors 0.74x the local backend's
PCs/s (serialization and 2 busy cores eat the parallelism), warm actors 1.8x local-cold, and
the driver cache ~100x. Ray pays off with more cores or nodes than this host has.

The shared cluster backend is :mod:`lgf.golang.ray_shared`.
"""

from __future__ import annotations

import logging
import os
import socket
import zlib
from collections import OrderedDict

from lgf.golang.pclntab import Frame, PclntabError
from lgf.golang.symbols import Symbolizer

log = logging.getLogger("lgf.symbolizer")

NEED_BYTES = "need-bytes"
CALL_TIMEOUT_S = 60.0
"""Longest wait for one batch (the first call includes actor start-up)."""
DRIVER_CACHE = 65_536
"""(binary, PC) answers kept on the driver side (~200 bytes each)."""


class RayUnavailable(RuntimeError):
    """Ray is not installed, cannot start, or cannot reach the cluster; the message says which."""


CONNECT_TIMEOUT_S = 3.0
"""How long to wait for a TCP answer from a cluster's GCS before calling Ray unavailable."""


def reachable_cluster(address: str) -> str:
    """The cluster address to join, checked to answer TCP first.

    ``ray.init(address=...)`` retries an unreachable GCS for minutes; lgf must start promptly
    and fall back, so it knocks first. ``"auto"`` is resolved the way Ray does: ``RAY_ADDRESS``,
    then the address the last ``ray start`` wrote to /tmp/ray/ray_current_cluster.
    """
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "")
        if not address:
            try:
                with open("/tmp/ray/ray_current_cluster") as fh:
                    address = fh.read().strip()
            except OSError:
                address = ""
        if not address or address == "auto":
            raise RayUnavailable("no running Ray cluster found (start one with `ray start --head`, "
                                 "or set RAY_ADDRESS)")
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as exc:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address}: {exc}") from None
    return address


class SymbolizerActor:
    """One shard: maps its binaries (by path, or from shipped bytes) and answers batches."""

    def __init__(self, max_binaries: int = 64) -> None:
        self._max = max_binaries
        self._syms: OrderedDict[str, Symbolizer] = OrderedDict()

    def _get(self, key: str, path: str, ident: tuple[int, int]) -> Symbolizer | None:
        sym = self._syms.get(key)
        if sym is not None:
            self._syms.move_to_end(key)
            return sym
        try:
            st = os.stat(path)
        except OSError:
            return None
        if (st.st_size, st.st_mtime_ns) != tuple(ident):
            return None
        return self._add(key, Symbolizer(path))

    def _add(self, key: str, sym: Symbolizer) -> Symbolizer:
        self._syms[key] = sym
        if len(self._syms) > self._max:
            _, old = self._syms.popitem(last=False)
            old.close()
        return sym

    def load(self, key: str, data: bytes) -> bool:
        """Take a binary shipped from the driver (the path is not readable on this node)."""
        self._add(key, Symbolizer.of_image(f"<{key}>", data))
        return True

    def symbolize(self, batch: list[tuple]) -> list:
        """``[(key, path, (size, mtime_ns), [pc, ...])]`` -> per item: frames per PC as tuples,
        ``NEED_BYTES``, or an error string."""
        out = []
        for key, path, ident, pcs in batch:
            sym = self._get(key, path, ident)
            if sym is None:
                out.append(NEED_BYTES)
                continue
            try:
                out.append([[tuple(f) for f in sym.frames(pc)] for pc in pcs])
            except PclntabError as exc:
                out.append(f"PclntabError: {exc}")
        return out

    def binaries(self) -> int:
        return len(self._syms)


class RayBackend:
    """Client side: shards requests over the actors, batches them, caches answers."""

    name = "ray"

    def __init__(self, address: str = "local", workers: int = 2, max_binaries: int = 64) -> None:
        try:
            import ray
        except ImportError as exc:
            raise RayUnavailable(f"ray is not installed ({exc}); pip install 'lgf[ray]'") from None
        self._ray = ray
        self._started_ray = False
        try:
            if not ray.is_initialized():
                kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
                if address == "local":
                    ray.init(num_cpus=workers, **kwargs)
                else:
                    ray.init(address=reachable_cluster(address), **kwargs)
                self._started_ray = True
            actor_cls = ray.remote(num_cpus=1)(SymbolizerActor)
            self.actors = [actor_cls.remote(max_binaries) for _ in range(workers)]
            ray.get([a.binaries.remote() for a in self.actors], timeout=CALL_TIMEOUT_S)
        except RayUnavailable:
            raise
        except Exception as exc:  # Ray raises many kinds (ConnectionError, RuntimeError, timeouts)
            self._shutdown()
            raise RayUnavailable(f"{type(exc).__name__}: {exc}") from None
        self._cache: OrderedDict[tuple[str, int], list[Frame]] = OrderedDict()
        self._idents: dict[str, tuple[int, int]] = {}
        self._fallback = None

    def shard_of(self, key: str) -> int:
        return zlib.crc32(key.encode()) % len(self.actors)

    def _ident(self, key: str, path: str) -> tuple[int, int]:
        ident = self._idents.get(key)
        if ident is None:
            st = os.stat(path)
            ident = self._idents[key] = (st.st_size, st.st_mtime_ns)
        return ident

    def resolve(self, requests: list[tuple[str, str, list[int]]]) -> list:
        """Frames per PC for each ``(key, path, pcs)``, or an error string per failed binary."""
        results: list = [None] * len(requests)
        per_actor: dict[int, list] = {}
        for i, (key, path, pcs) in enumerate(requests):
            frames = [self._cache.get((key, pc)) for pc in pcs]
            results[i] = frames
            todo = sorted({pc for pc, f in zip(pcs, frames, strict=True) if f is None})
            if not todo:
                continue
            try:
                ident = self._ident(key, path)
            except OSError as exc:
                results[i] = f"OSError: {exc}"
                continue
            per_actor.setdefault(self.shard_of(key), []).append((i, (key, path, ident, todo)))
        self._call(per_actor, results)
        for i, (key, _path, pcs) in enumerate(requests):
            if isinstance(results[i], list) and any(f is None for f in results[i]):
                results[i] = [f if f is not None else self._cache.get((key, pc), []) for pc, f
                              in zip(pcs, results[i], strict=True)]
        return results

    def _call(self, per_actor: dict[int, list], results: list) -> None:
        ray = self._ray
        refs = {shard: self.actors[shard].symbolize.remote([item for _, item in items])
                for shard, items in per_actor.items()}
        for shard, items in per_actor.items():
            try:
                answers = ray.get(refs[shard], timeout=CALL_TIMEOUT_S)
            except Exception as exc:  # a dead or stuck actor: answer this batch locally
                log.warning("symbolizer: Ray actor %d failed (%s: %s); answering locally",
                            shard, type(exc).__name__, exc)
                answers = self._local().symbolize([item for _, item in items])
            retry = []
            for (i, item), ans in zip(items, answers, strict=True):
                if ans == NEED_BYTES:
                    retry.append((i, item))
                else:
                    self._store(i, item, ans, results)
            if retry:
                self._ship_and_retry(shard, retry, results)

    def _ship_and_retry(self, shard: int, items: list, results) -> None:
        ray = self._ray
        actor = self.actors[shard]
        for i, (key, path, _ident, _pcs) in items:
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
                ray.get(actor.load.remote(key, ray.put(data)), timeout=CALL_TIMEOUT_S)
            except (OSError, PclntabError) as exc:
                results[i] = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # ray.exceptions.RayTaskError wraps the actor's PclntabError
                results[i] = f"{type(exc).__name__}: {exc}"
        pending = [(i, item) for i, item in items if not isinstance(results[i], str)]
        if pending:
            answers = ray.get(actor.symbolize.remote([item for _, item in pending]), timeout=CALL_TIMEOUT_S)
            for (i, item), ans in zip(pending, answers, strict=True):
                self._store(i, item, ans if ans != NEED_BYTES else "binary could not be shipped", results)

    def _store(self, i: int, item: tuple, answer, results) -> None:
        if isinstance(answer, str):
            results[i] = answer
            return
        key = item[0]
        for pc, frames in zip(item[3], answer, strict=True):
            self._cache[(key, pc)] = [Frame(*f) for f in frames]
        while len(self._cache) > DRIVER_CACHE:
            self._cache.popitem(last=False)

    def _local(self) -> SymbolizerActor:
        if self._fallback is None:
            self._fallback = SymbolizerActor()
        return self._fallback

    def _shutdown(self) -> None:
        if self._started_ray:
            try:
                self._ray.shutdown()
            finally:
                self._started_ray = False

    def close(self) -> None:
        """Kill the actors, and stop Ray if this backend started it."""
        for actor in getattr(self, "actors", []):
            try:
                self._ray.kill(actor)
            except Exception:  # already gone with its node
                pass
        self.actors = []
        self._shutdown()
