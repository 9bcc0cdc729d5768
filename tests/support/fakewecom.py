"""A fake WeCom group-robot endpoint on 127.0.0.1 that answers as docs/wecom.md documents the API.

Real HTTP (``http.server``), so the sink's own client is what gets tested. Answers, in the order
they are checked:

* wrong path: HTTP 404; unknown or missing ``key``: errcode 93000;
* failures on demand (``fail_next``): ``"busy"`` (errcode -1), ``"http500"`` / ``"http502"``
  (plain HTTP errors from a proxy), ``"stall"`` (sleep ``stall_seconds`` of real time, then answer
  as usual), ``"rate"`` (errcode 45009);
* a body that is not strict UTF-8 JSON, an unknown ``msgtype`` or a missing ``content``: 40008
  (``broken_utf8`` is recorded for invalid UTF-8, lone surrogates included);
* past ``per_minute`` accepted messages in the last 60 s for the key: 45009;
* content over 2048 bytes (text) or 4096 (markdown, markdown_v2): 40058;
* otherwise errcode 0.

Every request is recorded in ``received`` with its time on ``clock`` (the same injectable clock
as the sink's in a test, so minutes pass in seconds). ``stop()`` closes the socket (connections
are refused), ``start()`` listens again on the same port.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LIMITS = {"text": 2048, "markdown": 4096, "markdown_v2": 4096}
SEND_PATH = "/cgi-bin/webhook/send"


@dataclass
class Received:
    t: float
    """Time on the fake's clock when the request arrived."""
    key: str
    body: dict | None
    errcode: int | None
    """What was answered (None for a plain HTTP error)."""
    status: int = 200
    broken_utf8: bool = False

    @property
    def msgtype(self) -> str:
        return (self.body or {}).get("msgtype", "")

    @property
    def content(self) -> str:
        return ((self.body or {}).get(self.msgtype) or {}).get("content", "")

    @property
    def content_bytes(self) -> int:
        return len(self.content.encode("utf-8", "surrogatepass"))


class _RealClock:
    def now(self) -> float:
        return time.monotonic()


@dataclass
class FakeWeCom:
    keys: tuple[str, ...] = ("test-key",)
    clock: object = field(default_factory=_RealClock)
    per_minute: int = 20
    stall_seconds: float = 1.0
    port: int = 0
    limits: dict[str, int] = field(default_factory=lambda: dict(LIMITS))
    """Content bytes per message type; a type missing here is answered 40008 (an older API)."""
    received: list[Received] = field(default_factory=list)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._failures: deque[str] = deque()
        self._accepted: dict[str, deque[float]] = {}
        self._server: ThreadingHTTPServer | None = None

    # -- control --------------------------------------------------------------------------------

    def start(self) -> FakeWeCom:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                fake._handle(self)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True, name="fakewecom").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        """The send endpoint, without the key (the sink adds it)."""
        return f"http://127.0.0.1:{self.port}{SEND_PATH}"

    def fail_next(self, kind: str, n: int = 1) -> None:
        """The next ``n`` requests fail as ``kind``: busy, http500, http502, stall, rate."""
        assert kind in ("busy", "http500", "http502", "stall", "rate"), kind
        with self._lock:
            self._failures.extend([kind] * n)

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def accepted(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.errcode == 0]

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    # -- answering ------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        now = self.clock.now()
        url = urllib.parse.urlsplit(h.path)
        raw = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        key = (urllib.parse.parse_qs(url.query).get("key") or [""])[0]
        if url.path != SEND_PATH:
            return self._answer(h, Received(now, key, None, None, 404))
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        if failure == "stall":
            time.sleep(self.stall_seconds)
        if failure in ("http500", "http502"):
            return self._answer(h, Received(now, key, None, None, int(failure[4:])))
        if key not in self.keys:
            return self._answer(h, Received(now, key, None, 93000))
        if failure == "busy":
            return self._answer(h, Received(now, key, None, -1))
        body, broken = self._parse(raw, self.limits)
        rec = Received(now, key, body, None, broken_utf8=broken)
        if body is None or broken:
            rec.errcode = 40008
            return self._answer(h, rec)
        with self._lock:
            window = self._accepted.setdefault(key, deque())
            while window and window[0] <= now - 60.0:
                window.popleft()
            if failure == "rate" or len(window) >= self.per_minute:
                rec.errcode = 45009
            elif rec.content_bytes > self.limits[rec.msgtype]:
                rec.errcode = 40058
            else:
                rec.errcode = 0
                window.append(now)
        self._answer(h, rec)

    @staticmethod
    def _parse(raw: bytes, limits: dict[str, int]) -> tuple[dict | None, bool]:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None, True
        try:
            body = json.loads(text)
        except ValueError:
            return None, False
        if not isinstance(body, dict) or body.get("msgtype") not in limits:
            return None, False
        part = body.get(body["msgtype"])
        if not isinstance(part, dict) or not isinstance(part.get("content"), str):
            return None, False
        try:
            part["content"].encode("utf-8")  # a lone surrogate (\\ud800) decodes in JSON but is not UTF-8
        except UnicodeEncodeError:
            return body, True
        return body, False

    _ERRMSG = {0: "ok", -1: "system busy", 45009: "api freq out of limit",
               40058: "invalid content size", 40008: "invalid message type",
               93000: "invalid webhook url, hint: [1700000000_000000000000000000], from ip: 127.0.0.1, "
                      "more info at https://open.work.weixin.qq.com/devtool/query?e=93000"}

    def _answer(self, h: BaseHTTPRequestHandler, rec: Received) -> None:
        with self._lock:
            self.received.append(rec)
        if rec.errcode is None:
            payload = b"<html><body>error</body></html>"
            ctype = "text/html"
        else:
            payload = json.dumps({"errcode": rec.errcode, "errmsg": self._ERRMSG[rec.errcode]}).encode()
            ctype = "application/json; charset=UTF-8"
        try:
            h.send_response(rec.status)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)
        except OSError:  # the client gave up (timeout) or was killed
            pass
