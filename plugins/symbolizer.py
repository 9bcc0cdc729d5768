"""The ``symbolizer`` enricher: fills ``event.stack`` and ``event.stack_summary`` from ``event.pcs``.

``stack_summary`` is the top three distinct functions of the program's own code (its main module,
by the binary's build info), then its dependencies', the standard library's only when there is
nothing else: ``orders.(*Service).Place``, not ``net.(*conn).Read``.

plugins.toml::

    [[enrichers]]
    use = "symbolizer"
    backend = "local"        # or "ray"
    ray_address = "local"    # "local": a private Ray; "auto" or "host:port": a cluster, shared
    workers = 2              # private Ray actors (ray_address = "local" only)
    actor_idle_exit = "1h"   # a cluster's per-build actor exits after this long unused

With ``backend = "ray"`` and a cluster, every lgf attached to it shares one named, detached actor
per build id (``lgf.golang.ray_shared.SharedRayBackend``): a build is decoded once per cluster,
not once per host. An lgf that loses the cluster symbolizes with the host's shared symbol cache,
says so in one line and counts ``lgf_symbolizer_failures_total{reason="ray_lost"}`` once; it
re-attaches when the head answers again (docs/many-hosts.md). A cluster unreachable at start
is reported the same way (``reason="ray_unavailable"``) and attached to once it answers.

The local backend symbolizes with the host's shared symbol cache (``ctx.services.symbolizers``,
``lgf.services``): the binaries the scope step and the goroutine sampler opened are not opened a
second time. ``max_binaries`` sizes that cache up, never down (it keeps at least
``lgf.services.SYMBOLIZER_MAX_OPEN`` = 64 open, the other users' need); with ``backend = "ray"``
it is each Ray actor's own limit. The enricher never closes the shared cache: the host does, when
it stops.

The binary is the file the event's process runs (``lgf.golang.procfs.process_binary``): its
``exe`` when that is still the same file, else through ``/proc/<pid>/root`` (another mount
namespace), else ``/proc/<pid>/exe`` (a deleted or replaced binary); a replayed event's pid is
never looked up, only its ``exe`` (``Services.binary_of``). For a PIE binary, ``extra["load_bias"]`` is subtracted from each PC
first. PCs are return addresses (BPF reads them off the stack), so ``pc-1`` is looked up as Go's
traceback does. What fails is counted (``lgf_symbolizer_failures_total{reason}``) and skipped:
an unreadable binary leaves the stack empty and is logged once; a PC in no function is dropped.

Cost (bench/bench_symbolizer.py, Go's `compile` binary): opening a binary ~2 ms; a cold PC
~15-25 µs (its function's tables walked up to it); a warm PC ~1 µs (a dict hit), 5-7x the
throughput of `go tool addr2line` on the same PCs.
With ``backend = "ray"`` the per-event cost is one round trip for the PCs the local frame cache
has not seen; see ``lgf.golang.ray_symbols``.
"""

from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from lgf import Component, hookimpl
from lgf.golang.pclntab import Frame, PclntabError
from lgf.golang.symbols import Symbolizers, frame_dict, modules_of_file, stack_summary
from lgf.hookcall import for_each
from lgf.options import Duration

log = logging.getLogger("lgf.symbolizer")

_ADDRESS = re.compile(r"^(local|auto|(ray://)?[A-Za-z0-9_.\-\[\]:]+:[0-9]+)$")


@dataclass
class SymbolizerOptions:
    backend: Literal["local", "ray"] = "local"
    """``local``: in-process; ``ray``: Ray actors. With ``ray_address = "local"``, ``workers``
    private actors sharded by build id; with a cluster (``"auto"`` or ``"host:port"``), one named,
    detached actor per build id, shared by every lgf attached to the cluster (a build is decoded
    once per cluster); a lost cluster falls back to the host's local symbol cache, logged once."""
    ray_address: str = "local"
    """"local" starts a private Ray for this lgf; "auto" or "host:port" joins a cluster, whose
    symbol actors every lgf attached to it shares."""
    workers: int = 2
    """With ``ray_address = "local"``: Ray actors, binaries spread over them by build id (a
    cluster has one actor per build id instead)."""
    actor_idle_exit: Duration = Duration(3_600_000_000_000)
    """With a cluster: a shared build's actor that no lgf has called for this long exits (it
    holds that build's binary); the next lgf to need the build makes it again."""
    summary_frames: int = 3
    """How many user functions go into ``stack_summary``."""
    max_binaries: int = 64
    """Binaries kept mapped at once: the host's shared symbol cache grows to this if it is smaller
    (it is never made smaller); with ``backend = "ray"`` and ``ray_address = "local"``, each Ray
    actor's limit (a cluster's actors hold one build each)."""

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers: must be at least 1")
        if self.actor_idle_exit < 0:
            raise ValueError("actor_idle_exit: must not be negative")
        if self.summary_frames < 0 or self.max_binaries < 1:
            raise ValueError("summary_frames must be >= 0 and max_binaries >= 1")
        if not _ADDRESS.match(self.ray_address):
            raise ValueError(f"ray_address: {self.ray_address!r} is not \"local\", \"auto\" or host:port")


Request = tuple[str, str, list[int]]
"""(binary key, path, PCs relative to the file's link addresses)."""
Result = list[list[Frame]] | str
"""Frames per PC (innermost first; [] for a PC in no function), or why the binary failed."""


class LocalBackend:
    """Symbolizes in this process; one mapped table per binary (``Symbolizers``).

    ``symbolizers``: a cache to use (the host's shared one, grown to ``max_binaries``), which
    :meth:`close` leaves open for its owner; without one the backend makes and closes its own."""

    name = "local"

    def __init__(self, max_binaries: int = 64, symbolizers: Symbolizers | None = None) -> None:
        self._owned = symbolizers is None
        self.symbolizers = Symbolizers(max_binaries) if symbolizers is None else symbolizers
        self.symbolizers.grow(max_binaries)

    def resolve(self, requests: list[Request]) -> list[Result]:
        out: list[Result] = []
        for _key, path, pcs in requests:
            try:
                sym = self.symbolizers.get(path)
                out.append([sym.frames(pc) for pc in pcs])
            except (OSError, PclntabError) as exc:
                out.append(f"{type(exc).__name__}: {exc}")
        return out

    def close(self) -> None:
        if self._owned:
            self.symbolizers.close()


def binary_key(event, path: str) -> str:
    """Identity of the binary: the build id when the source found one, else the file's identity."""
    if event.build_id:
        return event.build_id
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


class SymbolizerEnricher:
    """The ``symbolizer`` component instance; registered for the run, answers ``lgf_enrich``."""

    def __init__(self, options: SymbolizerOptions, ctx) -> None:
        self.options = options
        self.stats = ctx.stats
        self._failed_binaries: OrderedDict[str, str] = OrderedDict()
        self._modules: OrderedDict[str, object] = OrderedDict()
        """binary key -> its build info's Modules (None: none), for the program's own frames."""
        self.log = ctx.log
        self.services = ctx.services
        self.backend = self.local = LocalBackend(options.max_binaries, ctx.services.symbolizers)
        if options.backend == "ray":
            from lgf.golang.ray_shared import SharedRayBackend
            from lgf.golang.ray_symbols import RayBackend, RayUnavailable

            try:
                if options.ray_address == "local":
                    self.backend = RayBackend("local", options.workers, options.max_binaries)
                else:  # a host may boot before the head: unreachable now, attach when it answers
                    shared = SharedRayBackend(options.ray_address, self.local, self._ray_lost,
                                              options.actor_idle_exit / 1e9, self._ray_back,
                                              retry_unreachable=True)
                    self.backend = shared
                    if shared.lost is not None:
                        self._unavailable(shared.lost.removeprefix("unavailable at start: ")
                                          + "; trying again every minute")
            except RayUnavailable as exc:
                self._unavailable(exc)

    def _unavailable(self, why) -> None:
        self.log.warning("symbolizer: Ray backend unavailable (ray_address=%r): %s; "
                         "symbolizing locally instead", self.options.ray_address, why)
        self.stats.inc("lgf_symbolizer_failures_total", reason="ray_unavailable")

    def _ray_lost(self, why: str) -> None:
        """The shared backend lost its cluster: one line and one count per loss, not per event."""
        self.log.warning("symbolizer: lost the Ray cluster at %s (%s); symbolizing locally with the "
                         "host's symbol cache until it answers again", self.options.ray_address, why)
        self.stats.inc("lgf_symbolizer_failures_total", reason="ray_lost")

    def _ray_back(self, address: str) -> None:
        self.log.warning("symbolizer: the Ray cluster at %s answers now; symbolizing on its shared "
                         "actors", address)

    def _fail(self, reason: str, n: int = 1) -> None:
        self.stats.inc("lgf_symbolizer_failures_total", n, reason=reason)

    @hookimpl
    def lgf_enrich(self, event) -> None:
        if not event.pcs or event.stack:
            return
        # The file its process runs, even deleted, replaced or in another mount namespace; once
        # it is gone, or for a recorded event, event.exe if this host has it (lgf.services).
        path = self.services.binary_of(event.pid, event.exe)
        if path is None:
            self._fail("no_binary")
            return
        try:
            key = binary_key(event, path)
        except OSError:
            self._fail("no_binary")
            return
        if key in self._failed_binaries:
            self._fail("bad_binary")
            return
        bias = int(event.extra.get("load_bias", 0) or 0)
        pcs = [int(pc) for pc in event.pcs]
        result = self.backend.resolve([(key, path, [pc - bias for pc in pcs])])[0]
        if isinstance(result, str):
            self._remember_failure(key, path, result)
            self._fail("bad_binary")
            return
        stack: list[dict] = []
        for pc, frames in zip(pcs, result, strict=True):
            if not frames:
                self._fail("pc_not_found")
                continue
            for f in frames:
                d = frame_dict(f)
                d["pc"] = pc  # the address as the process saw it, not the file-relative one
                stack.append(d)
        event.stack = stack
        event.stack_summary = stack_summary(stack, self.options.summary_frames, self._modules_of(key, path))
        self.stats.inc("lgf_symbolizer_events_total", backend=self.backend.name)

    @hookimpl
    def lgf_enrich_batch(self, events) -> None:
        """``lgf_enrich`` of each event: one call per batch, so that the pipeline keeps its batch
        path with this enricher configured (lgf.hookspecs)."""
        for_each(events, self.lgf_enrich)

    def _modules_of(self, key: str, path: str):
        """The binary's main module and dependencies (build info), read once per binary."""
        if key not in self._modules:
            self._modules[key] = modules_of_file(path)
            if len(self._modules) > 1024:
                self._modules.popitem(last=False)
        return self._modules[key]

    def _remember_failure(self, key: str, path: str, why: str) -> None:
        """Log a bad binary once (not once per event) and skip it from then on."""
        if key not in self._failed_binaries:
            log.warning("symbolizer: cannot read %s (%s): %s; its events go unsymbolized", path, key, why)
        self._failed_binaries[key] = why
        if len(self._failed_binaries) > 1024:
            self._failed_binaries.popitem(last=False)

    @hookimpl
    def lgf_unconfigure(self) -> None:
        """Shutdown: unmap the binaries; with Ray, kill the actors (and stop a Ray lgf started)."""
        self.close()

    def close(self) -> None:
        self.backend.close()


@hookimpl
def lgf_components():
    return [Component("enricher", "symbolizer", SymbolizerEnricher, SymbolizerOptions,
                      doc="Go stacks from the binary's own pclntab (local, or on Ray actors)")]
