"""Alert policy: many stalls -> few alerts an on-call engineer can act on.

Shape the pipeline relies on (``lgf.pipeline``)::

    engine = AlertEngine(config, stats, clock=time.monotonic_ns)
    engine.observe(event)        # every classified stall: sets env, tags, topology, severity,
                                 # extra["service"]; adds it to its stall window and alert group
    engine.due(now_ns)           # -> [Event(kind="alert")] whose report interval has closed;
                                 # silenced ones are removed and counted. due(2**63 - 1) flushes all
    engine.recent()              # -> dict for /debug/latency: recent windows and alerts
    engine.silences              # the SilenceStore the HTTP silence API edits
    engine.mark_deploy(service)  # start that service's "silence after deploy" window now
    engine.mark_loadtest(service)  # start that service's "silence after load test" window now
    engine.close()               # write the baselines' minute in progress (lgf.drift)
    engine.retune(new_config)    # a reload: new settings, same open groups, windows, silences
    engine.use_journal(journal)  # keep open groups' stalls on disk (lgf.journal), from now on
    engine.commit()              # the pipeline, after each batch: the journal writes its stalls
    engine.delivered(alert_ids)  # the pipeline, once alerts are in every sink's queue

Grouping: stalls at or over the environment's threshold are grouped by ``[alerts] group_by``
(default: service, cause and top user frame). A group opens at its first stall and closes
``[lgf] report_interval`` later; then it becomes one alert carrying the count, worst and total
stall time, distinct processes and goroutines (in ``extra``), the worst stall's stack as the
example, tags and topology from the config, a fresh ``id``, the worst stall's ``trace_id``,
``span_id`` and pprof ``labels`` (empty when lgf could not know them: an id is never made up),
and a severity. The ids are never borrowed from another stall of the group: the example's stack,
duration, labels, request and trace all describe one stall, so the trace an on-call engineer
opens is the request that waited that long there. When the worst stall's request carried no
trace, the alert has none even if other stalls of its group did (one slow request without a
``traceparent`` can be the worst of a group of traced ones, e.g. one waiting behind a traced
request's lock); those stalls keep their own ids in the events and in ``/debug/latency``.

Service names, in the order Grafana Beyla documents: the first ``[alerts] services`` pattern that
matches; else ``OTEL_SERVICE_NAME``, then ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``
(``otel_service``, ``lgf.identity``); else the pod's ``app.kubernetes.io/name``, then ``app``
label (``app_label``); else the name of the pod's owner (``owner_name``: the Deployment,
StatefulSet, DaemonSet...; ``lgf.kubernetes``); else the binary's main module
(``lgf.golang.service``); else comm.

Environments (``[lgf] env`` = dev | test | prod | a name of the user's; ``lgf.environments``)
pick the threshold and the severity cut-offs (``[environments.prod] warning = "100ms" critical =
"1s"``) and quiet windows: alerts of a service whose binary changed (a new ``build_id`` seen for
it, or ``mark_deploy``) are held back for ``silence_after_deploy`` (dev: 2 h), those of a service
under a load test (``mark_loadtest``) for ``silence_after_loadtest`` (test: 30 min), counted as
silenced with ``reason="deploy"`` / ``"loadtest"``.

Baselines (``lgf.drift``, ``lgf.baselines``): every stall also feeds its (service, cause)
baseline; once a series has enough history its alerts carry ``baseline`` (μ, σ, z) and are sent
only when z reaches the environment's ``drift_z``, even if every stall was under the threshold.

Cost: per stall, a dict look-up and a few additions; memory is bounded by ``max_groups`` open
groups (further groups merge into one ``(overflow)`` group and are counted), the windows ring and
the recent-alerts ring.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from .drift import Drift
from .environments import DEFAULT_POLICIES, EnvironmentsOptions, EnvPolicy  # noqa: F401 (re-exported)
from .event import Event, wallclock_of
from .golang.service import default_service
from .identity import EVENT_KEYS
from .incidents import describe_key, incident_key
from .options import Duration
from .silences import SilencesOptions, SilenceStore
from .windows import StallWindows

log = logging.getLogger("lgf.alerts")

IDENTITY_KEYS = EVENT_KEYS
"""The worst stall's process identity (``lgf.identity``), carried onto its alert."""
PEER_KEYS = ("caller", "waited_on")
"""Whom the worst stall served and what it waited on (``lgf.plugins.peer``), carried onto its alert."""
DEFAULT_GROUP_BY = ("service", "cause", "top_frame")
GROUP_FIELDS = ("service", "cause", "top_frame", "pid", "comm", "exe", "wait_reason", "syscall", "env")
MAX_PIDS_LISTED = 32
OVERFLOW_KEY = ("(overflow)",)


# --- options ------------------------------------------------------------------------------------

@dataclass
class AlertsOptions:
    """``[alerts]``: how stalls are grouped and labelled."""

    group_by: list[str] = field(default_factory=lambda: list(DEFAULT_GROUP_BY))
    services: dict = field(default_factory=dict)
    """Service name -> regular expression on the process name, then on the executable path
    (``checkout = "^checkout"``). A process no pattern matches is named as OpenTelemetry names it:
    ``OTEL_SERVICE_NAME`` in its environment, else ``service.name`` in its
    ``OTEL_RESOURCE_ATTRIBUTES``; else by its pod's ``app.kubernetes.io/name`` label, then its
    ``app`` label, then its pod's owner (Deployment, StatefulSet, DaemonSet: ``[kubernetes]``);
    else by its binary's main module path, last element (``github.com/acme/checkout`` ->
    ``checkout``, read from the running file even when deleted since or in a container), else
    its comm (Grafana Beyla's order)."""
    tags: dict = field(default_factory=dict)
    """Added to every event and alert (``team = "payments"``)."""
    topology: dict = field(default_factory=dict)
    """Where this host sits (``region``, ``cluster``...); ``host`` is filled in when absent.
    ``path = ["api-gw", "order-svc", "inventory-svc"]``: the services a request passes through to
    reach this one, in order (the design's topoPosition); WeCom shows it as ``a → b → c``."""
    repeat_interval: Duration = Duration(0)
    """Do not send the same group again within this; repeats are counted and reported in the next
    alert as ``suppressed_repeats``. 0 = send every interval."""
    max_groups: int = 10000
    recent_alerts: int = 256
    recent_windows: int = 1024
    stack_frames: int = 32
    """Frames kept in an alert's example stack."""

    def __post_init__(self):
        bad = [f for f in self.group_by if f not in GROUP_FIELDS]
        if bad:
            raise ValueError(f"group_by: unknown field(s) {bad}; choose from {', '.join(GROUP_FIELDS)}")
        path = self.topology.get("path")
        if path is not None and (not isinstance(path, list) or not all(isinstance(p, str) and p for p in path)):
            raise ValueError('topology.path: must be a list of service names, e.g. '
                             'path = ["api-gw", "order-svc", "inventory-svc"]')
        for name, rx in self.services.items():
            try:
                re.compile(str(rx))
            except re.error as exc:
                raise ValueError(f"services.{name}: bad regular expression: {exc}") from None


# --- groups ---------------------------------------------------------------------------------------

def top_frame_of(event: Event) -> str:
    """The first user frame: the symbolizer's summary, else the first non-runtime stack frame."""
    if event.stack_summary:
        return event.stack_summary[0]
    for frame in event.stack:
        func = frame.get("func", "")
        if func and not func.startswith(("runtime.", "internal/")):
            return func
    return ""


@dataclass(slots=True)  # its counters are read and written for every stall
class Group:
    key: tuple
    opened_ns: int
    service: str
    start_ns: int = 2**63 - 1
    end_ns: int = 0
    count: int = 0
    worst_ns: int = 0
    total_ns: int = 0
    worst: Event | None = None
    pids: set = field(default_factory=set)
    goroutines: set = field(default_factory=set)
    """Distinct goroutines, each ``pid << 64 | goid`` (a goid is 64 bits), at most 4096."""

    def add(self, event: Event) -> bool:
        """Count ``event`` in; True when it is the group's worst stall now (the journal then keeps
        it in full: the alert is made of it)."""
        if self.take(event.pid, event.goid, event.start_ns, event.end_ns, event.duration_ns):
            self.worst = event
            return True
        return False

    def take(self, pid: int, goid: int, start_ns: int, end_ns: int, duration: int) -> bool:
        """The counters of one stall (:meth:`add`'s, or a journaled stall's when the group is made
        again after a crash, ``AlertEngine.restore_group``); True when it is the longest so far."""
        worst = self.count == 0 or duration > self.worst_ns
        self.count += 1
        self.total_ns += duration
        if start_ns < self.start_ns:
            self.start_ns = start_ns
        if end_ns > self.end_ns:
            self.end_ns = end_ns
        if worst:
            self.worst_ns = duration
        if len(self.pids) < MAX_PIDS_LISTED:
            self.pids.add(pid)
        if len(self.goroutines) < 4096:
            self.goroutines.add(pid << 64 | goid)  # (pid, goid) as one int: no tuple to make and hash
        return worst


# --- the engine -----------------------------------------------------------------------------------

class AlertEngine:
    def __init__(self, config, stats, clock=time.monotonic_ns, wall_clock=time.time, journal=None):
        """``journal``: an ``lgf.journal.AlertJournal`` keeping open groups' stalls on disk, or
        None (in memory only); the host gives it later with :meth:`use_journal`, once it opened it."""
        sections = getattr(config, "sections", {}) or {}
        self.stats = stats
        self.clock = clock
        self._lock = threading.Lock()
        self.topology: dict = {"host": socket.gethostname()}
        self._settings(config)
        silences: SilencesOptions = sections.get("silences") or SilencesOptions()
        self.silences = SilenceStore(config.host.spool_dir, silences.rules)
        self.windows = StallWindows(config.host.window, self.options.recent_windows)
        self.recorded = False
        """The stalls come from a recording (``lgf replay``): a stall's pid names no process of this
        host, so a service is never named from the process that holds that pid here now."""
        self.keep_windows = True
        """Whether stalls go into :attr:`windows`, which only ``/debug/latency`` and the latency
        page read (:meth:`recent`): the host turns it off where it serves no HTTP (a replay, an
        lgf without ``[http]``), a stall then costs no window bookkeeping."""
        self.groups: dict[tuple, Group] = {}
        self.recent_alerts: deque[dict] = deque(maxlen=self.options.recent_alerts)
        self._build_ids: dict[str, str] = {}
        self._deploys: dict[str, int] = {}
        self._loadtests: dict[str, int] = {}
        self.drift = Drift(config, self.policy, stats, wall_clock)
        self._last_sent: dict[tuple, int] = {}
        self._suppressed: dict[tuple, int] = {}
        self.journal = journal
        """``lgf.journal.AlertJournal`` keeping open groups' stalls on disk, or None (:meth:`use_journal`)."""
        self.identities = None
        """``lgf.identity.ProcessIdentities`` of the host's processes, for the callers that name a
        process by its pid alone (``/metrics``: :meth:`service_of_process`); None: none known."""

    def _settings(self, config) -> None:
        """Take the config's settings: ``[alerts]``, ``[environments]``, ``[lgf] env, threshold,
        report_interval``. The one place both :meth:`__init__` and :meth:`retune` read them."""
        sections = getattr(config, "sections", {}) or {}
        self.env = config.host.env
        self.options: AlertsOptions = sections.get("alerts") or AlertsOptions()
        envs: EnvironmentsOptions = sections.get("environments") or EnvironmentsOptions()
        if self.env not in envs.policies:
            log.warning("[lgf] env = %r names no environment: using prod's thresholds", self.env)
        self.policy = envs.policy(self.env)
        self.threshold_ns = self.policy.threshold or config.host.threshold
        self.report_interval_ns = config.host.report_interval
        self.tags = dict(self.options.tags)
        self.topology = {"host": self.topology.get("host", ""), **self.options.topology}
        self._services = [(name, re.compile(str(rx))) for name, rx in self.options.services.items()]
        self._default_grouping = tuple(self.options.group_by) == DEFAULT_GROUP_BY
        self._service_cache: dict[tuple[str, str], str] = {}

    def retune(self, config) -> None:
        """Take a new config's settings (a reload), keeping the policy's state: open groups, stall
        windows, recent alerts, run-time silences, learnt baselines, known deploys. Changed: what
        :meth:`_settings` reads, the window length, the config's silences, the policy the
        baselines grade by. A group opened under the old grouping closes and alerts as it would
        have."""
        rules = ((getattr(config, "sections", {}) or {}).get("silences") or SilencesOptions()).rules
        with self._lock:
            self._settings(config)
            self.drift.policy = self.policy  # the baselines keep what they learnt; they grade by the new policy
            self.windows.window_ns = config.host.window
            self.silences.replace_rules(rules)

    def use_journal(self, journal) -> None:
        """Keep the stalls of open groups in ``journal`` (``lgf.journal.AlertJournal``) from now on:
        each stall a group takes is added to it, each tick's closed groups are written to it in one
        transaction. The host calls this once it opened the journal, before ``lgf.journal.recover``."""
        with self._lock:
            self.journal = journal

    def commit(self) -> None:
        """Write the stalls the groups took since the last commit (one transaction; the pipeline
        calls it once per batch, before any sink sees the batch). Nothing without a journal."""
        if self.journal is not None:
            self.journal.commit()

    def delivered(self, alert_ids) -> None:
        """These alerts were handed to every sink: the journal no longer keeps them."""
        if self.journal is not None:
            self.journal.delivered(alert_ids)

    # -- per stall -------------------------------------------------------------------------

    def service_of(self, event: Event) -> str:
        """The service name of ``event``'s process: the first ``[alerts] services`` pattern that
        matches its comm or executable, else the name its OpenTelemetry environment declares
        (``otel_service``, put there by ``lgf.identity``), else its pod's app label, else its
        pod's owner, else its main module's name, else comm (the module docstring)."""
        extra = event.extra
        # The cache key takes the declared names as they are (made into text only on a miss): a
        # stall costs a tuple and a look-up.
        key = (event.comm, event.exe or event.pid, extra.get("otel_service"), extra.get("app_label"),
               extra.get("owner_name"))
        try:
            name = self._service_cache.get(key)
        except TypeError:  # a declared value that cannot be a key (a list): named without the cache
            key = name = None
        if name is None:
            declared = [str(d or "") for d in key[2:]] if key is not None else [
                str(extra.get(k) or "") for k in ("otel_service", "app_label", "owner_name")]
            name = next((svc for svc, rx in self._services
                         if rx.search(event.comm) or (event.exe and rx.search(event.exe))), None)
            if name is None:
                # A recorded stall's pid is another host's or another time's: not this host's /proc.
                pid = 0 if self.recorded else event.pid
                name = next((d for d in declared if d), "") or default_service(pid, event.exe, event.comm)
            if key is not None and len(self._service_cache) < 100_000:
                self._service_cache[key] = name
        return name

    def service_of_process(self, comm: str, exe: str, pid: int) -> tuple[str, str]:
        """(service, namespace) of a process known by comm, executable and pid (``/metrics``):
        named from its identity (:attr:`identities`) as its stalls are."""
        event = Event(comm=comm, exe=exe, pid=pid)
        if self.identities is not None and pid:
            try:
                self.identities.apply(event)
            except Exception:  # noqa: BLE001 - an unreadable /proc entry: named without it
                log.debug("cannot read the identity of pid %d", pid, exc_info=True)
        return self.service_of(event), str(event.extra.get("namespace") or "")

    def _derive_path(self, event: Event, service: str) -> None:
        """The topoPosition lgf saw (``lgf.plugins.peer``): ``topology.path`` becomes
        ``[alerts.topology] path`` (the hops lgf cannot see), then the caller of the request the
        stall served, this service, and what it waited on; each peer named as a service when it is
        a process on this host (``service`` added to ``caller`` / ``waited_on``), else by its
        address (a caller's without its port, which is ephemeral: one hop per client host)."""
        ends = [event.extra.get(k) for k in PEER_KEYS]
        if not (isinstance(ends[0], dict) or isinstance(ends[1], dict)):
            return
        names = []
        for end in ends:
            if not isinstance(end, dict):
                names.append("")
                continue
            if end.get("pid") and not end.get("self"):
                end["service"] = self.service_of(Event(pid=int(end["pid"]), comm=str(end.get("comm") or ""),
                                                       exe=str(end.get("exe") or "")))
            names.append(str(end.get("service") or end.get("addr") or ""))
        caller, waited = names
        if caller and not (ends[0] or {}).get("service"):  # a client's port is ephemeral: its host only
            caller = caller.rsplit(":", 1)[0].strip("[]")
        path = [str(h) for h in self.options.topology.get("path") or []]
        if caller and (not path or path[-1] != caller):
            path.append(caller)
        path.append(service)
        if waited:
            path.append(waited)
        event.topology = {**event.topology, "path": path}

    def severity_of(self, worst_ns: int) -> str:
        if worst_ns >= self.policy.critical:
            return "critical"
        if worst_ns >= self.policy.warning:
            return "warning"
        return "info"

    def observe(self, event: Event) -> None:
        """Label a classified stall and count it into its window and alert group."""
        for _, exc in self.observe_batch((event,)):
            raise exc

    def observe_batch(self, events) -> list[tuple[Event, Exception]]:
        """:meth:`observe` of each of ``events`` (the pipeline's batch: the clock read, the lock
        taken, the settings looked up and the journal called once for them all). Returns the
        events the policy failed on, with the error: one event's failure costs no other event
        its turn."""
        failed = []
        journaled: list[tuple[tuple, Event, bool]] = []
        below = 0
        now = self.clock()
        with self._lock:
            env, tags, topology, threshold = self.env, self.tags, self.topology, self.threshold_ns
            groups, windows, drift = self.groups, (self.windows if self.keep_windows else None), self.drift
            for event in events:
                if event.kind != "stall":
                    continue
                try:
                    # Labels: what every sink and the alert show of the stall.
                    event.env = env
                    if tags:
                        event.tags = {**tags, **event.tags}
                    # The host's own dict when the stall brings none: shared by the batch, never
                    # changed in place (_derive_path makes the stall its own).
                    event.topology = {**topology, **event.topology} if event.topology else topology
                    extra = event.extra
                    service = extra["service"] if "service" in extra else extra.setdefault(
                        "service", self.service_of(event))
                    if "caller" in extra or "waited_on" in extra:
                        self._derive_path(event, service)
                    duration = event.duration_ns
                    event.severity = self.severity_of(duration)
                    # Counted: its window, its baseline, then its alert group if it is alert material.
                    if windows is not None:
                        windows.add(event)
                    if event.build_id:
                        self._notice_deploy(service, event.build_id, now)
                    watched = drift.observe(service, event)  # an established baseline groups small stalls too
                    if duration < threshold and not watched:
                        below += 1
                        continue
                    key = self._key(event, service)
                    group = groups.get(key)
                    if group is None:
                        key, group = self._open_group(key, service, now)
                    journaled.append((key, event, group.add(event)))
                except Exception as exc:  # noqa: BLE001 - the caller counts and logs it
                    failed.append((event, exc))
            if below:
                self.stats.inc("lgf_stalls_below_alert_threshold_total", below, env=env)
            if self.journal is not None and journaled:
                self.journal.add_stalls(journaled)
        return failed

    def _open_group(self, key: tuple, service: str, now: int) -> tuple[tuple, Group]:
        """The group a stall of the new key ``key`` joins: a new one, or past ``max_groups`` the
        overflow group."""
        if len(self.groups) >= self.options.max_groups:
            self.stats.inc("lgf_alert_groups_overflow_total")
            key = OVERFLOW_KEY
            group = self.groups.get(key)
            if group is not None:
                return key, group
        group = self.groups[key] = Group(key, now, service)
        return key, group

    def restore_group(self, key: tuple, worst: Event, stalls) -> int:
        """Make the open group ``key`` again from what the alert journal kept of it after a crash
        (``lgf.journal.recover``): its stalls' counters (``lgf.journal.JournaledStall``) and its
        worst stall in full, as labelled when it was observed. Judged by the policy of now: a
        stall under the alert threshold is left out unless its series has an established
        baseline, as :meth:`observe` would. Returns the stalls taken. Stall windows and
        baselines saw these stalls before the crash and are not fed again."""
        service = str(worst.extra.get("service") or "") or self.service_of(worst)
        with self._lock:
            if not self.drift.established(service, worst.cause):
                stalls = [s for s in stalls if s.duration_ns >= self.threshold_ns]
            if not stalls:
                return 0
            group = self.groups.get(key)
            if group is None:
                group = self.groups[key] = Group(key, self.clock(), service)
            for s in stalls:
                group.take(s.pid, s.goid, s.start_ns, s.end_ns, s.duration_ns)
            if group.worst is None or worst.duration_ns >= group.worst_ns:
                group.worst, group.worst_ns = worst, max(group.worst_ns, worst.duration_ns)
            return len(stalls)

    def _key(self, event: Event, service: str) -> tuple:
        top = top_frame_of(event)
        if event.scope == "request":
            incident = incident_key(event, service, top, self.groups)
            if incident is not None:  # one slow request, one alert (lgf.incidents)
                return incident
        if self._default_grouping:  # the default group_by, without a loop over it per stall
            return (service, event.cause, top)
        return tuple([service if f == "service" else top if f == "top_frame" else getattr(event, f)
                      for f in self.options.group_by])

    # -- deploys ---------------------------------------------------------------------------

    def _notice_deploy(self, service: str, build_id: str, now: int) -> None:
        if not build_id:
            return
        known = self._build_ids.get(service)
        self._build_ids[service] = build_id
        if known is not None and known != build_id:
            self._deploys[service] = now
            self.stats.inc("lgf_deploys_seen_total", service=service)

    def mark_deploy(self, service: str, at_ns: int | None = None) -> None:
        """A deploy of ``service`` happened (the HTTP API calls this); starts its silence window."""
        with self._lock:
            self._deploys[service] = self.clock() if at_ns is None else at_ns

    def mark_loadtest(self, service: str, at_ns: int | None = None) -> None:
        """A load test of ``service`` starts (``lgf silence loadtest``); starts its quiet window."""
        with self._lock:
            self._loadtests[service] = self.clock() if at_ns is None else at_ns

    def _in_loadtest_silence(self, group: Group) -> bool:
        started = self._loadtests.get(group.service)
        window = self.policy.silence_after_loadtest
        return started is not None and window > 0 and started <= group.opened_ns < started + window

    def _in_deploy_silence(self, group: Group) -> bool:
        deployed = self._deploys.get(group.service)
        window = self.policy.silence_after_deploy
        # A group that opened up to one report interval before the deploy holds its stalls too.
        return (deployed is not None and window > 0
                and deployed - self.report_interval_ns <= group.opened_ns < deployed + window)

    # -- alerts ----------------------------------------------------------------------------

    def due(self, now_ns: int) -> list[Event]:
        """Alerts whose report interval closed by ``now_ns``; silenced ones removed and counted."""
        out = []
        with self._lock:
            self.windows.close_idle(self.clock())
            self.drift.tick()
            closed = [g for g in self.groups.values() if g.opened_ns + self.report_interval_ns <= now_ns]
            made = []
            for group in closed:
                del self.groups[group.key]
                alert = self._alert_of(group)
                made.append((group.key, alert))
                if alert is not None:
                    out.append(alert)
            if self.journal is not None and made:  # one transaction for every group this tick closed
                self.journal.close_groups(made)
        return out

    def _alert_of(self, group: Group) -> Event | None:
        if group.count < self.policy.min_count:
            self.stats.inc("lgf_alerts_below_min_count_total")
            return None
        alert = self._make_alert(group)
        if self.drift.judge(alert, group.service, group.worst_ns, self.threshold_ns):
            self.stats.inc("lgf_alerts_within_baseline_total", cause=alert.cause)
            self.recent_alerts.append({**alert.to_dict(), "held_by": "baseline"})
            return None
        record = alert.to_dict()
        if self._in_deploy_silence(group):
            return self._silence(alert, record, "deploy", "deploy")
        if self._in_loadtest_silence(group):
            return self._silence(alert, record, "loadtest", "loadtest")
        silence = self.silences.match(record)
        if silence is not None:
            return self._silence(alert, record, "silence", silence.id)
        if self.options.repeat_interval:
            last = self._last_sent.get(group.key)
            if last is not None and group.opened_ns < last + self.options.repeat_interval:
                self._suppressed[group.key] = self._suppressed.get(group.key, 0) + 1
                self.stats.inc("lgf_alerts_repeats_suppressed_total")
                return None
            self._last_sent[group.key] = group.opened_ns
            alert.extra["suppressed_repeats"] = self._suppressed.pop(group.key, 0)
            record["suppressed_repeats"] = alert.extra["suppressed_repeats"]
        self.recent_alerts.append(record)
        return alert

    def _silence(self, alert: Event, record: dict, reason: str, by: str) -> None:
        """Count and remember a held-back alert; returns None (nothing to send)."""
        self.stats.inc("lgf_alerts_silenced_total", cause=alert.cause, reason=reason)
        record["silenced_by"] = by
        self.recent_alerts.append(record)
        return None

    def _make_alert(self, group: Group) -> Event:
        w = group.worst
        top = top_frame_of(w)
        alert = Event(
            kind="alert", pid=w.pid, tid=w.tid, comm=w.comm, exe=w.exe, goid=w.goid,
            go_version=w.go_version, build_id=w.build_id, start_ns=group.start_ns, end_ns=group.end_ns,
            duration_ns=group.worst_ns, ts=wallclock_of(group.end_ns) if group.end_ns else "",
            cause=w.cause, wait_reason=w.wait_reason, syscall=w.syscall,
            stack=list(w.stack[: self.options.stack_frames]), stack_summary=list(w.stack_summary),
            gc_phase=dict(w.gc_phase), poller=dict(w.poller), sched=dict(w.sched),
            tags=dict(w.tags), topology=dict(w.topology), env=self.env,
            severity=self.severity_of(group.worst_ns), trace_id=w.trace_id, span_id=w.span_id,
            labels=dict(w.labels), source=w.source,
            scope=w.scope, http_method=w.http_method, http_path=w.http_path,
            extra={
                "service": group.service, "top_frame": top, "count": group.count,
                "worst_ns": group.worst_ns, "total_ns": group.total_ns,
                "pids": sorted(group.pids), "goroutines": len(group.goroutines),
                "example_event_id": w.id, "interval_ns": self.report_interval_ns,
                "group_by": describe_key(group.key, self.options.group_by),
                "summary": self._summary(group, top),
                **{k: w.extra[k] for k in IDENTITY_KEYS if k in w.extra},
                **{k: w.extra[k] for k in PEER_KEYS if k in w.extra},
            })
        return alert

    def _summary(self, group: Group, top: str) -> str:
        w = group.worst
        what = w.wait_reason or w.syscall or w.extra.get("stall", "")
        where = f" in {top}" if top else ""
        return (f"{group.service}: {group.count} {w.cause} stall(s){where}, worst {group.worst_ns / 1e6:.1f} ms "
                f"({what}), total {group.total_ns / 1e6:.1f} ms")

    def close(self) -> None:
        """At shutdown: keep what the baselines learnt in the minute in progress."""
        self.drift.close()

    # -- introspection ---------------------------------------------------------------------

    def recent(self, limit: int = 100) -> dict:
        """Recent stall windows and alerts (newest first, at most ``limit``; 0 = all), for ``/debug/latency``."""
        with self._lock:
            return {
                "env": self.env,
                "threshold_ns": self.threshold_ns,
                "window_ns": self.windows.window_ns,
                "report_interval_ns": self.report_interval_ns,
                "open_groups": len(self.groups),
                "windows": self.windows.recent(limit),
                "alerts": list(self.recent_alerts)[::-1][: limit or None],
                "silences": [s.to_dict() for s in self.silences.list()],
            }
