"""The ``wecom`` sink: alerts to a WeCom (企业微信) group robot, within every documented limit.

What it guarantees, with ``lgf.delivery`` around it (docs/wecom.md, "The robot API lgf speaks"):

* at most ``per_minute`` (20) messages in any minute per robot key, counted in a sliding window
  (plus a safety margin) shared by every sink of this process using the same key, and kept in
  ``[lgf] spool_dir`` so a restart does not spend the minute twice;
* contents within WeCom's UTF-8 byte limits, cut on character boundaries (``wecom_format``);
* when more alerts are pending than the minute's budget can carry one by one, they are merged
  into digest messages listing every alert id: nothing is dropped, it only arrives grouped;
* answers handled by ``errcode`` (never by ``errmsg``): -1, 45009, 5xx, timeouts and connection
  errors are retried by the queue with backoff (45009 also waits for the window); 40058 halves
  the size this sink sends and resends; 40008 and 93000 are permanent: the alerts stay on disk
  marked failed, it is logged at ERROR and counted, and for 93000 (wrong key) the whole batch
  stops at once so the API is not hammered.

The robot key is read from the environment variable ``key_env`` at start-up and appears nowhere
else: not in logs, errors, metrics or ``lgf check`` (the URL is shown as ``...?key=***``).

Metrics (label ``sink``): ``lgf_wecom_errcode_total{errcode}``, ``lgf_wecom_http_errors_total{status}``,
``lgf_wecom_messages_total{kind="alert"|"part"|"digest"}``.

Cost: one HTTPS request per message, at most 20 a minute; formatting a digest of 10,000 alerts
takes a few tens of milliseconds, once per minute at worst.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Literal

from lgf import Component, hookimpl
from lgf.clock import SystemClock
from lgf.errors import ConfigError, DeliveryError
from lgf.event import Event
from lgf.options import Duration
from lgf.stats import Stats

from .wecom_format import LIMITS, SEVERITY_ORDER, alert_messages, digest_messages, severity_of

log = logging.getLogger("lgf.sinks.wecom")

DEFAULT_URL = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"
MIN_LIMIT = 512
"""40058 halves the bytes sent per message, down to this; below it the content itself is refused."""

RETRYABLE_ERRCODES = {-1}
PERMANENT_ERRCODES = {40008: "invalid message type or malformed body", 93000: "invalid webhook key"}


@dataclass
class WeComOptions:
    """``[[sinks]] use = "wecom"``."""

    key_env: str = "LGF_WECOM_KEY"
    """Name of the environment variable holding the robot key (the key itself never goes in the file)."""
    url: str = DEFAULT_URL
    """The send endpoint, or a relay's; ``?key=`` is added by lgf."""
    msgtype: Literal["markdown", "text", "markdown_v2"] = "markdown"
    """The WeCom message type alerts are sent as."""
    mentioned_list: dict = field(default_factory=dict)
    """Severity -> user ids to mention, e.g. ``{ critical = ["@all"], warning = ["zhangsan"] }``.
    In markdown they become ``<@userid>`` (``@all`` works in text only); markdown_v2 has no mentions."""
    mentioned_mobile_list: dict = field(default_factory=dict)
    """Severity -> mobile numbers to mention (text messages only)."""
    timeout: Duration = Duration(10_000_000_000)
    """Per request; a timeout is retried (the message may then arrive twice)."""
    per_minute: int = 20
    """Messages per robot key in any minute (WeCom's limit is 20); the rest become digests."""
    window_margin: Duration = Duration(1_000_000_000)
    """Added to the minute, so clock skew between lgf and WeCom cannot push a 21st message into one."""
    stack_frames: int = 8
    """Frames of the example stack shown in a message."""

    def __post_init__(self):
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError("url: must be an http:// or https:// URL")
        if "key" in urllib.parse.parse_qs(parsed.query):
            raise ValueError("url: must not carry the key; put it in the environment variable named "
                             "by key_env")
        if not self.key_env:
            raise ValueError("key_env: must name an environment variable")
        for opt in ("mentioned_list", "mentioned_mobile_list"):
            for sev, who in getattr(self, opt).items():
                if sev not in SEVERITY_ORDER:
                    raise ValueError(f"{opt}.{sev}: not a severity (critical, warning, info)")
                if not isinstance(who, list) or not all(isinstance(w, str) for w in who):
                    raise ValueError(f"{opt}.{sev}: expected a list of strings")
        if self.timeout <= 0 or self.per_minute < 1 or self.stack_frames < 1:
            raise ValueError("timeout, per_minute and stack_frames must be positive")


def redact(url: str) -> str:
    """The URL as it may be shown: any query replaced by ``key=***``."""
    p = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((p.scheme, p.netloc, p.path, "key=***" if p.query else "", ""))


class _Outcome:
    """Collects what ``send_pending`` settled when ``send`` calls it for one event."""

    def __init__(self):
        self.ok, self.error, self.wait = False, None, 0.0

    def delivered(self, ids):
        self.ok = True

    def failed(self, ids, error):
        self.error = error

    def retry_after(self, seconds):
        self.wait = max(self.wait, seconds)


class WeComSink:
    """Posts alerts to one WeCom robot. Use behind ``lgf.delivery.Delivery`` (``send_pending``)."""

    default_receive = "alerts"
    Options = WeComOptions  # for `use = "lgf.sinks.wecom:WeComSink"`

    def __init__(self, options: WeComOptions, ctx: Any = None, clock: Any = None,
                 state_dir: str | os.PathLike | None = None):
        """``state_dir`` keeps the minute's send times across restarts; default: ``[lgf] spool_dir``."""
        self.options = options
        self.name = getattr(ctx, "name", "") or "wecom"
        self.stats: Stats = getattr(ctx, "stats", None) or Stats()
        self.clock = clock or SystemClock()
        key = os.environ.get(options.key_env, "").strip()
        if not key:
            raise ConfigError(f"{self.name}.key_env", f"environment variable {options.key_env} is not "
                                                      "set; it must hold the WeCom robot key")
        self._key = key
        self._url = f"{options.url}{'&' if '?' in options.url else '?'}key={urllib.parse.quote(key)}"
        self.shown_url = redact(self._url)
        self.limit = LIMITS[options.msgtype]
        if state_dir is None and getattr(ctx, "config", None) is not None:
            state_dir = ctx.config.host.spool_dir
        self.budget = ctx.services.robot_budgets.budget_for(options.url, key, options.per_minute,
                                                            60.0 + options.window_margin / 1e9, state_dir)
        self._opener = urllib.request.build_opener()
        if options.msgtype != "text" and (options.mentioned_mobile_list or any(
                "@all" in v for v in options.mentioned_list.values())):
            log.warning("sink %r: @all and mobile mentions work only with msgtype = \"text\"; they are "
                        "ignored for %s", self.name, options.msgtype)

    def __repr__(self) -> str:
        return f"WeComSink({self.name!r}, {self.shown_url})"

    # -- the queue's protocol ---------------------------------------------------------------------

    def send_pending(self, events: list[Event], receipt: Any) -> None:
        """Send what this minute's budget allows: one message per alert, or digests when short."""
        dicts = [e.to_dict() for e in events]
        budget = self.budget.remaining(self.clock.now())
        plan = self._plan(dicts, budget)
        for kind, contents, ids, severity in plan:
            if len(contents) > self.budget.remaining(self.clock.now()):
                break
            if not self._deliver(kind, contents, ids, severity, receipt, all_ids=[d["id"] for d in dicts]):
                break
        wait = self.budget.free_in(self.clock.now())
        if wait:
            receipt.retry_after(wait)

    def send(self, event: Event) -> None:
        """One event on its own (without the queue): raises DeliveryError when it was not delivered."""
        out = _Outcome()
        self.send_pending([event], out)
        if not out.ok:
            raise out.error or DeliveryError(f"rate limit: next send in {out.wait:.0f}s", retryable=True)

    def _plan(self, dicts: list[dict], budget: int) -> list[tuple[str, list[str], list[str], str]]:
        """``[(kind, contents, ids, severity), ...]`` in sending order."""
        if budget <= 0 or not dicts:
            return []
        if len(dicts) <= budget:
            singles = []
            for d in sorted(dicts, key=lambda d: SEVERITY_ORDER[severity_of(d)]):
                sev = severity_of(d)
                parts = alert_messages(d, self.options.msgtype, self._footer(sev), self.limit,
                                       self.options.stack_frames)
                singles.append(("alert" if len(parts) == 1 else "part", parts, [d["id"]], sev))
            if sum(len(p) for _, p, _, _ in singles) <= budget:
                return singles
        worst = min((severity_of(d) for d in dicts), key=SEVERITY_ORDER.__getitem__)
        why = f"{len(dicts)} pending, {budget} message(s) left this minute"
        return [("digest", [content], ids, worst) for content, ids in
                digest_messages(dicts, self.options.msgtype, self._footer(worst), self.limit, why)]

    def _footer(self, severity: str) -> str:
        if self.options.msgtype != "markdown":
            return ""
        users = [u for u in self.options.mentioned_list.get(severity, []) if u != "@all"]
        return "".join(f"<@{u}>" for u in users)

    # -- one message ------------------------------------------------------------------------------

    def _deliver(self, kind: str, contents: list[str], ids: list[str], severity: str, receipt: Any,
                 all_ids: list[str]) -> bool:
        """Send the contents carrying ``ids``; settle them on ``receipt``. False: stop this batch."""
        for content in contents:
            try:
                self._post(content, severity)
            except _RateLimited:
                receipt.retry_after(self.budget.free_in(self.clock.now()))
                return False
            except _TooLong as exc:
                self.limit = max(MIN_LIMIT, self.limit // 2)
                if len(content.encode()) <= MIN_LIMIT:
                    receipt.failed(ids, DeliveryError(str(exc), retryable=False))
                    return True
                log.warning("sink %r: WeCom refused %d bytes as too long (40058); sending at most %d "
                            "bytes per message from now on", self.name, len(content.encode()), self.limit)
                return False  # the ids stay pending and are re-planned with the smaller limit
            except DeliveryError as exc:
                if not exc.retryable and getattr(exc, "errcode", None) == 93000:
                    receipt.failed(all_ids, exc)  # a wrong key fails everything: stop at once
                    return False
                receipt.failed(ids, exc)
                return not exc.retryable
        receipt.delivered(ids)
        self.stats.inc("lgf_wecom_messages_total", sink=self.name, kind=kind)
        return True

    def _body(self, content: str, severity: str) -> dict:
        t = self.options.msgtype
        if t != "text":
            return {"msgtype": t, t: {"content": content}}
        text: dict[str, Any] = {"content": content}
        if self.options.mentioned_list.get(severity):
            text["mentioned_list"] = list(self.options.mentioned_list[severity])
        if self.options.mentioned_mobile_list.get(severity):
            text["mentioned_mobile_list"] = list(self.options.mentioned_mobile_list[severity])
        return {"msgtype": "text", "text": text}

    def _post(self, content: str, severity: str) -> None:
        """POST one message; returns when WeCom answered errcode 0, raises otherwise."""
        data = json.dumps(self._body(content, severity), ensure_ascii=False).encode("utf-8")
        req = urllib.request.Request(self._url, data=data, method="POST",
                                     headers={"Content-Type": "application/json; charset=utf-8"})
        reached = True
        try:
            with self._opener.open(req, timeout=self.options.timeout / 1e9) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            self.stats.inc("lgf_wecom_http_errors_total", sink=self.name, status=exc.code)
            raise DeliveryError(f"HTTP {exc.code} from {self.shown_url}",
                                retryable=exc.code >= 500 or exc.code in (408, 429)) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            reached = isinstance(reason, TimeoutError) or "timed out" in str(reason)
            self.stats.inc("lgf_wecom_http_errors_total", sink=self.name, status="connect")
            raise DeliveryError(self._scrub(f"cannot reach {self.shown_url}: {reason}"),
                                retryable=True) from None
        except ValueError as exc:  # urllib refusing the URL itself: retrying cannot help
            reached = False
            raise DeliveryError(self._scrub(f"bad URL {self.shown_url}: {exc}"), retryable=False) from None
        finally:
            if reached:  # it may have counted against the minute: count it here too
                self.budget.record(self.clock.now())
        try:
            answer = json.loads(raw)
            errcode = int(answer["errcode"])
        except (ValueError, KeyError, TypeError):
            raise DeliveryError(f"not a WeCom answer from {self.shown_url}: {raw[:80]!r}",
                                retryable=True) from None
        self.stats.inc("lgf_wecom_errcode_total", sink=self.name, errcode=errcode)
        if errcode == 0:
            return
        errmsg = self._scrub(str(answer.get("errmsg", "")))[:200]
        if errcode == 45009:
            self.budget.exhaust(self.clock.now())
            raise _RateLimited()
        if errcode == 40058:
            raise _TooLong(f"WeCom errcode 40058 (content too long) for {len(content.encode())} bytes")
        if errcode in PERMANENT_ERRCODES:
            exc = DeliveryError(f"WeCom errcode {errcode} ({PERMANENT_ERRCODES[errcode]}) from "
                                f"{self.shown_url}: {errmsg}", retryable=False)
            exc.errcode = errcode
            log.error("sink %r: %s; the alerts are kept on disk", self.name, exc)
            raise exc
        # -1 (busy) and any errcode docs/wecom.md does not list: retry with backoff, never drop.
        raise DeliveryError(f"WeCom errcode {errcode} from {self.shown_url}: {errmsg}", retryable=True)

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***").replace(urllib.parse.quote(self._key), "***")


class _RateLimited(Exception):
    """errcode 45009."""


class _TooLong(Exception):
    """errcode 40058."""


@hookimpl
def lgf_components():
    return [Component("sink", "wecom", WeComSink, WeComOptions,
                      "Send alerts to a WeCom group robot: 20/min, byte limits, digests, retries.")]
