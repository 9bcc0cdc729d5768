"""Turn lgf alerts into WeCom robot message contents that fit WeCom's byte limits.

WeCom counts UTF-8 *bytes*, not characters: ``text`` content at most 2048, ``markdown`` and
``markdown_v2`` at most 4096 (docs/wecom.md). Every function here returns contents within the limit it
is given, cut only on character boundaries (a Chinese character is 3 bytes and is never split),
preferring line boundaries.

* ``alert_messages``: one alert (or stall event) as one message, or as numbered parts when even
  a shortened stack does not fit.
* ``digest_messages``: many alerts packed into as few messages as the limit allows, grouped by
  severity, service and cause, every alert id listed, so when the 20-a-minute budget is short no
  alert is dropped: each one appears in some message.

Events are read from ``event.to_dict()`` defensively: alerts carry extra keys (``count``,
``worst_ns``, ``total_ns``, ``goroutines`` ...) made elsewhere, and any of them may be missing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lgf.identity import shown
from lgf.peerview import shown as peers_shown

LIMITS = {"text": 2048, "markdown": 4096, "markdown_v2": 4096}
"""Bytes of ``content`` WeCom accepts per message type."""

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
_COLOUR = {"critical": "warning", "warning": "comment", "info": "info"}
"""WeCom markdown has three colours: warning (red-orange), comment (grey), info (green)."""


# --- UTF-8 byte arithmetic -------------------------------------------------------------------------

def nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


def cut_utf8(text: str, limit: int) -> str:
    """The longest prefix of ``text`` of at most ``limit`` UTF-8 bytes, ending on a character boundary."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    end = max(limit, 0)
    while end > 0 and (data[end] & 0xC0) == 0x80:  # a continuation byte: step back to the lead byte
        end -= 1
    return data[:end].decode("utf-8")


def split_utf8(text: str, limit: int) -> list[str]:
    """Pieces of at most ``limit`` bytes that join back to ``text``, cut at newlines where possible."""
    if limit < 4:
        raise ValueError("limit: must leave room for one UTF-8 character (4 bytes)")
    pieces: list[str] = []
    current, size = [], 0
    for line in text.splitlines(keepends=True):
        n = nbytes(line)
        if size + n <= limit:
            current.append(line)
            size += n
            continue
        if current:
            pieces.append("".join(current))
            current, size = [], 0
        while n > limit:  # one line longer than a whole message: cut it on a character boundary
            head = cut_utf8(line, limit)
            pieces.append(head)
            line = line[len(head):]
            n = nbytes(line)
        current, size = [line], n
    if current:
        pieces.append("".join(current))
    return pieces or [""]


# --- reading an alert defensively ------------------------------------------------------------------

def human_ns(ns: Any) -> str:
    """``1_230_000_000`` -> ``"1.23 s"``; ``"?"`` for what is not a number."""
    try:
        ns = float(ns)
    except (TypeError, ValueError):
        return "?"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.0f} ns"


def _number(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def severity_of(d: dict) -> str:
    sev = str(d.get("severity") or "info").lower()
    return sev if sev in SEVERITY_ORDER else "info"


def service_of(d: dict) -> str:
    if d.get("service"):  # the alert policy puts the group's service at the top level
        return str(d["service"])
    for table in ("tags", "topology"):
        t = d.get(table)
        if isinstance(t, dict) and t.get("service"):
            return str(t["service"])
    return str(d.get("comm") or f"pid {d.get('pid', '?')}")


def topology_path(d: dict) -> str:
    """``[alerts.topology] path = ["api-gw", "order-svc"]`` as ``"api-gw → order-svc"`` ("" if none)."""
    topo = d.get("topology")
    path = topo.get("path") if isinstance(topo, dict) else None
    if not isinstance(path, list) or not path:
        return ""
    return " → ".join(str(p) for p in path)


def _pairs(table: Any) -> str:
    if not isinstance(table, dict) or not table:
        return ""
    return ", ".join(f"{k}={v}" for k, v in table.items())


def _stack_lines(d: dict, frames: int) -> list[str]:
    """The stack from its first user frame: the runtime frames above it (gopark ...) say only what
    the wait reason already says, and an on-call engineer wants the line of their own code."""
    stack = [f for f in d.get("stack") or [] if isinstance(f, dict)] if isinstance(d.get("stack"), list) else []
    runtime = 0
    while runtime < len(stack) and str(stack[runtime].get("func", "")).startswith("runtime."):
        runtime += 1
    if runtime == len(stack):  # all runtime (a GC worker, the scheduler): show them as they are
        runtime = 0
    out = [f"({runtime} runtime frames)"] if runtime else []
    for fr in stack[runtime:runtime + frames]:
        where = f" ({fr.get('file')}:{fr.get('line')})" if fr.get("file") else ""
        out.append(f"{fr.get('func') or hex(fr.get('pc') or 0)}{where}")
    if not stack and isinstance(d.get("stack_summary"), list):
        out = [str(f) for f in d["stack_summary"][:frames]]
    if len(stack) > runtime + frames:
        out.append(f"... {len(stack) - runtime - frames} more frames")
    return out


_IDENTITY_LABEL = {"ns_pid": "pid in its namespace", "container": "container", "pod": "pod",
                   "owner": "owner", "node": "node"}
"""How the WeCom message names each part of a process's identity (``lgf.identity.shown``)."""


def _phrase(head: str, *parts: Any) -> str:
    """``head`` followed by each part that is there: an event lacking a field (None, 0, "") adds nothing."""
    return head + "".join(p for p in parts if p)


def _guard(text: str, msgtype: str) -> str:
    """Keep user text from acting as WeCom markup (a tag value "<@all>" must not page everyone)."""
    if msgtype == "text":
        return text
    return text.replace("<", "‹").replace(">", "›")


# --- one alert ---------------------------------------------------------------------------------------

def _headline(sev: str, title: str, env: str, msgtype: str) -> str:
    """A message's first line: its severity and title in the style of ``msgtype``."""
    if msgtype == "markdown":
        return f'<font color="{_COLOUR[sev]}">**{sev.upper()}**</font> **{title}**{env}'
    if msgtype == "markdown_v2":
        return f"**{sev.upper()}** **{title}**{env}"
    return f"[{sev.upper()}] {title}{env}"


def _stack_block(stack: list[str], msgtype: str, g) -> list[str]:
    """The stack's lines as ``msgtype`` shows code (nothing for an empty stack)."""
    if not stack:
        return []
    if msgtype == "markdown_v2":
        return ["```", *map(g, stack), "```"]
    if msgtype == "markdown":
        return ["stack:", *(f"`{g(s)}`" for s in stack)]
    return ["stack:", *(f"  {s}" for s in stack)]


def relayed_lines(d: dict, msgtype: str, stack_frames: int = 8) -> list[str]:
    """The lines of a notification the relay received from Alertmanager (``lgf.relay``): which
    hosts one incident spans, and each host's own alert."""
    g = lambda s: _guard(str(s), msgtype)  # noqa: E731
    am = d["alertmanager"]
    sev = severity_of(d)
    status = str(am.get("status") or "firing").upper()
    hosts = [str(h) for h in d.get("hosts") or []]
    title = (f"lgf via Alertmanager: {g(service_of(d))} {g(d.get('cause') or 'unknown')} {status} on "
             f"{len(hosts)} host(s)")
    lines = [_headline(sev, title, f" ({g(d['env'])})" if d.get("env") else "", msgtype)]
    q = "> " if msgtype != "text" else ""
    lines.append(q + f"hosts: {g(', '.join(hosts) or '?')}")
    lines.append(q + _phrase(f"{am.get('alerts', 0)} alert(s)",
                             d.get("count") and f", {d['count']} stalls",
                             d.get("worst_ns") and f", worst {human_ns(d['worst_ns'])}"))
    listed = am.get("listed") or []
    for item in listed:
        if isinstance(item, dict):
            mark = f" ({g(item['status'])})" if item.get("status") and item["status"] != am.get("status") else ""
            lines.append(f"- {g(item.get('host') or '?')}{mark}: {g(item.get('summary') or item.get('status') or '')}")
    if isinstance(am.get("alerts"), int) and am["alerts"] > len(listed):
        lines.append(f"- ... and {am['alerts'] - len(listed)} more")
    lines += _stack_block(_stack_lines(d, stack_frames), msgtype, g)
    text = _pairs(d.get("tags"))
    if text:
        lines.append(f"tags: {g(text)}")
    if d.get("trace_id"):
        lines.append(f"trace: {g(d['trace_id'])}")
    if am.get("group_key"):
        lines.append(f"group: {g(am['group_key'])}")
    lines.append(f"id: {d.get('id', '?')}")
    return lines


def alert_lines(d: dict, msgtype: str, stack_frames: int = 8) -> list[str]:
    """The lines of one alert's message, in the style of ``msgtype``."""
    if isinstance(d.get("alertmanager"), dict):
        return relayed_lines(d, msgtype, stack_frames)
    g = lambda s: _guard(str(s), msgtype)  # noqa: E731
    sev = severity_of(d)
    kind = "alert" if d.get("kind") == "alert" else "stall"
    duration = d.get("worst_ns") or d.get("duration_ns")
    title = f"lgf {kind}: {g(service_of(d))} stalled {human_ns(duration)}"
    lines = [_headline(sev, title, f" ({g(d['env'])})" if d.get("env") else "", msgtype)]
    q = "> " if msgtype != "text" else ""
    lines.append(q + _phrase(f"cause: {g(d.get('cause') or 'unknown')}",
                             d.get("wait_reason") and f" · wait reason: {g(d['wait_reason'])}",
                             d.get("syscall") and f" · syscall: {g(d['syscall'])}"))
    lines.append(q + _phrase(f"process: {g(d.get('comm') or '?')} pid {d.get('pid', '?')}",
                             *(f" · {_IDENTITY_LABEL[label]} {g(value)}" for label, value in shown(d)),
                             d.get("goid") and f" · goid {d['goid']}",
                             d.get("go_version") and f" · {g(d['go_version'])}"))
    if d.get("top_frame"):
        lines.append(q + f"where: {g(d['top_frame'])}")
    if kind == "alert" and d.get("count"):
        pids = d.get("pids")
        lines.append(q + _phrase(f"{d['count']} stalls",
                                 d.get("goroutines") and f" in {d['goroutines']} goroutines",
                                 isinstance(pids, list) and len(pids) > 1 and f" of {len(pids)} processes",
                                 d.get("worst_ns") and f", worst {human_ns(d['worst_ns'])}",
                                 d.get("total_ns") and f", total {human_ns(d['total_ns'])}",
                                 d.get("suppressed_repeats") and f" ({d['suppressed_repeats']} repeats held back)"))
    if d.get("ts"):
        lines.append(q + f"at: {g(d['ts'])}")
    lines += _stack_block(_stack_lines(d, stack_frames), msgtype, g)
    path = topology_path(d)
    if path:
        lines.append(f"path: {g(path)}")
    for label, text in peers_shown(d):  # lgf.plugins.peer, worded by lgf.peerview
        lines.append(f"{label.replace('_', ' ')}: {g(text)}")
    if isinstance(d.get("labels"), dict) and d["labels"]:
        lines.append(f"labels: {g(_pairs(d['labels']))}")
    for label in ("tags", "topology"):
        table = d.get(label)
        if label == "topology" and isinstance(table, dict):
            table = {k: v for k, v in table.items() if k != "path"}
        text = _pairs(table)
        if text:
            lines.append(f"{label}: {g(text)}")
    if d.get("trace_id") or d.get("span_id"):
        lines.append(_phrase(f"trace: {g(d.get('trace_id') or '-')}", d.get("span_id") and f" · span: {g(d['span_id'])}"))
    lines.append(f"id: {d.get('id', '?')}")
    return lines


def alert_messages(d: dict, msgtype: str, footer: str = "", limit: int | None = None,
                   stack_frames: int = 8) -> list[str]:
    """One alert as one message content, or as parts "(1/3)" ... when it does not fit.

    ``footer`` (e.g. ``<@userid>`` mentions) ends the last part. Every part is within ``limit``
    (default: WeCom's limit for ``msgtype``).
    """
    limit = limit or LIMITS[msgtype]
    body = "\n".join(alert_lines(d, msgtype, stack_frames))
    whole = body + ("\n" + footer if footer else "")
    if nbytes(whole) <= limit:
        return [whole]
    marker_room = len(" (99/99)\n") + 2
    pieces = split_utf8(body, limit - marker_room - (nbytes(footer) + 1 if footer else 0))
    n = len(pieces)
    out = [f"({i}/{n})\n" + p.rstrip("\n") for i, p in enumerate(pieces, 1)]
    if footer:
        out[-1] += "\n" + footer
    return [cut_utf8(p, limit) for p in out]  # a guard only: the room above already fits


# --- many alerts --------------------------------------------------------------------------------------

def digest_messages(dicts: Iterable[dict], msgtype: str, footer: str = "", limit: int | None = None,
                    why: str = "") -> list[tuple[str, list[str]]]:
    """Pack alerts into as few messages as fit: ``[(content, [alert ids in it]), ...]``.

    Alerts are grouped by (severity, service, cause), most severe group first; each group line
    gives its count and worst duration, then every alert's id and duration follow. A group that
    runs past a message continues in the next under its repeated group line. ``footer`` ends every
    message (mentions, which are the most severe of the whole digest).
    """
    limit = limit or LIMITS[msgtype]
    groups: dict[tuple, list[dict]] = {}
    for d in dicts:
        groups.setdefault((severity_of(d), service_of(d), str(d.get("cause") or "unknown")), []).append(d)
    order = sorted(groups, key=lambda k: SEVERITY_ORDER[k[0]])
    header_room = 160 + nbytes(why)      # "lgf digest (12/34): N alerts ..." written after packing
    room = limit - header_room - (nbytes(footer) + 1 if footer else 0)
    chunks: list[tuple[list[str], list[str]]] = []   # (lines, ids)
    lines: list[str] = []
    ids: list[str] = []
    size = 0

    def flush() -> None:
        nonlocal lines, ids, size
        if ids:
            chunks.append((lines, ids))
        lines, ids, size = [], [], 0

    for key in order:
        members = groups[key]
        head = _group_line(key, members, msgtype)
        started = False
        for d in members:
            item = f"{d.get('id', '?')} {human_ns(d.get('worst_ns') or d.get('duration_ns'))}"
            if d.get("trace_id"):
                item += f" trace {_guard(str(d['trace_id']), msgtype)}"
            item = ("- " if msgtype != "text" else "  ") + item
            need = nbytes(item) + 1 + (0 if started else nbytes(head) + 1)
            if size + need > room and ids:
                flush()
                started = False
                need = nbytes(item) + 1 + nbytes(head) + 1
            if not started:
                lines.append(cut_utf8(head, room - nbytes(item) - 2))
                size += nbytes(lines[-1]) + 1
                started = True
            lines.append(item)
            ids.append(str(d.get("id", "?")))
            size += nbytes(item) + 1
    flush()
    total = sum(len(i) for _, i in chunks)
    out = []
    for n, (body, chunk_ids) in enumerate(chunks, 1):
        title = f"lgf digest ({n}/{len(chunks)}): {len(chunk_ids)} of {total} alerts"
        title = f"**{title}**" if msgtype != "text" else title
        text = "\n".join([title + (f" · {why}" if why else ""), *body] + ([footer] if footer else []))
        out.append((cut_utf8(text, limit), chunk_ids))
    return out


def _group_line(key: tuple, members: list[dict], msgtype: str) -> str:
    sev, service, cause = key
    worst = max((_number(m.get("worst_ns") or m.get("duration_ns")) for m in members), default=0)
    text = f"{service} · {cause}: {len(members)} alerts, worst {human_ns(worst)}"
    text = _guard(text, msgtype)
    if msgtype == "markdown":
        return f'<font color="{_COLOUR[sev]}">**{sev.upper()}**</font> {text}'
    if msgtype == "markdown_v2":
        return f"**{sev.upper()}** {text}"
    return f"[{sev.upper()}] {text}"
