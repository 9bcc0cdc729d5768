"""lgf's local HTTP endpoints: ``/debug/latency``, ``/metrics`` and the silence API.

    GET    /debug/latency[?limit=N]   recent stall windows and alerts, JSON (AlertEngine.recent);
                                      HTML (the latency page, lgf.ui) when the client asks for text/html
    GET    /ui                        the latency page: heat maps, stalls with stacks, alerts, silences
    GET    /metrics                   Prometheus text format (prometheus-client)
    GET    /api/silences              active silences
    POST   /api/silences              {"matchers": ["cause=lock"], "duration": "2h" | "until": RFC 3339,
                                       "comment": "...", "created_by": "..."} -> 201 and the silence
    DELETE /api/silences/ID           expire a silence now
    POST   /api/silences/ID/approve   approve a pending silence (approver role, not who asked for it)
    POST   /api/deploys               {"service": "checkout"}: start its "silence after deploy" window
    POST   /api/loadtests             {"service": "checkout"}: start its "silence after load test" window
    GET    /api/baselines             every live (service, cause) baseline with μ, σ, z (lgf.baselines)
    POST   /api/alertmanager          Alertmanager's webhook notification (operator role): sent on
                                      through this lgf's alert sinks, once (lgf.relay)

``[http] listen`` defaults to ``127.0.0.1:9464``: loopback only unless configured. Who may read,
change and approve is decided by ``lgf.roles`` (viewer, operator, approver; tokens from
``LGF_TOKEN_<ROLE>_<NAME>``, ``[http] token_file`` or the older ``[http] token_env``); every change
is logged with who made it. Tokens are never logged.

``/metrics`` is computed on each scrape (a custom collector, nothing cached): stall duration
histograms per cause and service from the sources' BPF histograms (``source.histograms()``, so
stalls under the threshold are counted too), every counter and gauge in ``ctx.stats`` (events,
alerts, silenced, per-sink delivery results and queue depth, plugin errors ... whatever the parts
of lgf count), the sources' own counters and ring-buffer losses, and the runtime counters of each
traced process. The stall series are per cause, namespace, service and stall kind, never per
process or pod (their labels stay bounded by what is deployed, not by restarts): the service and
namespace are the ones its alerts carry (``lgf.identity``, ``lgf.kubernetes``; namespace "" outside
Kubernetes). When
a process exits, its source folds its counts into its service's series (``lgf.histories``), so a
series keeps its labels for its whole life, never goes down, and a restarted service continues it.
Cost per scrape: one read of each source's BPF histogram map plus one
``runtime_counters(pid)`` per traced process; nothing per event.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from .components import member
from .config import HttpOptions
from .drift import metric_families as baseline_metric_families
from .environments import policy_of
from .roles import Guard, Refusal, TokenFileError, audit

log = logging.getLogger("lgf.http")

def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


# --- /metrics ---------------------------------------------------------------------------------------

_NAME_OK = re.compile(r"[^a-zA-Z0-9_:]")
MAX_NAMED = 10_000
"""Processes (by comm and executable) whose names /metrics remembers for their series."""


def _metric_name(name: str) -> str:
    name = _NAME_OK.sub("_", name)
    return name if name.startswith("lgf_") else "lgf_" + name


class LgfCollector:
    """A prometheus-client collector over ``Stats``, the sources and the alert engine."""

    def __init__(self, stats, sources, engine):
        self.stats, self.sources, self.engine = stats, sources, engine
        self._named: dict[tuple[str, str], tuple[str, str]] = {}
        """(comm, exe) -> (service, namespace) last seen for a live process (:meth:`_service`)."""

    def collect(self):
        from prometheus_client.core import HistogramMetricFamily, Metric

        emitted: set[str] = set()
        yield from self._histograms(HistogramMetricFamily, emitted)
        for name, rows in sorted(self.stats.snapshot().items()):
            base = _metric_name(name)
            kinds = {kind for _, _, kind in rows}
            if "counter" in kinds:
                base = base.removesuffix("_total")
                m = Metric(base, f"lgf counter {name}", "counter")
                for labels, value, _ in rows:
                    m.add_sample(base + "_total", {k: str(v) for k, v in labels.items()}, value)
            else:
                m = Metric(base, f"lgf gauge {name}", "gauge")
                for labels, value, _ in rows:
                    m.add_sample(base, {k: str(v) for k, v in labels.items()}, value)
            emitted.add(base)
            yield m
        yield from self._source_counters(Metric, emitted)
        if self.engine is not None:
            g = Metric("lgf_silences_active", "Silences currently in force", "gauge")
            g.add_sample("lgf_silences_active", {}, len(self.engine.silences.list()))
            yield g
            g = Metric("lgf_alert_groups_open", "Alert groups waiting for their report interval", "gauge")
            g.add_sample("lgf_alert_groups_open", {}, len(self.engine.groups))
            yield g
            yield from baseline_metric_families(self.engine)

    def _histograms(self, family_cls, emitted):
        """BPF log2 histograms -> one Prometheus histogram per (cause, service, stall)."""
        from lgf.causes import cause_of

        merged: dict[tuple[str, str, str, str], list[int]] = {}
        for src in self.sources:
            if (histograms := member(src, "source", "histograms")) is None:
                continue
            try:
                hists = histograms()
            except Exception as exc:  # a source's bug must not break the scrape
                self.stats.inc("lgf_http_errors_total", what="histograms")
                log.error("histograms() of %s failed: %s", type(src).__name__, exc)
                continue
            for h in hists:
                labels = h.get("labels", {})
                stall = labels.get("stall", "")
                cause = cause_of(stall, labels.get("wait_reason", ""), labels.get("syscall", "")) or "unknown"
                service, namespace = self._service(labels.get("comm", ""), labels.get("exe", ""),
                                                   labels.get("pid", ""))
                slots = merged.setdefault((cause, namespace, service, stall), [])
                for i, n in enumerate(h.get("log2_us", [])):
                    if i >= len(slots):
                        slots.append(0)
                    slots[i] += int(n)
        if not merged:
            return
        fam = family_cls("lgf_stall_duration_seconds",
                         "Stall durations from the BPF log2 histograms (all stalls, under the threshold "
                         "too); BPF slot i is [2^(i-1), 2^i) us (bcc's bpf_log2l), so le is 2^i us; _sum is "
                         "estimated from bucket midpoints",
                         labels=["cause", "namespace", "service", "stall"])
        for (cause, namespace, service, stall), slots in sorted(merged.items()):
            buckets, running, total = [], 0, 0.0
            for i, n in enumerate(slots):
                running += n
                total += n * 0.75 * (2**i) / 1e6  # midpoint of [2^(i-1), 2^i)
                buckets.append((repr((2**i) / 1e6), running))
            buckets.append(("+Inf", running))
            fam.add_metric([cause, namespace, service, stall], buckets, total)
        emitted.add("lgf_stall_duration_seconds")
        yield fam

    def _service(self, comm: str, exe: str, pid: str = "") -> tuple[str, str]:
        """(service, namespace) of a histogram row's process, as its alerts name it. A row of an
        exited process (``pid`` "", ``lgf.histories``) keeps the names its process had, by comm
        and executable: its series must not change labels when the process exits."""
        if self.engine is None:
            return comm, ""
        if not str(pid).isdigit():
            hit = self._named.get((comm, exe))
            if hit is not None:
                return hit
            return self.engine.service_of_process(comm, exe, 0)
        named = self.engine.service_of_process(comm, exe, int(pid))
        if len(self._named) < MAX_NAMED or (comm, exe) in self._named:
            self._named[(comm, exe)] = named
        return named

    def _source_counters(self, metric_cls, emitted):
        lost = metric_cls("lgf_ringbuf_lost", "Events the BPF ring buffer dropped, by source", "counter")
        own = metric_cls("lgf_source", "Each source's own counters (source.stats())", "gauge")
        runtime = metric_cls("lgf_go_runtime", "Runtime counters of each traced Go process", "gauge")
        seen_pids: set[str] = set()
        for i, src in enumerate(self.sources):
            name = member(src, "source", "name") or f"{type(src).__name__}[{i}]"
            counters = {}
            if (own_stats := member(src, "source", "stats")) is not None:
                try:
                    counters = own_stats() or {}
                except Exception:  # counted; the rest of the scrape still works
                    self.stats.inc("lgf_http_errors_total", what="source_stats")
            for key, value in counters.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    if key == "ringbuf_lost":
                        lost.add_sample("lgf_ringbuf_lost_total", {"source": name}, value)
                    else:
                        own.add_sample("lgf_source", {"source": name, "counter": key}, value)
            if (member(src, "source", "runtime_counters") is not None
                    and member(src, "source", "histograms") is not None):
                try:
                    pids = {h.get("labels", {}).get("pid") for h in src.histograms()} - {None, ""}
                except Exception:
                    pids = set()
                for pid in sorted(pids - seen_pids):
                    seen_pids.add(pid)
                    try:
                        rc = src.runtime_counters(int(pid)) or {}
                    except Exception:  # the process may have exited between the two reads
                        continue
                    for key, value in rc.items():
                        runtime.add_sample("lgf_go_runtime", {"pid": str(pid), "counter": key}, value)
        for m in (lost, own, runtime):
            if m.samples and m.name not in emitted:
                yield m


# --- the server ------------------------------------------------------------------------------------

class HttpServer:
    """The endpoints above on a background thread.

    ``start()`` binds; if the address is taken it logs why, counts ``lgf_http_errors_total{what="bind"}``
    and returns with ``running`` False: lgf keeps tracing without its endpoints.
    """

    def __init__(self, config, engine, stats, sources=(), history=None, relay=None):
        opts = (getattr(config, "sections", {}) or {}).get("http") or HttpOptions()
        self.options: HttpOptions = opts
        self.engine, self.stats, self.sources = engine, stats, sources
        self.history = history
        """The stalls the latency page draws (``lgf.ui.StallHistory``), the host's; None: none."""
        self.relay = relay
        """Takes Alertmanager's notifications (``lgf.relay.Relay``), the host's; None: 503."""
        try:
            self.guard = Guard.from_options(opts, policy_of(config))
        except TokenFileError as exc:  # fail closed: nobody may change anything, reading still works
            log.error("http: %s; changes through the API are refused until it is fixed", exc)
            self.guard = Guard({}, loopback_changes=False)
        self.spool_dir = config.host.spool_dir
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def address(self) -> tuple[str, int]:
        return self._server.server_address[:2]

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def start(self) -> None:
        if not self.options.enabled:
            return
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(LgfCollector(self.stats, self.sources, self.engine))
        host, port = _split_listen(self.options.listen)
        try:
            self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        except OSError as exc:  # tracing matters more than its dashboards: say so and carry on
            self.stats.inc("lgf_http_errors_total", what="bind")
            log.error("http: cannot listen on %s: %s (set [http] listen, or enabled = false)",
                      self.options.listen, exc.strerror or exc)
            return
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="lgf-http", daemon=True)
        self._thread.start()
        log.info("http: listening on %s (/debug/latency, /metrics, /api/silences, /api/alertmanager)", self.url)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _handler_for(server: HttpServer):
    class Handler(BaseHTTPRequestHandler):
        server_version = "lgf"

        def log_message(self, fmt, *args):  # requests go to debug, never to stderr
            log.debug("http: %s %s", self.address_string(), fmt % args)

        # -- plumbing --
        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, obj) -> None:
            self._send(code, (json.dumps(obj, ensure_ascii=False) + "\n").encode())

        def _body(self) -> dict:
            n = int(self.headers.get("Content-Length") or 0)
            data = json.loads(self.rfile.read(n) or b"{}") if n else {}
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            return data

        def _may(self, role: str):
            """The caller (``lgf.roles.Identity``) if it has ``role``; else None, once 401/403 is answered."""
            who = server.guard.authorize(self.headers.get("Authorization", ""), self.client_address[0], role)
            if isinstance(who, Refusal):
                self._json(who.code, {"error": who.message})
                return None
            return who

        def _may_change(self, role: str = "operator") -> bool:
            self.identity = self._may(role)
            return self.identity is not None

        def _silences_or_503(self):
            if server.engine is None:
                self._json(503, {"error": "no alert engine in this run"})
                return None
            return server.engine.silences

        def _store_for_change(self, path: str, known: bool, role: str = "operator"):
            """The silence store for a POST or DELETE, or None once the refusal was answered.

            In this order: 404 for an unknown path (before asking who is calling), 401/403 when
            the caller may not change anything, 503 when this run has no alert engine.
            """
            if not known:
                self._json(404, {"error": f"no such endpoint: {path}"})
                return None
            if not self._may_change(role):
                return None
            return self._silences_or_503()

        # -- routes --
        def do_GET(self):
            url = urlsplit(self.path)
            if self._may("viewer") is None:
                return
            from .ui.http import respond, wants_html
            if wants_html(url.path, self.headers.get("Accept", ""), url.query):
                self._send(*respond(server.engine, server.history, url.query, server.sources))
            elif url.path == "/metrics":
                from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
                self._send(200, generate_latest(server.registry), CONTENT_TYPE_LATEST)
            elif url.path == "/debug/latency":
                if server.engine is None:
                    self._json(503, {"error": "no alert engine in this run"})
                    return
                q = parse_qs(url.query)
                try:
                    limit = int(q.get("limit", [server.options.recent_limit])[0])
                except ValueError:
                    self._json(400, {"error": "limit must be an integer"})
                    return
                self._json(200, server.engine.recent(limit))
            elif url.path == "/api/silences":
                store = self._silences_or_503()
                if store is not None:
                    self._json(200, {"silences": [s.to_dict() for s in store.list()]})
            elif url.path == "/api/baselines":
                drift = getattr(server.engine, "drift", None)
                store = getattr(drift, "store", None)
                series = [{"service": svc, "cause": cause, **store.grade(svc, cause, drift.policy.sigma_scale)}
                          for svc, cause in store.live_series()] if store is not None else []
                self._json(200, {"enabled": store is not None, "series": series})
            elif url.path == "/":
                self._json(200, {"endpoints": ["/debug/latency", "/ui", "/metrics", "/api/silences", "/api/deploys",
                                               "/api/loadtests", "/api/baselines", "/api/alertmanager"]})
            else:
                self._json(404, {"error": f"no such endpoint: {url.path}"})

        def do_POST(self):
            path = urlsplit(self.path).path
            approve = re.fullmatch(r"/api/silences/([\w-]+)/approve", path)
            if approve:
                self._approve(path, approve.group(1))
                return
            if path == "/api/alertmanager":
                self._relay()
                return
            store = self._store_for_change(path, path in ("/api/silences", "/api/deploys", "/api/loadtests"))
            if store is None:
                return
            who = self.identity
            try:
                body = self._body()
                if path in ("/api/deploys", "/api/loadtests"):
                    self._quiet_window(path, body, who)
                    return
                matchers = body.get("matchers")
                if not isinstance(matchers, list) or not all(isinstance(m, str) for m in matchers):
                    raise ValueError("matchers: required, a list of strings like \"cause=lock\"")
                # A token says who asks; only an unauthenticated (dev/test loopback) caller names itself.
                by = who.name if who.via == "token" else str(body.get("created_by") or who.name)
                s = store.add(matchers, duration=str(body.get("duration") or ""),
                              until=str(body.get("until") or ""), comment=str(body.get("comment") or ""),
                              created_by=by, pending=server.engine.policy.approval)
            except ValueError as exc:  # bad JSON or a bad silence: the caller's mistake, said plainly
                self._json(400, {"error": str(exc)})
                return
            server.stats.inc("lgf_silences_added_total")
            audit(server.spool_dir, who, "silence.add", silence=s.id, matchers=s.matchers, expires=s.to_dict()["expires"],
                  pending=s.pending, comment=s.comment)
            self._json(201, s.to_dict())

        def _relay(self) -> None:
            """Alertmanager's webhook (``lgf.relay``): operator role, as every other change."""
            if not self._may_change("operator"):
                return
            if server.relay is None:
                self._json(503, {"error": "this lgf relays no Alertmanager notifications"})
                return
            try:
                n = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(n) or b"null")
            except ValueError as exc:
                self._json(400, {"error": f"not JSON: {exc}"})
                return
            try:
                code, answer = server.relay.receive(payload)
            except Exception as exc:  # a sink's queue could not take it: Alertmanager retries
                log.exception("relay: notification not taken")
                self._json(503, {"error": f"not queued: {type(exc).__name__}: {exc}"})
                return
            self._json(code, answer)

        def _quiet_window(self, path: str, body: dict, who) -> None:
            service = body.get("service")
            if not isinstance(service, str) or not service:
                raise ValueError("service: required")
            if path == "/api/deploys":
                server.engine.mark_deploy(service)
                audit(server.spool_dir, who, "deploy", service=service)
                self._json(202, {"service": service, "silence_after_deploy_ns":
                                 server.engine.policy.silence_after_deploy})
            else:
                server.engine.mark_loadtest(service)
                audit(server.spool_dir, who, "loadtest", service=service)
                self._json(202, {"service": service, "silence_after_loadtest_ns":
                                 server.engine.policy.silence_after_loadtest})

        def _approve(self, path: str, silence_id: str) -> None:
            store = self._store_for_change(path, True, role="approver")
            if store is None:
                return
            try:
                s = store.approve(silence_id, self.identity.name)
            except PermissionError as exc:
                self._json(403, {"error": str(exc)})
                return
            if s is None:
                self._json(404, {"error": "no such active silence"})
                return
            audit(server.spool_dir, self.identity, "silence.approve", silence=s.id, asked_by=s.created_by)
            self._json(200, s.to_dict())

        def do_DELETE(self):
            path = urlsplit(self.path).path
            store = self._store_for_change(path, path.startswith("/api/silences/"))
            if store is None:
                return
            s = store.expire(path.rsplit("/", 1)[1])
            if s is None:
                self._json(404, {"error": "no such active silence"})
            else:
                audit(server.spool_dir, self.identity, "silence.expire", silence=s.id)
                self._json(200, s.to_dict())

    return Handler
