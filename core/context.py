"""What every component instance receives when the host makes it: :class:`RunContext`.

A component's factory is called as ``factory(options, ctx)`` (``lgf.components``). ``ctx`` is the
component's window on the host that made it: the validated config, the host's counters, a
logger named after the component, the running sources, and the host's shared services
(``lgf.services``). A component keeps what it needs from ``ctx`` on itself; nothing a component
holds lives at module level, so two hosts in one process never meet.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Config
    from .services import Services
    from .stats import Stats


def _new_services() -> Services:
    """Imported here, not at the top: ``import lgf`` (every command, ``lgf symbolize`` too) need not
    load the services' modules (ELF, disassembler, discovery), which cost ~80 ms of start-up."""
    from .services import Services

    return Services()


@dataclass
class RunContext:
    """What every component instance may use: the whole config, counters and a logger."""

    config: Config
    stats: Stats
    name: str = ""
    """The instance's name: the table's ``name``, or ``use`` with its index (``sinks[1]``)."""
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("lgf"))
    sources: list = field(default_factory=list)
    """The running sources (for ``histograms()`` / ``runtime_counters(pid)``); empty in replay."""
    services: Services = field(default_factory=_new_services)
    """What the host shares among its plugins (``lgf.services``): symbol cache, idle rules,
    arming, trace capture, robot budgets. One per host; a context made by hand (a test) gets
    services of its own."""
