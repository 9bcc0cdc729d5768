"""The ``alertmanager`` sink: lgf's alerts to Prometheus Alertmanager's v2 API, like Prometheus.

lgf groups stalls per host; grouping, de-duplication, silencing and inhibition across many hosts
is what Alertmanager does, so every lgf can hand its alerts to one Alertmanager cluster
(docs/many-hosts.md). This sink speaks to it exactly as Prometheus does:

* every alert goes to **every** URL (``url`` / ``urls``: the Alertmanagers of an HA cluster do
  not share alerts, only silences and notification logs): ``POST <url>/api/v2/alerts``;
* an alert is identified by its labels (``alertname``, ``service``, ``cause``, ``severity``,
  ``env``, ``host``, ``namespace``/``pod``/``container`` when the alert carries them, every
  ``[alerts.tags]`` and ``[alerts.topology]`` entry but ``path``), names sanitised to
  ``[a-zA-Z_][a-zA-Z0-9_]*``, values cut to ``MAX_LABEL_BYTES``; what differs from one report
  interval to the next (summary, stack, worst duration, trace id, lgf's alert id, the worst
  stall's ``ns_pid``, ``container_id``, ``container_runtime`` and ``pod_uid``) is in its
  annotations, so the alerts of one lgf group in successive intervals are one Alertmanager alert;
* **firing and resolved**: an lgf alert says "these stalls happened in this report interval".
  It fires from the group's first stall (``startsAt``) until ``resolve_timeout`` after its last
  (``endsAt``); a later alert with the same labels moves ``endsAt`` on and keeps ``startsAt``.
  When no stall of that kind comes for ``resolve_timeout``, Alertmanager resolves it at
  ``endsAt`` (and sends "resolved" to receivers with ``send_resolved``), even when this lgf is
  down. Firing alerts are re-sent every ``resend_interval`` until then, so an Alertmanager that
  restarted (it keeps no alerts on disk) or was down learns them again;
* delivery goes through lgf's durable queue (``lgf.delivery``, ``send_batch``): a batch counts
  as delivered once one Alertmanager accepted it (the others get it with the next re-send); when
  none did, a connection error, timeout, 5xx, 408 or 429 is retried with backoff, any other 4xx
  (Alertmanager refusing the alerts) is permanent: the alerts stay on disk marked failed
  (``lgf spool list``/``retry``) and the answer is logged at ERROR.

Proxies from the environment (``http_proxy``) are not used: an Alertmanager is reached
directly, as Prometheus does unless told otherwise.

The firing alerts are kept in ``<spool_dir>/<name>.alertmanager.json`` (written once per
``resend_interval`` when they changed, and at shutdown) so a restarted lgf keeps re-sending them;
after a crash, alerts that began firing in the last ``resend_interval`` are not re-sent (they were
delivered; only an Alertmanager that also restarted before their ``endsAt`` misses them). Metrics (label ``sink``): ``lgf_alertmanager_posts_total{url,result}``,
``lgf_alertmanager_firing``.

Cost: one HTTP request per batch and Alertmanager, plus one per ``resend_interval`` while
anything fires (docs/many-hosts.md, "What each part costs").
"""

from __future__ import annotations

import calendar
import http.client
import json
import logging
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lgf import Component, hookimpl
from lgf.errors import DeliveryError
from lgf.event import Event
from lgf.options import Duration
from lgf.stats import Stats

log = logging.getLogger("lgf.sinks.alertmanager")

API_PATH = "/api/v2/alerts"
MAX_LABEL_BYTES = 1024
"""A label value is cut to this many UTF-8 bytes (Alertmanager takes more; its receivers may not)."""
MAX_ANNOTATION_BYTES = 8192
RESERVED = ("alertname", "service", "cause", "severity", "env", "host", "namespace", "pod", "container")
"""Labels lgf sets itself; a tag of the same name is written ``tag_<name>``."""
IDENTITY = ("namespace", "pod", "container")
_BAD_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


@dataclass
class AlertmanagerOptions:
    """``[[sinks]] use = "alertmanager"``."""

    url: str = ""
    """One Alertmanager, e.g. ``"http://127.0.0.1:9093"`` (``/api/v2/alerts`` is added)."""
    urls: list[str] = field(default_factory=list)
    """Every Alertmanager of an HA cluster: each gets every alert, as Prometheus sends them."""
    alertname: str = "LgfStall"
    """The ``alertname`` label of every alert."""
    resolve_timeout: Duration = Duration(300_000_000_000)
    """An alert fires until this long after its group's last stall (``endsAt``), then resolves."""
    resend_interval: Duration = Duration(60_000_000_000)
    """Firing alerts are re-sent this often, so a restarted Alertmanager learns them again."""
    generator_url: str = ""
    """``generatorURL`` of every alert; default: lgf's latency page, ``http://<[http] listen>/ui``."""
    timeout: Duration = Duration(10_000_000_000)
    """Per request to one Alertmanager."""

    def __post_init__(self):
        given = ([self.url] if self.url else []) + list(self.urls)
        if not given:
            raise ValueError('url: required, e.g. url = "http://127.0.0.1:9093", or urls = [...] for '
                             "every Alertmanager of an HA cluster")
        for i, u in enumerate(given):
            where = "url" if self.url and i == 0 else f"urls[{i - bool(self.url)}]"
            if not isinstance(u, str):
                raise ValueError(f"{where}: expected a string")
            p = urllib.parse.urlsplit(u)
            if p.scheme not in ("http", "https") or not p.hostname:
                raise ValueError(f"{where}: {u!r} is not an http:// or https:// URL of an Alertmanager "
                                 '(e.g. "http://127.0.0.1:9093")')
            if p.query or p.fragment:
                raise ValueError(f"{where}: {u!r} must not carry a query or fragment")
            try:
                p.port  # noqa: B018 - raises for a bad port
            except ValueError:
                raise ValueError(f"{where}: {u!r} has a bad port") from None
        if len({endpoint(u) for u in given}) != len(given):
            raise ValueError("urls: the same Alertmanager is listed twice")
        if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_:]*", self.alertname):
            raise ValueError(f"alertname: {self.alertname!r} is not a metric-like name (LgfStall)")
        if self.resolve_timeout <= 0 or self.resend_interval <= 0 or self.timeout <= 0:
            raise ValueError("resolve_timeout, resend_interval and timeout must be positive")
        if self.resend_interval >= self.resolve_timeout:
            raise ValueError("resend_interval: must be shorter than resolve_timeout, or a restarted "
                             "Alertmanager would not learn a firing alert before it resolves")
        if self.generator_url:
            p = urllib.parse.urlsplit(self.generator_url)
            if p.scheme not in ("http", "https") or not p.netloc:
                raise ValueError("generator_url: must be an http:// or https:// URL")

    def endpoints(self) -> list[str]:
        return [endpoint(u) for u in ([self.url] if self.url else []) + list(self.urls)]


def endpoint(url: str) -> str:
    """``http://h:9093`` or ``http://h:9093/prefix/`` -> the alerts endpoint under it."""
    base = url.rstrip("/")
    return base if base.endswith(API_PATH) else base + API_PATH


# --- labels and annotations ------------------------------------------------------------------------

def label_name(name: str) -> str:
    """A Prometheus label name from any key: ``team-a.x`` -> ``team_a_x``, ``9x`` -> ``_9x``;
    a leading ``__`` (reserved for internal use) becomes one ``_``."""
    out = _BAD_LABEL_CHARS.sub("_", str(name)) or "_"
    if out[0].isdigit():
        out = "_" + out
    while out.startswith("__"):
        out = out[1:]
    return out


def cut(text: str, limit: int) -> str:
    """At most ``limit`` UTF-8 bytes, cut on a character boundary."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text.encode("utf-8", "replace").decode("utf-8")
    return data[:limit].decode("utf-8", "ignore")


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    return "" if v is None else str(v)


def labels_of(d: dict, alertname: str) -> dict[str, str]:
    """The label set of one lgf alert (its ``to_dict()``)."""
    topo = d.get("topology") if isinstance(d.get("topology"), dict) else {}
    tags = d.get("tags") if isinstance(d.get("tags"), dict) else {}
    labels = {"alertname": alertname, "service": d.get("service") or d.get("comm") or "",
              "cause": d.get("cause") or "unknown", "severity": d.get("severity") or "info",
              "env": d.get("env") or "", "host": topo.get("host") or ""}
    for key in IDENTITY:
        labels[key] = d.get(key) or topo.get(key) or tags.get(key) or ""
    for table in (topo, tags):  # tags last: a tag wins over a topology entry of the same name
        for k, v in table.items():
            if k in IDENTITY or k in ("host", "path"):
                continue
            name = label_name(k)
            if name in RESERVED:
                name = "tag_" + name
            labels[name] = _scalar(v)
    return {k: cut(str(v), MAX_LABEL_BYTES) for k, v in labels.items() if str(v) != ""}


def _human(ns: Any) -> str:
    try:
        n = float(ns)
    except (TypeError, ValueError):
        return ""
    return f"{n / 1e9:.2f}s" if n >= 1e9 else f"{n / 1e6:.1f}ms"


def annotations_of(d: dict) -> dict[str, str]:
    ann = {"summary": d.get("summary") or "",
           "stack": "\n".join(map(str, d.get("stack_summary") or [])),
           "worst": _human(d.get("worst_ns") or d.get("duration_ns")),
           "worst_ns": str(d.get("worst_ns") or d.get("duration_ns") or ""),
           "count": str(d.get("count") or ""),
           "top_frame": d.get("top_frame") or "",
           "trace_id": d.get("trace_id") or "",
           "lgf_alert_id": d.get("id") or "",
           "pids": _scalar(d.get("pids") or []),
           # the worst stall's process beyond its host pid (lgf.identity): annotations, since a
           # restarted container or pod must not make another alert
           "ns_pid": str(d.get("ns_pid") or ""),
           "container_id": d.get("container_id") or "",
           "container_runtime": d.get("container_runtime") or "",
           "pod_uid": d.get("pod_uid") or "",
           "pod": "/".join(str(d[k]) for k in ("namespace", "pod_name") if d.get(k)),
           "container_name": d.get("container_name") or "",
           "owner": "/".join(str(d[k]) for k in ("owner_kind", "owner_name") if d.get(k)),
           "node": d.get("node") or ""}
    return {k: cut(str(v), MAX_ANNOTATION_BYTES) for k, v in ann.items() if v}


def parse_rfc3339(ts: str) -> float | None:
    """Seconds since the epoch of lgf's ``ts`` (``...T13:40:01.123456789Z``); None if unreadable."""
    if not ts:
        return None
    try:
        main, _, frac = ts.rstrip("Z").partition(".")
        secs = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
        return secs + (float("0." + frac) if frac.isdigit() else 0.0)
    except (ValueError, OverflowError):
        return None


def rfc3339(epoch: float) -> str:
    secs = int(epoch)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{int((epoch - secs) * 1e3):03d}Z"


def fingerprint(labels: dict[str, str]) -> str:
    return json.dumps(sorted(labels.items()), ensure_ascii=False)


# --- the sink ---------------------------------------------------------------------------------------

class AlertmanagerSink:
    """Posts alerts to every configured Alertmanager. Behind ``lgf.delivery.Delivery`` (``send_batch``)."""

    default_receive = "alerts"
    relayed = False
    """The relay (``POST /api/alertmanager``) never sends Alertmanager's own notifications back here."""
    Options = AlertmanagerOptions

    def __init__(self, options: AlertmanagerOptions, ctx: Any = None, wall_clock=time.time):
        self.options = options
        self.name = getattr(ctx, "name", "") or "alertmanager"
        self.stats: Stats = getattr(ctx, "stats", None) or Stats()
        self.now = wall_clock
        self.urls = options.endpoints()
        config = getattr(ctx, "config", None)
        self.generator_url = options.generator_url or _latency_page(config)
        spool_dir = getattr(getattr(config, "host", None), "spool_dir", None)
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", self.name)
        self.state_path = Path(spool_dir) / f"{safe}.alertmanager.json" if spool_dir else None
        self._lock = threading.Lock()
        self._post_lock = threading.Lock()
        self.firing: dict[str, dict] = self._load()
        """fingerprint -> the Alertmanager alert (labels, annotations, startsAt, endsAt, ...)."""
        self._dirty = False
        self._stop = threading.Event()
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._thread = threading.Thread(target=self._resend_loop, name=f"lgf-am-resend-{self.name}",
                                        daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"AlertmanagerSink({self.name!r}, {self.urls})"

    # -- the queue's protocol --------------------------------------------------------------------------

    def send_batch(self, events: list[Event]) -> None:
        """Post these alerts to every Alertmanager; returns once at least one accepted them."""
        touched = self._merge([e.to_dict() for e in events if e.kind == "alert"])
        if touched:
            self._post_everywhere(touched, raise_on_failure=True)

    def send(self, event: Event) -> None:
        self.send_batch([event])

    def flush(self) -> None:
        self._save()

    def close(self) -> None:
        self._stop.set()
        self._save()

    # -- state -----------------------------------------------------------------------------------------

    def _merge(self, dicts: list[dict]) -> list[dict]:
        """Fold alerts into the firing set; returns the Alertmanager alerts to post now."""
        now = self.now()
        out: dict[str, dict] = {}
        with self._lock:
            for d in dicts:
                labels = labels_of(d, self.options.alertname)
                fp = fingerprint(labels)
                end = parse_rfc3339(d.get("ts") or "") or now
                span = max(0, int(d.get("end_ns") or 0) - int(d.get("start_ns") or 0)) / 1e9
                start = end - span
                ends = max(end, now) + self.options.resolve_timeout / 1e9
                known = self.firing.get(fp)
                if known is not None and known["_ends"] > now:
                    start = min(start, known["_starts"])
                    ends = max(ends, known["_ends"])
                alert = {"labels": labels, "annotations": annotations_of(d), "startsAt": rfc3339(start),
                         "endsAt": rfc3339(ends), "generatorURL": self.generator_url,
                         "_starts": start, "_ends": ends}
                self.firing[fp] = out[fp] = alert
            self.stats.set("lgf_alertmanager_firing", len(self.firing), sink=self.name)
            self._dirty = True  # written by the re-send loop and at close, not per batch (O(firing))
        return list(out.values())

    def _expire(self) -> list[dict]:
        now = self.now()
        with self._lock:
            for fp in [fp for fp, a in self.firing.items() if a["_ends"] <= now]:
                del self.firing[fp]
            self.stats.set("lgf_alertmanager_firing", len(self.firing), sink=self.name)
            return list(self.firing.values())

    def _load(self) -> dict[str, dict]:
        if self.state_path is None:
            return {}
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
            return {fp: a for fp, a in data.items() if isinstance(a, dict) and "_ends" in a}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("sink %r: cannot read %s (%s); firing alerts are re-sent from the next alert on",
                        self.name, self.state_path, exc)
            return {}

    def _save(self) -> None:
        if self.state_path is None:
            return
        with self._lock:
            data = json.dumps(self.firing, ensure_ascii=False)
            self._dirty = False
        tmp = self.state_path.with_suffix(".tmp")
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(data, encoding="utf-8")
            os.replace(tmp, self.state_path)
        except OSError as exc:  # only the re-sends after a restart depend on it
            log.warning("sink %r: cannot write %s: %s", self.name, self.state_path, exc)

    # -- re-sending --------------------------------------------------------------------------------------

    def _resend_loop(self) -> None:
        while not self._stop.wait(self.options.resend_interval / 1e9):
            alerts = self._expire()
            if self._dirty:
                self._save()
            if alerts:
                try:
                    self._post_everywhere(alerts, raise_on_failure=False)
                except Exception:  # noqa: BLE001 - the next round tries again
                    log.exception("sink %r: re-sending firing alerts failed", self.name)

    # -- HTTP --------------------------------------------------------------------------------------------

    def _post_everywhere(self, alerts: list[dict], raise_on_failure: bool) -> None:
        body = json.dumps([{k: v for k, v in a.items() if not k.startswith("_")} for a in alerts],
                          ensure_ascii=False).encode("utf-8")
        errors: list[DeliveryError] = []
        with self._post_lock:
            for url in self.urls:
                try:
                    self._post(url, body)
                except DeliveryError as exc:
                    errors.append(exc)
        if len(errors) < len(self.urls):
            for exc in errors:  # the others took them; this one learns them at the next re-send
                log.warning("sink %r: %s; the alerts went to the other Alertmanager(s) and are re-sent "
                            "to this one while they fire", self.name, exc)
            return
        if not raise_on_failure:
            log.warning("sink %r: re-sending %d firing alert(s) failed: %s", self.name, len(alerts),
                        "; ".join(map(str, errors)))
            return
        retryable = any(e.retryable for e in errors)
        if not retryable:
            log.error("sink %r: Alertmanager refused the alerts: %s", self.name, "; ".join(map(str, errors)))
        raise DeliveryError("; ".join(map(str, errors)), retryable=retryable)

    def _post(self, url: str, body: bytes) -> None:
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with self._opener.open(req, timeout=self.options.timeout / 1e9) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace").strip()
            self.stats.inc("lgf_alertmanager_posts_total", sink=self.name, url=url, result=str(exc.code))
            raise DeliveryError(f"Alertmanager {url} answered HTTP {exc.code}: {detail}",
                                retryable=exc.code >= 500 or exc.code in (408, 429)) from None
        except ValueError as exc:  # urllib refusing the URL itself
            self.stats.inc("lgf_alertmanager_posts_total", sink=self.name, url=url, result="bad_url")
            raise DeliveryError(f"bad Alertmanager URL {url}: {exc}", retryable=False) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            self.stats.inc("lgf_alertmanager_posts_total", sink=self.name, url=url, result="connect")
            raise DeliveryError(f"cannot reach Alertmanager {url}: {getattr(exc, 'reason', exc)}",
                                retryable=True) from None
        self.stats.inc("lgf_alertmanager_posts_total", sink=self.name, url=url, result="ok")


def _latency_page(config) -> str:
    http = (getattr(config, "sections", None) or {}).get("http")
    listen = getattr(http, "listen", "") or "127.0.0.1:9464"
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/ui"


@hookimpl
def lgf_components():
    return [Component("sink", "alertmanager", AlertmanagerSink, AlertmanagerOptions,
                      "Send alerts to Prometheus Alertmanager (v2 API, every HA peer): firing, re-sent, resolved.")]
