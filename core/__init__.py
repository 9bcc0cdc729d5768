"""lgf: watch Go services with eBPF and alert when goroutines stall.

A plugin author needs only this module::

    from lgf import Component, Event, hookimpl

    class PagerSink:
        def __init__(self, options, ctx): ...
        def send(self, event): ...

    @hookimpl
    def lgf_components():
        return [Component("sink", "pager", PagerSink)]

and an entry point in the group ``lgf`` (``[project.entry-points.lgf] pager = "mypkg.sink"``).
The hooks are documented in ``lgf.hookspecs``.
"""

import pluggy

from .components import Component, RunContext
from .event import CAUSES, Event

hookimpl = pluggy.HookimplMarker("lgf")

__all__ = ["CAUSES", "Component", "Event", "RunContext", "hookimpl"]
