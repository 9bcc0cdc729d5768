"""lgf: watch Go services with eBPF and alert when goroutines stall.

A plugin author needs only this module::

    from dataclasses import dataclass
    from lgf import Component, Duration, hookimpl

    @dataclass
    class PagerOptions:
        url: str
        timeout: Duration = Duration(5_000_000_000)   # written "5s" in plugins.toml

    class PagerSink:                                   # an lgf.Sink
        def __init__(self, options, ctx): ...
        def send(self, event): ...

    @hookimpl
    def lgf_components():
        return [Component("sink", "pager", PagerSink, PagerOptions)]

and an entry point in the group ``lgf`` (``[project.entry-points.lgf] pager = "mypkg.sink"``).
The hooks are documented in ``lgf.hookspecs``; what the host calls on a source, sink, enricher or
classifier (required and optional members) in ``lgf.components``; ``lgf.testing`` runs a plugin
through the real pipeline in a test. A sink raises :class:`DeliveryError` (``retryable`` or not)
when ``send`` fails, and a batching sink settles each event on the :class:`Receipt` its
``send_pending(events, receipt)`` gets (``lgf.delivery``).
"""

import typing

import pluggy

from .components import Classifier, Component, Enricher, Sink, Source
from .context import RunContext
from .errors import DeliveryError
from .options import Duration, Size

if typing.TYPE_CHECKING:
    from .delivery import Receipt
    from .event import CAUSES, Event

hookimpl = pluggy.HookimplMarker("lgf")


def __getattr__(name: str):
    """``Event``, ``CAUSES`` and ``Receipt`` are imported on first use (``from lgf import Event``
    works as before): their modules pull in the ELF reader, the disassembler and msgpack, ~100 ms
    that every ``lgf`` command paid at start-up, ``lgf symbolize`` included, whether it used them
    or not. Once imported, the name is an ordinary attribute of the module."""
    if name in ("Event", "CAUSES"):
        from . import event as module
    elif name == "Receipt":
        from . import delivery as module
    else:
        raise AttributeError(f"module 'lgf' has no attribute {name!r}")
    value = globals()[name] = getattr(module, name)
    return value


__all__ = [
    "CAUSES",
    "Classifier",
    "Component",
    "DeliveryError",
    "Duration",
    "Enricher",
    "Event",
    "Receipt",
    "RunContext",
    "Sink",
    "Size",
    "Source",
    "hookimpl",
]
