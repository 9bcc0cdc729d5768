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

from .services import Services

if TYPE_CHECKING:
    from .config import Config
    from .stats import Stats


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
    services: Services = field(default_factory=Services)
    """What the host shares among its plugins (``lgf.services``): symbol cache, idle rules,
    arming, trace capture, robot budgets. One per host; a context made by hand (a test) gets
    services of its own."""
