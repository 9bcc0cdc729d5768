"""Render the latency page: per service a heat map, the topology path, recent stalls and windows.

Everything is drawn here, on the server, as HTML with inline SVG: no script runs in the browser
and nothing is fetched from elsewhere. Sections, per service (the newest stall first):

- **heat map**: stall durations over time. Columns are equal slices of the time the history
  covers (at most the last ``SPAN_MAX_S``); rows are log2 duration buckets from 1 ms to 16 s; a
  cell's colour is the cause with the most stalls in it, its strength the count (log scale); its
  tooltip lists the count per cause;
- **topology path**: ``[alerts.topology]`` of the newest stall (a list value is an ordered path,
  e.g. ``path = ["api-gw", "checkout", "inventory"]``; plain values such as ``region`` and ``host``
  come first), with the stalled hop (the service) coloured by severity;
- **recent stalls**: time, cause, duration, pid/goroutine, wait reason, trace id, stack.

Then the stall windows (each with its worst stall's stack and trace id when the history still
has it), the alerts (silenced ones marked), the silences in force, and what lgf costs each traced
process (its goroutine tier's estimated share of the process's CPU against the overhead budget,
measured by lgf: lgf.sources.uprobe.budget).

Cost: one pass over the history per page view (4096 records at most); nothing per event.
"""

from __future__ import annotations

import html
import math
import time
import zlib
from collections import Counter, defaultdict

CAUSE_COLOURS = {
    "channel": "#1f77b4", "select": "#17becf", "lock": "#d62728", "sync": "#9467bd",
    "syscall": "#8c564b", "net_io": "#2ca02c", "sleep": "#7f7f7f", "gc_stw": "#ff7f0e",
    "gc_assist": "#e377c2", "sched_latency": "#bcbd22", "unknown": "#444444",
}
SEVERITY_COLOURS = {"critical": "#d62728", "warning": "#ff7f0e", "info": "#e6c300", "": "#e6c300"}
ROWS = 15
"""Duration rows: [1ms, 2ms), [2ms, 4ms) ... [8s, 16s), and longer stalls in the last one."""
COLUMNS = 60
SPAN_MIN_S = 20
SPAN_MAX_S = 30 * 60
STALLS_LISTED = 15
CELL_W, CELL_H, LEFT, TOP = 12, 14, 52, 8


def colour_of(cause: str) -> str:
    """The cause's colour; a third party's own cause gets a stable colour of its name."""
    known = CAUSE_COLOURS.get(cause)
    if known:
        return known
    return f"hsl({zlib.crc32(cause.encode()) % 360}, 55%, 45%)"


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _ms(ns: int) -> str:
    ms = ns / 1e6
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.1f} ms"


def _row_of(duration_ns: int) -> int:
    ms = max(duration_ns / 1e6, 1.0)
    return min(int(math.log2(ms)), ROWS - 1)


def _row_label(row: int) -> str:
    ms = 2 ** row
    return f"{ms // 1000}s" if ms >= 1000 else f"{ms}ms"


def _clock(unix: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(unix))


# --- the heat map ---------------------------------------------------------------------------

def heatmap_svg(records: list[dict], now: float) -> str:
    """One service's stalls as an SVG heat map (duration bucket x time slice, coloured by cause)."""
    oldest = min((r["at"] for r in records), default=now)
    span = min(max(now - oldest, SPAN_MIN_S), SPAN_MAX_S)
    start = now - span
    cells: dict[tuple[int, int], Counter] = defaultdict(Counter)
    for r in records:
        if r["at"] < start:
            continue
        col = min(int((r["at"] - start) / span * COLUMNS), COLUMNS - 1)
        cells[(col, _row_of(r["duration_ns"]))][r["cause"]] += 1
    peak = max((sum(c.values()) for c in cells.values()), default=1)
    width, height = LEFT + COLUMNS * CELL_W + 8, TOP + ROWS * CELL_H + 24
    out = [f'<svg class="heatmap" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'role="img" aria-label="heat map of stall durations over time by cause">',
           f'<rect x="{LEFT}" y="{TOP}" width="{COLUMNS * CELL_W}" height="{ROWS * CELL_H}" fill="#f6f6f6"/>']
    for row in range(ROWS):
        y = TOP + (ROWS - 1 - row) * CELL_H
        if row % 2 == 0:
            out.append(f'<text x="{LEFT - 4}" y="{y + CELL_H - 3}" text-anchor="end" '
                       f'font-size="10">{_row_label(row)}</text>')
    for (col, row), causes in sorted(cells.items()):
        n = sum(causes.values())
        cause, _ = causes.most_common(1)[0]
        strength = 0.35 + 0.65 * math.log1p(n) / math.log1p(peak)
        x, y = LEFT + col * CELL_W, TOP + (ROWS - 1 - row) * CELL_H
        tip = ", ".join(f"{c} {k}" for c, k in causes.most_common())
        out.append(f'<rect class="cell" data-cause="{_e(cause)}" data-causes="{_e(" ".join(sorted(causes)))}" '
                   f'data-count="{n}" x="{x}" y="{y}" '
                   f'width="{CELL_W - 1}" height="{CELL_H - 1}" fill="{colour_of(cause)}" '
                   f'fill-opacity="{strength:.2f}"><title>{_row_label(row)}+ at '
                   f'{_clock(start + (col + 0.5) * span / COLUMNS)}: {_e(tip)}</title></rect>')
    base = TOP + ROWS * CELL_H + 14
    for frac, anchor in ((0, "start"), (0.5, "middle"), (1, "end")):
        out.append(f'<text x="{LEFT + frac * COLUMNS * CELL_W}" y="{base}" text-anchor="{anchor}" '
                   f'font-size="10">{_clock(start + frac * span)} UTC</text>')
    out.append("</svg>")
    return "".join(out)


def legend(causes) -> str:
    return "".join(f'<span class="cause"><i style="background:{colour_of(c)}"></i>{_e(c)}</span>'
                   for c in sorted(causes))


# --- the topology path ----------------------------------------------------------------------

def topology_hops(topology: dict, service: str) -> list[str]:
    """Plain values first (region, cluster, host ...), then the ordered path; the service last
    unless the path already names it."""
    plain = [f"{k}={v}" for k, v in topology.items() if not isinstance(v, list | tuple | dict)]
    path = [str(h) for v in topology.values() if isinstance(v, list | tuple) for h in v]
    if service not in path:
        path.append(service)
    return plain + path


def topology_svg(topology: dict, service: str, severity: str) -> str:
    hops = topology_hops(topology, service)
    widths = [max(60, 7 * len(h) + 16) for h in hops]
    gap, height = 22, 34
    width = sum(widths) + gap * (len(hops) - 1) + 4
    out = [f'<svg class="topology" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'role="img" aria-label="topology path">']
    x = 2
    for hop, w in zip(hops, widths, strict=True):
        stalled = hop == service
        fill = SEVERITY_COLOURS.get(severity, SEVERITY_COLOURS[""]) if stalled else "#e8e8e8"
        cls = "hop stalled" if stalled else "hop"
        out.append(f'<g class="{cls}"><rect x="{x}" y="4" width="{w}" height="26" rx="5" fill="{fill}" '
                   f'stroke="#666"/><text x="{x + w / 2}" y="21" text-anchor="middle" font-size="12" '
                   f'fill="{"#fff" if stalled else "#222"}">{_e(hop)}</text>'
                   f'{"<title>stalled here</title>" if stalled else ""}</g>')
        x += w
        if hop is not hops[-1]:
            out.append(f'<path d="M{x + 3} 17 H{x + gap - 5} M{x + gap - 10} 12 L{x + gap - 4} 17 '
                       f'L{x + gap - 10} 22" stroke="#666" fill="none"/>')
            x += gap
    out.append("</svg>")
    return "".join(out)


# --- tables ---------------------------------------------------------------------------------

def _frame(fr) -> str:
    if isinstance(fr, str):
        return fr
    return f"{fr.get('func', '?')} {fr.get('file', '')}:{fr.get('line', 0)}"


def _stack_html(record: dict | None, opened: bool = False) -> str:
    if not record or not record.get("stack"):
        return '<span class="dim">no stack</span>'
    summary = " → ".join(record.get("stack_summary") or [_frame(record["stack"][0])])
    frames = "\n".join(_frame(fr) for fr in record["stack"])
    return (f'<details class="stack"{" open" if opened else ""}><summary>{_e(summary)}</summary>'
            f'<pre>{_e(frames)}</pre></details>')


def _trace(record: dict | None) -> str:
    tid = (record or {}).get("trace_id") or ""
    return f'<code class="trace">{_e(tid)}</code>' if tid else '<span class="dim">-</span>'


def _identity(record: dict) -> str:
    """The process's pid in its own namespace, container and pod under its host pid, when it has
    them (``lgf.identity.shown``)."""
    parts = record.get("identity") or ()
    return "".join(f'<br><span class="dim">{_e(label)} {_e(value)}</span>' for label, value in parts)


SERVICE_TAGS = ("namespace", "version", "deployment.environment", "node", "zone")
"""The tags of a service's newest stall shown under its name (``lgf.identity``)."""


def _service_tags(record: dict) -> str:
    """``namespace shop · version v1.4.2 · zone eu-west-1b`` of the service's newest stall."""
    tags = record.get("tags") or {}
    shown = [f"{k} <b>{_e(str(tags[k]))}</b>" for k in SERVICE_TAGS if tags.get(k)]
    return f'<p class="meta">{" · ".join(shown)}</p>' if shown else ""


def _peers(record: dict) -> str:
    """Whom the stall served and what it waited on, when lgf found them (``lgf.peerview``)."""
    parts = record.get("peers") or ()
    return "".join(f'<br><span class="peer">{_e(label.replace("_", " "))}: {_e(text)}</span>' for label, text in parts)


def stalls_table(records: list[dict], first_open: bool) -> str:
    rows = []
    for i, r in enumerate(reversed(records[-STALLS_LISTED:])):
        bound = ">=" if r.get("precision") == "sampled" else ""
        rows.append(
            f'<tr class="stall"><td>{_e(r["ts"][11:23] or _clock(r["at"]))}</td>'
            f'<td><i class="dot" style="background:{colour_of(r["cause"])}"></i>{_e(r["cause"])}</td>'
            f'<td class="num">{bound}{_ms(r["duration_ns"])}</td><td>{r["pid"]}/{r["goid"]}{_identity(r)}</td>'
            f'<td>{_e(r["wait_reason"])}{_peers(r)}</td><td>{_trace(r)}</td>'
            f'<td>{_stack_html(r, opened=first_open and i == 0)}</td></tr>')
    return ('<table><tr><th>time (UTC)</th><th>cause</th><th>duration</th><th>pid/goroutine</th>'
            '<th>wait</th><th>trace id</th><th>stack</th></tr>' + "".join(rows) + "</table>")


def windows_table(windows: list[dict], by_id: dict[str, dict]) -> str:
    if not windows:
        return '<p class="dim">no stall window yet</p>'
    rows = []
    for w in windows[:20]:
        worst = by_id.get(w.get("worst_event_id", ""))
        causes = ", ".join(f"{c} {n}" for c, n in w.get("causes", {}).items())
        rows.append(f'<tr class="window"><td>{_e(w.get("ts", "")[11:23])}</td><td>{w["pid"]} {_e(w["comm"])}</td>'
                    f'<td class="num">{_ms(w["span_ns"])}</td><td class="num">{w["count"]}</td>'
                    f'<td class="num">{_ms(w["worst_ns"])}</td><td>{_e(causes)}</td>'
                    f'<td class="num">{w["goroutines"]}</td><td>{_trace(worst)}</td>'
                    f'<td>{_stack_html(worst)}</td></tr>')
    return ('<table><tr><th>end (UTC)</th><th>process</th><th>span</th><th>stalls</th><th>worst</th>'
            '<th>causes</th><th>goroutines</th><th>worst stall\'s trace id</th><th>worst stall\'s stack</th>'
            '</tr>' + "".join(rows) + "</table>")


def alerts_table(alerts: list[dict]) -> str:
    if not alerts:
        return '<p class="dim">no alert yet (one per group every report interval)</p>'
    rows = []
    for a in alerts[:30]:
        silenced = a.get("silenced_by")
        rows.append(f'<tr class="alert{" silenced" if silenced else ""}"><td>{_e(a.get("ts", "")[11:23])}</td>'
                    f'<td><b style="color:{SEVERITY_COLOURS.get(a.get("severity", ""), "#333")}">'
                    f'{_e(a.get("severity", ""))}</b></td><td>{_e(a.get("service", ""))}</td>'
                    f'<td>{_e(a.get("cause", ""))}</td><td class="num">{a.get("count", "")}</td>'
                    f'<td class="num">{_ms(int(a.get("worst_ns") or a.get("duration_ns") or 0))}</td>'
                    f'<td>{_e(a.get("summary", ""))}</td><td>{_trace(a)}</td>'
                    f'<td>{_e("silenced (" + str(silenced) + ")") if silenced else "sent"}</td></tr>')
    return ('<table><tr><th>end (UTC)</th><th>severity</th><th>service</th><th>cause</th><th>stalls</th>'
            '<th>worst</th><th>summary</th><th>trace id</th><th></th></tr>' + "".join(rows) + "</table>")


def silences_table(silences: list[dict]) -> str:
    if not silences:
        return '<p class="dim">no silence in force</p>'
    rows = "".join(f'<tr class="silence"><td><code>{_e(s.get("id", ""))}</code></td>'
                   f'<td>{_e(", ".join(s.get("matchers", [])))}</td><td>{_e(s.get("until", ""))}</td>'
                   f'<td>{_e(s.get("comment", ""))}</td></tr>' for s in silences)
    return '<table><tr><th>id</th><th>matchers</th><th>until</th><th>comment</th></tr>' + rows + "</table>"


def costs_table(costs: list[dict]) -> str:
    """lgf's price per traced process, as it measured it (lgf.sources.uprobe.budget): the
    goroutine tier's estimated cost as a share of the process's CPU against its budget, the share
    of time it was armed and its probe hits per second (over about the last minute), the per-hit
    cost measured on this host, and the armings the budget refused."""
    if not costs:
        return '<p class="dim">no traced process yet</p>'
    rows = "".join(
        f'<tr class="cost"><td>{_e(c["pid"])}</td><td>{_e(c.get("comm", ""))}</td>'
        f'<td class="num">{100 * c.get("tier_cost_share", 0):.2f} %</td>'
        f'<td class="num">{_budget(c.get("tier_budget_share", 0))}</td>'
        f'<td class="num">{100 * c.get("tier_armed_share", 0):.0f} %</td>'
        f'<td class="num">{c.get("tier_hits_per_second", 0):,.0f}</td>'
        f'<td class="num">{1e6 * c.get("probe_hit_cost_seconds", 0):.2f} us</td>'
        f'<td class="num">{int(c.get("tier_arm_refused", 0))}</td></tr>' for c in costs)
    return ('<table><tr><th>pid</th><th>comm</th><th>estimated cost (share of its CPU)</th><th>budget</th>'
            '<th>tier armed</th><th>probe hits/s</th><th>per hit</th><th>armings refused</th></tr>'
            + rows + "</table>")


def _budget(share: float) -> str:
    return f"{100 * share:.1f} %" if share else "none"


STYLE = """
body{font:13px/1.4 system-ui,sans-serif;margin:16px;color:#222;background:#fff}
h1{font-size:18px;margin:0 0 4px} h2{font-size:15px;margin:18px 0 6px;border-bottom:1px solid #ddd}
h3{font-size:13px;margin:10px 0 4px} table{border-collapse:collapse;margin:4px 0}
td,th{border-bottom:1px solid #eee;padding:2px 8px;text-align:left;vertical-align:top}
td.num{text-align:right;white-space:nowrap} .dim{color:#888} code{font-size:12px}
pre{margin:2px 0;font-size:11px} details summary{cursor:pointer}
i.dot,.cause i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
.cause{margin-right:12px} .meta{color:#555} tr.silenced{color:#999}
section.service{border:1px solid #ddd;border-radius:6px;padding:8px 12px;margin:10px 0}
"""


def render_page(recent: dict, records: list[dict], now: float | None = None, refresh: int = 5,
                costs: list[dict] | None = None) -> str:
    """The whole page. ``recent`` is ``AlertEngine.recent()``; ``records`` the history, oldest first;
    ``costs`` what lgf's goroutine tier costs each traced process (:func:`costs_table`)."""
    now = time.time() if now is None else now
    by_service: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_service[r["service"]].append(r)
    order = sorted(by_service, key=lambda s: by_service[s][-1]["at"], reverse=True)
    by_id = {r["id"]: r for r in records}
    parts = ['<!doctype html><html><head><meta charset="utf-8">',
             f'<meta http-equiv="refresh" content="{refresh}">' if refresh else "",
             f"<title>lgf latency</title><style>{STYLE}</style></head><body>",
             "<h1>lgf: stalls of the Go services on this host</h1>",
             f'<p class="meta">env <b>{_e(recent.get("env", ""))}</b> · threshold '
             f'{_ms(recent.get("threshold_ns", 0))} · window {_ms(recent.get("window_ns", 0))} · report '
             f'interval {_ms(recent.get("report_interval_ns", 0))} · open alert groups '
             f'{recent.get("open_groups", 0)} · {len(records)} stall(s) kept · '
             f'<a href="/debug/latency?format=json">JSON</a> · <a href="/metrics">/metrics</a></p>']
    if not order:
        parts.append('<p class="dim">No stall seen yet. Try <code>lgf demo</code> for a Go program that '
                     "stalls on purpose.</p>")
    parts.append("<h2>Services</h2>")
    for i, service in enumerate(order):
        recs = by_service[service]
        newest = recs[-1]
        worst = max(recs, key=lambda r: r["duration_ns"])
        parts.append(f'<section class="service" data-service="{_e(service)}"><h3>{_e(service)} · '
                     f'{len(recs)} stall(s), worst {_ms(worst["duration_ns"])}</h3>{_service_tags(newest)}'
                     f'<div>{heatmap_svg(recs, now)}</div><div>{legend({r["cause"] for r in recs})}</div>'
                     f'<h3>topology path</h3>{topology_svg(newest["topology"], service, newest["severity"])}'
                     f'<h3>recent stalls</h3>{stalls_table(recs, first_open=i == 0)}</section>')
    parts += ["<h2>Stall windows</h2>", windows_table(recent.get("windows", []), by_id),
              "<h2>Alerts</h2>", alerts_table(recent.get("alerts", [])),
              "<h2>Silences</h2>", silences_table(recent.get("silences", [])),
              "<h2>lgf's cost per traced process</h2>", costs_table(costs or []),
              "</body></html>"]
    return "".join(parts)
