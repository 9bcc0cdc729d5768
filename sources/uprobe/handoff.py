"""What the uprobe source's two goroutine tiers may ask of each other: two small interfaces.

The goroutine tier (per-switch probes, :mod:`lgf.sources.uprobe.tiers`) is attached to a process
only while it is armed; the sampler (:mod:`lgf.sources.uprobe.sampler`) reads unarmed processes'
goroutines from outside. A park in progress when the tier comes on must be reported once, by the
tier that saw it begin:

- the sampler asks the tier (:class:`GoroutineTierView`) when it became complete in a process (the
  hand-off time) and which waits it holds an open note of (its BPF wait slots);
- the tier asks the sampler (:class:`SampledTier`) which parks the sampler holds (their stale
  notes are cleared before the tier attaches) and claims each park it reports, so that a park
  reaching both tiers about the hand-off is sent once, whichever tier sends it.

Neither side waits for the other: the tier's answers are a dict lookup or one BPF map read, taken
without the lock an attach holds (an attach takes 13 ms to 1.8 s under load, and the sampler goes on
sampling meanwhile); the sampler's are its own small locks. Arming is not part of either: every
cheap tier asks through ``ctx.services.arming.notify_stall(pid)``.
"""

from __future__ import annotations

from typing import Protocol


class GoroutineTierView(Protocol):
    """The goroutine tier as the sampler sees it; called on the sampler's thread, never blocking."""

    def since(self, pid: int) -> int | None:
        """CLOCK_MONOTONIC ns at which the tier was completely attached to ``pid`` (None while
        off or attaching)."""

    def park_start(self, pid: int, g: int) -> int | None:
        """Start of the park the tier holds an open note of for goroutine ``g`` (None: no note)."""

    def holds_runnable(self, pid: int, g: int, after_ns: int) -> bool:
        """Whether the tier holds ``g``'s wait for a P, begun after ``after_ns`` (it saw g become
        runnable and reports that wait itself)."""


class SampledTier(Protocol):
    """The sampler as the goroutine tier sees it."""

    def add(self, target) -> None:
        """Sample ``target`` from now on."""

    def remove(self, pid: int) -> None:
        """Stop sampling ``pid`` (it exited)."""

    def parked_gs(self, pid: int) -> list[int]:
        """Addresses of the goroutines whose park the sampler holds in ``pid`` (lock-free: called
        while the tier attaches)."""

    def take_over(self, pid: int, parks: dict[int, tuple[int, int]]) -> None:
        """The tier is about to be detached from ``pid``: the parks it holds open notes of
        (``g -> (start_ns, wait reason)``), which the sampler follows from their start (a stall
        in progress when a slice ends is not cut to what is left of it). Called on the tier's
        thread while its probes are still on, so that a note can be checked still open."""

    def claim(self, pid: int, goid: int, start_ns: int, end_ns: int) -> bool:
        """Whether a park of ``goid`` over [``start_ns``, ``end_ns``] is still to be reported (and,
        from now on, reported): False when either tier already reported it."""


class NoGoroutineTier:
    """A goroutine tier that is never on (a sampler on its own: benches, tools): every park and
    every wait for a P is the sampler's."""

    def since(self, pid: int) -> int | None:
        return None

    def park_start(self, pid: int, g: int) -> int | None:
        return None

    def holds_runnable(self, pid: int, g: int, after_ns: int) -> bool:
        return False
