"""The ``stdout`` sink: one readable line per stall or alert, or JSON with ``format = "json"``.

Readable form, chosen so `grep` and eyes both work::

    2026-11-26T13:40:01.123Z STALL 120.4ms channel pid=4242 goid=18 comm=api "chan receive" main.worker
    2026-11-26T13:40:01.123Z STALL >=98.1ms lock pid=4242 goid=21 comm=api "sync.Mutex.Lock" main.save

(``>=``: seen by the sampler before the goroutine tier was armed; the duration is a lower bound.)
    2026-11-26T13:40:10.000Z ALERT warning channel x7 worst=310.0ms total=1.2s pid=4242 comm=api main.worker

A stall or alert whose request lgf could trace ends in ``trace=<trace id> span=<span id>``
(``lgf.plugins.trace_context``); without one, nothing is printed for it. Then, when the ``peer``
enricher found them, ``caller="ip:port (service) via ip:port"`` and ``waited_on="http host:port
(service) via ip:port"`` (``lgf.peerview``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

from lgf import Component, hookimpl
from lgf.event import Event, to_json
from lgf.identity import shown
from lgf.peerview import shown as peers_shown


@dataclass
class StdoutOptions:
    format: Literal["text", "json"] = "text"


class StdoutSink:
    durable = False  # a terminal has nothing to retry
    default_receive = "both"

    def __init__(self, options: StdoutOptions, ctx=None, stream=None):
        self.options = options
        self.stream = stream or sys.stdout

    def send(self, event: Event) -> None:
        line = to_json(event) if self.options.format == "json" else format_line(event)
        self.stream.write(line + "\n")
        self.stream.flush()

    def flush(self) -> None:
        self.stream.flush()


def format_line(event: Event) -> str:
    ts = event.ts[:23] + "Z" if event.ts else "-"
    where = " ".join(event.stack_summary[:2])
    if event.scope == "request":  # lgf.idle: the goroutine was serving this request
        where = f"[{event.http_method} {event.http_path}] {where}" if event.http_path else f"[request] {where}"
    if event.kind == "alert" and isinstance(event.extra.get("alertmanager"), dict):  # relayed (lgf.relay)
        am = event.extra["alertmanager"]
        hosts = ",".join(event.extra.get("hosts") or []) or "-"
        return (f"{ts} ALERT {event.severity or 'info'} {event.cause} via alertmanager {am.get('status', '')} "
                f"alerts={am.get('alerts', 0)} hosts={hosts} service={event.extra.get('service', '')} "
                f"worst={_ms(event.extra.get('worst_ns') or event.duration_ns)} {where}").rstrip() + _trace(event)
    if event.kind == "alert":
        x = event.extra
        return (f"{ts} ALERT {event.severity or 'info'} {event.cause} x{x.get('count', 1)} "
                f"worst={_ms(x.get('worst_ns', event.duration_ns))} total={_ms(x.get('total_ns', 0))} "
                f"pid={event.pid}{_identity(event)} comm={event.comm} {where}").rstrip() + _trace(event) + _peers(event)
    what = f'"{event.wait_reason}"' if event.wait_reason else (event.syscall or "")
    # A stall the sampler saw (before the goroutine tier was armed) has a lower-bound duration.
    bound = ">=" if event.extra.get("precision") == "sampled" else ""
    return (f"{ts} STALL {bound}{_ms(event.duration_ns)} {event.cause} pid={event.pid}{_identity(event)} goid={event.goid} "
            f"comm={event.comm} {what} {where}").rstrip() + _trace(event) + _peers(event)


def _identity(event: Event) -> str:
    """`` ns_pid=1 container=4a1f0c9e2b3d pod=...`` for a process in a container (lgf.identity)."""
    return "".join(f" {label}={value.split(' ')[0]}" for label, value in shown({"pid": event.pid, **event.extra}))


def _trace(event: Event) -> str:
    """`` trace=... span=...`` when the stalled request's trace is known, else ""."""
    out = f" trace={event.trace_id}" if event.trace_id else ""
    return out + (f" span={event.span_id}" if event.span_id else "")


def _peers(event: Event) -> str:
    """`` caller=... waited_on=...`` (lgf.plugins.peer, worded by lgf.peerview), else ""."""
    return "".join(f' {label}="{text}"' for label, text in peers_shown(event.extra))


def _ms(ns: int) -> str:
    return f"{ns / 1e9:.2f}s" if ns >= 10**9 else f"{ns / 1e6:.1f}ms"


@hookimpl
def lgf_components():
    return [Component("sink", "stdout", StdoutSink, StdoutOptions,
                      "Print each stall or alert on standard output.")]
