"""How the HTTP server answers for the latency page: which requests get HTML, and the response.

``/ui`` always; ``/debug/latency`` when the client prefers HTML (a browser's ``Accept`` lists
``text/html``; curl's ``*/*`` and API clients keep getting JSON, as before) unless the query says
``format=json``. ``?refresh=N`` sets the page's self-refresh in seconds (0: off; default 5).
"""

from __future__ import annotations

from urllib.parse import parse_qs

from ..components import member
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


def target_costs(sources) -> list[dict]:
    """What lgf's goroutine tier costs each traced process, as the sources measured it (the
    ``tier_*`` keys of ``runtime_counters(pid)``, lgf.sources.uprobe.budget), with its comm."""
    out = []
    for src in sources:
        counters_of = member(src, "source", "runtime_counters")
        histograms = member(src, "source", "histograms")
        if counters_of is None or histograms is None:
            continue
        try:
            comms = {h["labels"]["pid"]: h["labels"].get("comm", "") for h in histograms()
                     if h.get("labels", {}).get("pid")}
        except Exception:  # noqa: BLE001 - a source failing its read leaves the page drawn
            continue
        for pid, comm in sorted(comms.items(), key=lambda kv: int(kv[0])):
            try:
                counters = counters_of(int(pid)) or {}
            except Exception:  # noqa: BLE001 - the process exited between the two reads
                continue
            if "tier_cost_share" in counters:
                out.append({"pid": int(pid), "comm": comm, **counters})
    return out


def respond(engine, history, query: str, sources=()) -> tuple[int, bytes, str]:
    """(status, body, content type) of the page for this engine, stall history and sources."""
    if engine is None:
        return 503, b"<!doctype html><p>no alert engine in this run</p>", "text/html; charset=utf-8"
    q = parse_qs(query)
    try:
        refresh = max(0, int(q.get("refresh", ["5"])[0]))
    except ValueError:
        refresh = 5
    records = history.records() if history is not None else []
    body = render_page(engine.recent(0), records, refresh=refresh, costs=target_costs(sources))
    return 200, body.encode(), "text/html; charset=utf-8"
