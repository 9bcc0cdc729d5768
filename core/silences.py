"""Silences: "do not send alerts that look like this until then", counted rather than forgotten.

A silence is a list of matchers and an expiry. A matcher is one string, the same in plugins.toml,
on the ``lgf silence`` command line and in the HTTP API (Alertmanager's operators)::

    cause=lock            equal              comm=~api-.*      regular expression (whole value)
    severity!=critical    not equal          tags.team!~^db    not matching

The field is any key of the alert's JSON form (``cause``, ``comm``, ``service``, ``env``,
``top_frame`` ...), with dots reaching into tables (``tags.team``, ``topology.region``). An alert
is silenced when every matcher of some active silence holds. Silences from plugins.toml
(``[silences] rules = [...]``) live as long as the config says; silences added at run time are
persisted to ``<spool_dir>/silences.json`` (written to a temporary file, then renamed, so a crash
never leaves half a file), so a restart keeps them. Expiry is wall-clock time (it must survive a
reboot); the default clock is ``time.time``. Where the environment asks for approval (prod), a
silence added at run time is ``pending`` (listed, silencing nothing) until ``approve`` by another
identity; its expiry stays the one asked for.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .options import parse_duration

MATCHER = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")
STORE_FILE = "silences.json"


def parse_matcher(text: str) -> tuple[str, str, str]:
    """``"comm=~^api-"`` -> ``("comm", "=~", "^api-")``. Raises ValueError saying the syntax."""
    m = MATCHER.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a matcher (write field=value, field!=value, "
                         "field=~regex or field!~regex)")
    name, op, value = m.groups()
    if op in ("=~", "!~"):
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{text!r}: bad regular expression: {exc}") from None
    return name, op, value


def field_of(alert: dict, name: str) -> str:
    """The alert's value at a dotted key, as text ("" when absent)."""
    value = alert
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return ""
        value = value[part]
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, dict | list) else str(value)


def matches(matchers: list[str], alert: dict) -> bool:
    for text in matchers:
        name, op, want = parse_matcher(text)
        have = field_of(alert, name)
        if op == "=":
            ok = have == want
        elif op == "!=":
            ok = have != want
        else:
            ok = re.fullmatch(want, have) is not None
            ok = ok if op == "=~" else not ok
        if not ok:
            return False
    return True


def parse_time(text: str) -> float:
    """RFC 3339 ("2026-12-01T10:00:00Z") -> Unix seconds."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def format_time(unix: float | None) -> str:
    if unix is None:
        return ""
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Silence:
    matchers: list[str]
    expires_at: float | None
    """Unix seconds; None = as long as the config that declared it."""
    comment: str = ""
    created_by: str = ""
    origin: str = "api"
    """"api" (run time, persisted), "config" (plugins.toml) or "deploy" (silence after deploy)."""
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created_at: float = field(default_factory=time.time)
    silenced: int = 0
    """Alerts this silence held back since lgf started."""
    pending: bool = False
    """Asked for but not approved yet (prod, ``lgf.environments``): it silences nothing."""
    approved_by: str = ""

    def active(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at

    def to_dict(self) -> dict:
        d = asdict(self)
        d["expires"] = format_time(self.expires_at)
        return d


@dataclass
class SilenceRule:
    """One ``[silences] rules`` entry of plugins.toml."""

    matchers: list[str]
    until: str = ""
    """RFC 3339 expiry; empty = as long as this config is in use."""
    comment: str = ""


@dataclass
class SilencesOptions:
    """``[silences]``: silences that come with the config."""

    rules: list[dict] = field(default_factory=list)
    """``[{matchers = ["cause=gc_stw", "env=dev"], until = "2026-12-31T00:00:00Z", comment = "..."}]``"""

    def __post_init__(self):
        problems = []
        for i, rule in enumerate(self.rules):
            unknown = set(rule) - {"matchers", "until", "comment"}
            if unknown:
                problems.append(f"rules[{i}]: unknown key(s) {sorted(unknown)}")
            ms = rule.get("matchers")
            if not isinstance(ms, list) or not ms or not all(isinstance(m, str) for m in ms):
                problems.append(f"rules[{i}].matchers: required, a list of strings like \"cause=lock\"")
                continue
            for j, m in enumerate(ms):
                try:
                    parse_matcher(m)
                except ValueError as exc:
                    problems.append(f"rules[{i}].matchers[{j}]: {exc}")
            if rule.get("until"):
                try:
                    parse_time(str(rule["until"]))
                except ValueError:
                    problems.append(f"rules[{i}].until: not an RFC 3339 time")
        if problems:
            raise ValueError("; ".join(problems))


class SilenceStore:
    """Active silences, from the config and from run time; thread-safe (HTTP threads add to it)."""

    def __init__(self, spool_dir: str | None, rules: list[dict] = (), clock=time.time):
        self.clock = clock
        self.path = Path(spool_dir) / STORE_FILE if spool_dir else None
        self._lock = threading.Lock()
        self._silences: dict[str, Silence] = {}
        self.replace_rules(rules)
        self._load()

    def replace_rules(self, rules: list[dict]) -> None:
        """The config's ``[silences] rules`` are now ``rules`` (a reload): the silences the old
        config brought are dropped, run-time ones (the API's, ``lgf silence``) are kept."""
        fresh = {}
        for i, rule in enumerate(rules):
            until = parse_time(rule["until"]) if rule.get("until") else None
            s = Silence(list(rule["matchers"]), until, rule.get("comment", ""), "plugins.toml", "config",
                        id=f"config-{i}")
            fresh[s.id] = s
        with self._lock:
            for sid in [sid for sid, s in self._silences.items() if s.origin == "config"]:
                del self._silences[sid]
            self._silences.update(fresh)

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        data = json.loads(self.path.read_text(encoding="utf-8"))
        now = self.clock()
        for d in data.get("silences", []):
            d.pop("expires", None)
            s = Silence(**d)
            if s.active(now):
                self._silences[s.id] = s

    def _save(self) -> None:
        """Persist the run-time silences (not config ones: the config brings those back itself)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keep = [s.to_dict() for s in self._silences.values() if s.origin == "api"]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"silences": keep}, indent=1), encoding="utf-8")
        os.replace(tmp, self.path)

    def add(self, matchers: list[str], duration: str = "", until: str = "", comment: str = "",
            created_by: str = "", origin: str = "api", pending: bool = False) -> Silence:
        """Add a silence lasting ``duration`` ("2h") or until ``until`` (RFC 3339). Raises ValueError."""
        if not matchers:
            raise ValueError("a silence needs at least one matcher")
        for m in matchers:
            parse_matcher(m)
        if bool(duration) == bool(until):
            raise ValueError("give exactly one of duration (e.g. \"2h\") or until (RFC 3339)")
        now = self.clock()
        expires = now + parse_duration(duration) / 1e9 if duration else parse_time(until)
        if expires <= now:
            raise ValueError("that silence would already be expired")
        s = Silence(list(matchers), expires, comment, created_by, origin, created_at=now, pending=pending)
        with self._lock:
            self._silences[s.id] = s
            if origin == "api":
                self._save()
        return s

    def expire(self, silence_id: str) -> Silence | None:
        """End a silence now; returns it, or None if there is no such active silence."""
        with self._lock:
            s = self._silences.get(silence_id)
            if s is None or not s.active(self.clock()):
                return None
            s.expires_at = self.clock()
            del self._silences[silence_id]
            self._save()
        return s

    def approve(self, silence_id: str, by: str) -> Silence | None:
        """Make a pending silence active; None if there is no such active silence.

        Raises PermissionError when ``by`` is who asked for it: approval needs a second person.
        """
        with self._lock:
            s = self._silences.get(silence_id)
            if s is None or not s.active(self.clock()):
                return None
            if s.pending:
                if by == s.created_by:
                    raise PermissionError(f"{by} asked for silence {silence_id}; someone else must approve it")
                s.pending, s.approved_by = False, by
                self._save()
        return s

    def list(self) -> list[Silence]:
        """Active silences, soonest expiry last."""
        now = self.clock()
        with self._lock:
            live = [s for s in self._silences.values() if s.active(now)]
        return sorted(live, key=lambda s: -(s.expires_at or float("inf")))

    def match(self, alert: dict) -> Silence | None:
        """The first active silence that holds this alert back (its counter goes up), or None."""
        now = self.clock()
        with self._lock:
            for s in self._silences.values():
                if s.active(now) and not s.pending and matches(s.matchers, alert):
                    s.silenced += 1
                    return s
        return None
