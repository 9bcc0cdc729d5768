"""How the HTTP server answers for the latency page: which requests get HTML, and the response.

``/ui`` always; ``/debug/latency`` when the client prefers HTML (a browser's ``Accept`` lists
``text/html``; curl's ``*/*`` and API clients keep getting JSON, as before) unless the query says
``format=json``. ``?refresh=N`` sets the page's self-refresh in seconds (0: off; default 5).
"""

from __future__ import annotations

from urllib.parse import parse_qs

from .page import render_page


def wants_html(path: str, accept: str, query: str) -> bool:
    if path == "/ui":
        return True
    if path != "/debug/latency":
        return False
    q = parse_qs(query)
    if q.get("format"):
        return q["format"][0] == "html"
    return "text/html" in (accept or "")


def respond(engine, history, query: str) -> tuple[int, bytes, str]:
    """(status, body, content type) of the page for this engine and stall history."""
    if engine is None:
        return 503, b"<!doctype html><p>no alert engine in this run</p>", "text/html; charset=utf-8"
    q = parse_qs(query)
    try:
        refresh = max(0, int(q.get("refresh", ["5"])[0]))
    except ValueError:
        refresh = 5
    records = history.records() if history is not None else []
    body = render_page(engine.recent(0), records, refresh=refresh)
    return 200, body.encode(), "text/html; charset=utf-8"
