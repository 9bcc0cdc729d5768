"""How sinks and the latency page show whom a stall served and what it waited on
(``caller`` and ``waited_on``, ``lgf.plugins.peer``): one wording everywhere.

``shown(extra)`` -> ``[("caller", "127.0.0.1:40112 (loadgen)"), ("waited_on", "http
127.0.0.1:8080 (inventory) via 127.0.0.1:50412")]`` (``http/h2`` for HTTP/2): the address, the service (or comm) of the
process at the other end when it runs on this host, and for a connection of this process, its
local end. Empty when the event carries neither.
"""

from __future__ import annotations


def _end(end: dict, kind: bool) -> str:
    text = str(end.get("addr") or end.get("peer") or "")
    if kind and end.get("kind") and end.get("kind") != "tcp":
        what = f"{end['kind']}/{end['protocol']}" if end.get("protocol") else end["kind"]
        text = f"{what} {text}".strip() if text else f"{what} fd {end.get('fd', '?')}"
    who = end.get("service") or end.get("comm")
    if who and not end.get("self"):
        text += f" ({who})"
    if end.get("local"):
        text += f" via {end['local']}"
    return text


def shown(extra: dict) -> list[tuple[str, str]]:
    """``(label, text)`` for ``caller`` and ``waited_on`` of an event's or alert's extra fields."""
    out = []
    for key in ("caller", "waited_on"):
        end = extra.get(key)
        if isinstance(end, dict):
            out.append((key, _end(end, key == "waited_on")))
    return out
