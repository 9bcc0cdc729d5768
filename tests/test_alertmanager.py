"""The ``alertmanager`` sink and the relay (``POST /api/alertmanager``), against a real Alertmanager.

Debian's ``prometheus-alertmanager`` runs on loopback with clustering off (``make test`` installs
it); the lgf side is the real host (``lgf.testing.PipelineRun``, one per pretend node, no BPF) and
the relay a real ``lgf run`` process with no sources, its WeCom sink posting to the fake robot
(``support.fakewecom``: 20 a minute, 45009). Every wait polls until something arrives.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from lgf import Event
from lgf.relay import RELAY_FILE, alert_of, notification_key
from lgf.sinks.alertmanager import AlertmanagerOptions, label_name, labels_of
from lgf.spool import spool_path
from lgf.testing import PipelineRun
from support.alertmanager import Alertmanager, available, free_port
from support.cli import lgf, write
from support.fakewecom import FakeWeCom
from support.wait import poll_until, wait_until

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy" / "alertmanager.yml"

needs_am = pytest.mark.skipif(not available(), reason="prometheus-alertmanager is not installed "
                                                       "(make test-apt installs it)")


def stall(pid: int, comm: str, wait_reason: str = "sync.Mutex.Lock", ms: int = 300, frame: str = "main.work"):
    end = time.monotonic_ns()
    return Event(pid=pid, comm=comm, wait_reason=wait_reason, start_ns=end - ms * 1_000_000, end_ns=end,
                 duration_ns=ms * 1_000_000, stack_summary=[frame, "main.main"], trace_id="4bf92f3577b34da6a3ce929d0e0e4736")


def node_config(spool: Path, host: str, urls: list[str], team: str, extra: str = "") -> str:
    return f"""
[lgf]
spool_dir = "{spool}"
threshold = "10ms"
[alerts.tags]
team = "{team}"
"cost-centre" = "cc-7"
[alerts.topology]
host = "{host}"
[[classifiers]]
use = "waitreason"
[[sinks]]
use = "alertmanager"
name = "am"
urls = {json.dumps(urls)}
{extra}
"""


def am_alerts(am: Alertmanager, **labels) -> list[dict]:
    return [a for a in am.alerts() if all(a["labels"].get(k) == v for k, v in labels.items())]


# --- without Alertmanager -------------------------------------------------------------------------

def test_options_refuse_what_alertmanager_cannot_be(tmp_path):
    for bad, said in [("", "url: required"), ('url = "ftp://am:9093"', "not an http"),
                      ('url = "am:9093"', "not an http"), ('url = "http://am:99999"', "bad port"),
                      ('urls = ["http://a:9093", "http://a:9093/"]', "listed twice"),
                      ('url = "http://a:9093"\nresend_interval = "5m"\nresolve_timeout = "5m"', "shorter")]:
        cfg = write(tmp_path / "c.toml", f'[lgf]\nspool_dir = "{tmp_path}"\n[[sinks]]\nuse = "alertmanager"\n{bad}\n')
        out = lgf("check", str(cfg))
        assert out.returncode == 2, (bad, out.stdout, out.stderr)
        assert "sinks[0]" in out.stderr + out.stdout and said in out.stderr + out.stdout, (bad, out.stderr)
    ok = AlertmanagerOptions(url="http://127.0.0.1:9093", urls=["http://127.0.0.2:9093/am/"])
    assert ok.endpoints() == ["http://127.0.0.1:9093/api/v2/alerts", "http://127.0.0.2:9093/am/api/v2/alerts"]


def test_labels_are_names_alertmanager_accepts():
    assert label_name("cost-centre") == "cost_centre"
    assert label_name("9lives") == "_9lives"
    assert label_name("__meta") == "_meta"
    labels = labels_of({"service": "api", "cause": "lock", "severity": "critical", "env": "prod",
                        "topology": {"host": "n1", "region": "eu", "path": ["a", "b"], "pod": "api-0"},
                        "tags": {"service": "x", "team": "é" * 2000}}, "LgfStall")
    assert labels["tag_service"] == "x" and labels["pod"] == "api-0" and "path" not in labels
    assert len(labels["team"].encode()) <= 1024
    assert all(re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", k) for k in labels)


def test_notification_identity_ignores_what_changes_between_repeats():
    n = {"status": "firing", "groupKey": "{}:{cause=\"lock\"}", "alerts": [
        {"status": "firing", "fingerprint": "a1", "startsAt": "2026-12-03T10:00:00Z", "endsAt": "x",
         "labels": {"host": "n1", "service": "api", "cause": "lock", "severity": "warning"},
         "annotations": {"summary": "s1", "worst_ns": "300000000"}},
        {"status": "firing", "fingerprint": "b2", "startsAt": "2026-12-03T10:00:01Z",
         "labels": {"host": "n2", "service": "api", "cause": "lock", "severity": "critical"},
         "annotations": {"summary": "s2", "worst_ns": "900000000"}}]}
    again = json.loads(json.dumps(n))
    again["alerts"].reverse()
    again["alerts"][0]["endsAt"] = "later"
    assert notification_key(n) == notification_key(again)
    resolved = json.loads(json.dumps(n))
    resolved["status"] = "resolved"
    assert notification_key(resolved) != notification_key(n)
    alert = alert_of(n)
    assert alert.id == notification_key(n) and alert.severity == "critical"
    assert alert.extra["hosts"] == ["n1", "n2"] and alert.duration_ns == 900_000_000


# --- with a real Alertmanager --------------------------------------------------------------------

@needs_am
def test_two_hosts_alerts_are_listed_by_alertmanager_with_their_labels(tmp_path):
    am = Alertmanager(tmp_path / "am").start()
    try:
        a = PipelineRun(node_config(tmp_path / "a", "node-a", [am.url], "payments"))
        b = PipelineRun(node_config(tmp_path / "b", "node-b", [am.url], "search"))
        with a, b:
            a.feed(stall(11, "checkout"))
            b.feed(stall(22, "checkout"), stall(23, "checkout", ms=700))
            [sent_a], [sent_b] = a.flush_alerts(), b.flush_alerts()
            wait_until(lambda: len(am_alerts(am, alertname="LgfStall")) == 2, 90, 0.2, "both alerts in Alertmanager")
        [got_a] = am_alerts(am, host="node-a")
        [got_b] = am_alerts(am, host="node-b")
        assert got_a["labels"] == {"alertname": "LgfStall", "service": "checkout", "cause": "lock",
                                   "severity": "warning", "env": "prod", "host": "node-a",
                                   "team": "payments", "cost_centre": "cc-7"}
        assert got_b["labels"]["team"] == "search"
        ann = got_b["annotations"]
        assert ann["lgf_alert_id"] == sent_b.id and ann["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert ann["worst"] == "700.0ms" and ann["count"] == "2" and ann["stack"].startswith("main.work")
        assert "checkout: 2 lock stall(s)" in ann["summary"]
        assert got_a["generatorURL"] == "http://127.0.0.1:9464/ui"
        assert got_a["status"]["state"] == "active" and got_a["startsAt"] < got_a["endsAt"]
        assert got_a["annotations"]["lgf_alert_id"] == sent_a.id
    finally:
        am.stop()


@needs_am
def test_alertmanager_down_then_up_loses_nothing(tmp_path):
    am = Alertmanager(tmp_path / "am")  # not started yet: connections are refused
    spool = tmp_path / "node"
    try:
        with PipelineRun(node_config(spool, "node-a", [am.url], "payments")) as run:
            run.feed(stall(1, "checkout"), stall(2, "search", "chan receive"), stall(3, "cart", "select"))
            assert len(run.flush_alerts()) == 3

            def attempts() -> int:
                db = sqlite3.connect(spool_path(spool, "am"))
                try:
                    return db.execute("SELECT COALESCE(MAX(attempts), 0) FROM items").fetchone()[0]
                finally:
                    db.close()
            wait_until(lambda: attempts() >= 2, 90, 0.1, "the sink retrying against the dead Alertmanager")
            am.start()
            wait_until(lambda: len(am_alerts(am, host="node-a")) == 3, 120, 0.2, "all three alerts after it came up")
        assert {a["labels"]["service"] for a in am.alerts()} == {"checkout", "search", "cart"}
    finally:
        am.stop()


@needs_am
def test_firing_alerts_are_sent_again_to_an_alertmanager_that_restarted(tmp_path):
    am = Alertmanager(tmp_path / "am").start()
    try:
        cfg = node_config(tmp_path / "a", "node-a", [am.url], "payments", 'resend_interval = "1s"')
        with PipelineRun(cfg) as run:
            run.feed(stall(1, "checkout"))
            run.flush_alerts()
            wait_until(lambda: am_alerts(am, host="node-a"), 90, 0.2, "the alert in Alertmanager")
            am.remove()  # Alertmanager keeps no alerts across a restart (nor, here, its storage)
            am.start()
            wait_until(lambda: am_alerts(am, host="node-a"), 90, 0.2, "the alert re-sent to the new Alertmanager")
    finally:
        am.stop()


@needs_am
def test_an_alertmanager_refusing_the_alerts_is_a_permanent_failure_kept_on_disk(tmp_path):
    am = Alertmanager(tmp_path / "am").start()
    spool = tmp_path / "node"
    try:
        with PipelineRun(node_config(spool, "node-a", [am.url + "/no/such/prefix"], "payments")) as run:
            run.feed(stall(1, "checkout"))
            run.flush_alerts()

            def failed():
                db = sqlite3.connect(spool_path(spool, "am"))
                try:
                    return db.execute("SELECT last_error FROM items WHERE state='failed'").fetchall()
                finally:
                    db.close()
            got = poll_until(failed, 90, 0.1)
            assert got and "answered HTTP 404" in got[0][0] and "/no/such/prefix/api/v2/alerts" in got[0][0], got
            assert run.stats.total("lgf_sink_failed_total") == 1
    finally:
        am.stop()


# --- the relay ---------------------------------------------------------------------------------------

RELAY_TOKEN = "relay-token-" + "x" * 16


def deploy_config(tmp_path: Path, relay_port: int) -> str:
    """deploy/alertmanager.yml with the relay's address, a token file, and timings a test can wait for."""
    text = DEPLOY.read_text(encoding="utf-8")
    token_file = write(tmp_path / "relay.token", RELAY_TOKEN)
    for old, new in [("http://lgf-relay:9464", f"http://127.0.0.1:{relay_port}"),
                     ("/etc/alertmanager/lgf-relay.token", str(token_file)),
                     ("group_wait: 30s", "group_wait: 1s"), ("group_interval: 5m", "group_interval: 2s")]:
        assert old in text, old
        text = text.replace(old, new)
    return text


class RelayProcess:
    """``lgf run`` with no sources: the http listener and a wecom sink to the fake robot."""

    def __init__(self, tmp_path: Path, fake: FakeWeCom, key: str):
        self.port = free_port()
        self.spool = tmp_path / "relay-spool"
        self.config = write(tmp_path / "relay.toml", f"""
[lgf]
spool_dir = "{self.spool}"
[http]
listen = "127.0.0.1:{self.port}"
[[sinks]]
use = "wecom"
name = "oncall"
url = "{fake.url}"
""")
        self.env = {**os.environ, "LGF_WECOM_KEY": key, "LGF_TOKEN_OPERATOR_ALERTMANAGER": RELAY_TOKEN}
        self.log = tmp_path / "relay.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> RelayProcess:
        out = open(self.log, "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen([sys.executable, "-m", "lgf.cli", "run", str(self.config)], env=self.env,
                                     stdout=out, stderr=out)
        out.close()
        wait_until(self._up, 60, 0.1, "the relay's listener")
        return self

    def _up(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=2):
                return True
        except OSError:
            return False

    def metric(self, text: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(text):
                    return float(line.rsplit(" ", 1)[1])
        return 0.0

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def messages(fake: FakeWeCom, word: str) -> list[str]:
    return [r.content for r in fake.accepted() if word in r.content]


@needs_am
def test_relay_sends_one_message_naming_every_host_then_the_resolution(tmp_path):
    key = "k-" + uuid.uuid4().hex
    fake = FakeWeCom(keys=(key,)).start()
    relay = RelayProcess(tmp_path, fake, key)
    assert lgf("check", str(relay.config), env=relay.env).returncode == 0  # no [[sources]]: a valid relay
    relay.start()
    am = Alertmanager(tmp_path / "am", deploy_config(tmp_path, relay.port)).start()
    short = 'resolve_timeout = "4s"\nresend_interval = "1s"'
    try:
        a = PipelineRun(node_config(tmp_path / "a", "node-a", [am.url], "payments", short))
        b = PipelineRun(node_config(tmp_path / "b", "node-b", [am.url], "payments", short))
        with a, b:
            a.feed(stall(11, "checkout"))
            b.feed(stall(22, "checkout", ms=450))
            a.flush_alerts(), b.flush_alerts()
            firing = poll_until(lambda: messages(fake, "FIRING on 2 host(s)"), 120, 0.2)
            assert firing, [r.content for r in fake.snapshot()]
            assert "hosts: node-a, node-b" in firing[0]
            assert "- node-a: checkout: 1 lock stall(s)" in firing[0] and "- node-b:" in firing[0]
            assert "worst 450.0 ms" in firing[0] and "team=payments" in firing[0]
            # No stall for resolve_timeout: Alertmanager resolves both and the relay says so.
            resolved = poll_until(lambda: messages(fake, "RESOLVED on 2 host(s)"), 120, 0.2)
            assert resolved, [r.content for r in fake.snapshot()]
            assert am_alerts(am, alertname="LgfStall") == []
        # Each notification once: had node-b's alert come after group_wait, node-a's would have had
        # a message of its own first, a different notification (another id), never a repeat.
        relayed = [r.content.rsplit("id: ", 1)[1] for r in fake.accepted() if "via Alertmanager" in r.content]
        assert len(relayed) == len(set(relayed)), [r.content for r in fake.accepted()]
        assert len(messages(fake, "RESOLVED on 2 host(s)")) == 1
    finally:
        am.stop()
        relay.stop()
        fake.stop()
    assert "Traceback" not in relay.log.read_text()


@needs_am
def test_relay_refuses_a_caller_without_the_token(tmp_path):
    key = "k-" + uuid.uuid4().hex
    fake = FakeWeCom(keys=(key,)).start()
    relay = RelayProcess(tmp_path, fake, key).start()
    try:
        body = json.dumps({"status": "firing", "alerts": [{"labels": {"host": "n"}}]}).encode()
        for auth, code in [("", 401), ("Bearer nope-nope-nope", 401), (f"Bearer {RELAY_TOKEN}", 200)]:
            req = urllib.request.Request(f"http://127.0.0.1:{relay.port}/api/alertmanager", data=body,
                                         headers={"Authorization": auth} if auth else {}, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    got = r.status
            except urllib.error.HTTPError as exc:
                got = exc.code
            assert got == code, auth
        req = urllib.request.Request(f"http://127.0.0.1:{relay.port}/api/alertmanager", data=b'{"alerts": 3}',
                                     headers={"Authorization": f"Bearer {RELAY_TOKEN}"}, method="POST")
        with pytest.raises(urllib.error.HTTPError) as bad:
            urllib.request.urlopen(req, timeout=10)
        assert bad.value.code == 400 and b"alerts" in bad.value.read()
    finally:
        relay.stop()
        fake.stop()


@needs_am
def test_relay_killed_9_and_restarted_loses_nothing_and_sends_nothing_twice(tmp_path):
    key = "k-" + uuid.uuid4().hex
    fake = FakeWeCom(keys=(key,)).start()
    fake.stop()  # the robot is down: the relay keeps the notification in its spool
    relay = RelayProcess(tmp_path, fake, key).start()
    config = deploy_config(tmp_path, relay.port)
    # Two Alertmanagers of an HA pair (not clustered here): each notifies the relay of the same incident.
    am1 = Alertmanager(tmp_path / "am1", config).start()
    am2 = Alertmanager(tmp_path / "am2", config).start()
    try:
        with PipelineRun(node_config(tmp_path / "a", "node-a", [am1.url, am2.url], "payments",
                                     'resolve_timeout = "10m"\nresend_interval = "1s"')) as node:
            node.feed(stall(11, "checkout"))
            node.flush_alerts()
            wait_until(lambda: relay.metric('lgf_relay_notifications_total{result="accepted"}') >= 1
                       and relay.metric('lgf_relay_notifications_total{result="duplicate"}') >= 1,
                       120, 0.2, "both Alertmanagers' notifications at the relay")
            assert relay.metric('lgf_relay_notifications_total{result="accepted"}') == 1
            relay.kill9()
            fake.start()
            relay.start()
            # A third notification of the same incident, after the restart: am2 restarted without its
            # notification log learns the alert again from the sink's re-send and notifies again.
            am2.remove()
            am2.start()
            wait_until(lambda: relay.metric('lgf_relay_notifications_total{result="duplicate"}') >= 1, 120, 0.2,
                       "the restarted relay recognising am2's repeat")
            wait_until(lambda: messages(fake, "FIRING"), 120, 0.2, "the queued notification sent")

            def pending() -> int:
                db = sqlite3.connect(spool_path(relay.spool, "oncall"))
                try:
                    return db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
                finally:
                    db.close()
            wait_until(lambda: pending() == 0, 60, 0.1, "the relay's WeCom queue drained")
        assert len(messages(fake, "FIRING on 1 host(s)")) == 1, [r.content for r in fake.accepted()]
        db = sqlite3.connect(relay.spool / RELAY_FILE)
        assert db.execute("SELECT COUNT(*) FROM seen").fetchone()[0] == 1
        db.close()
    finally:
        am1.stop()
        am2.stop()
        relay.stop()
        fake.stop()


def notification(i: int, hosts=("node-a", "node-b")) -> dict:
    """A notification shaped as Alertmanager's webhook (version 4) sends it."""
    return {"version": "4", "status": "firing", "receiver": "lgf-relay", "groupKey": f'{{}}:{{service="svc-{i}"}}',
            "groupLabels": {"service": f"svc-{i}"}, "commonLabels": {"service": f"svc-{i}", "cause": "lock"},
            "alerts": [{"status": "firing", "fingerprint": f"{i:04x}{h}", "startsAt": "2026-12-03T10:00:00Z",
                        "endsAt": "0001-01-01T00:00:00Z",
                        "labels": {"alertname": "LgfStall", "service": f"svc-{i}", "cause": "lock", "host": host,
                                   "severity": "critical" if i % 5 == 0 else "warning"},
                        "annotations": {"summary": f"svc-{i}: 2 lock stall(s)", "worst_ns": "300000000"}}
                       for h, host in enumerate(hosts)]}


def post(port: int, body: dict) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/alertmanager", data=json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {RELAY_TOKEN}"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_relay_keeps_the_robot_within_20_a_minute_and_loses_no_notification(tmp_path):
    from support.wecom import ids_in, max_in_any_minute

    key = "k-" + uuid.uuid4().hex
    fake = FakeWeCom(keys=(key,)).start()
    relay = RelayProcess(tmp_path, fake, key).start()
    try:
        answers = [post(relay.port, notification(i)) for i in range(30)]
        assert {a["status"] for a in answers} == {"accepted"}
        assert post(relay.port, notification(7))["status"] == "duplicate"
        ids = {a["id"] for a in answers}
        wait_until(lambda: ids <= set(ids_in(fake.accepted())), 120, 0.2, "every notification in some message")
        accepted = fake.accepted()
        assert max_in_any_minute([r.t for r in accepted]) <= 20
        assert len(accepted) < 30  # what the minute could not carry one by one went out as digests
        assert not [r for r in fake.snapshot() if r.errcode == 45009]
    finally:
        relay.stop()
        fake.stop()


def test_the_relay_never_feeds_alertmanager_its_own_notifications(tmp_path):
    cfg = f"""
[lgf]
spool_dir = "{tmp_path}"
[[sinks]]
use = "alertmanager"
name = "am"
url = "http://127.0.0.1:{free_port()}"
[[sinks]]
use = "file"
path = "{tmp_path / 'alerts.jsonl'}"
receive = "alerts"
"""
    with PipelineRun(cfg) as run:
        run.host.pipeline.relay(alert_of(notification(1)))
        assert "svc-1" in (tmp_path / "alerts.jsonl").read_text()
        db = sqlite3.connect(spool_path(tmp_path, "am"))
        try:
            assert db.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 0
        finally:
            db.close()


def test_a_notification_queued_twice_before_it_was_recorded_is_sent_once(tmp_path, monkeypatch):
    """The window a kill -9 can hit: the alert is in the sink's spool, the relay's record of the key
    is not, so Alertmanager's retry arrives as new. The spool refuses the same id, queued or sent."""
    key = "k-" + uuid.uuid4().hex
    fake = FakeWeCom(keys=(key,)).start()
    monkeypatch.setenv("LGF_WECOM_KEY", key)
    try:
        cfg = f'[lgf]\nspool_dir = "{tmp_path}"\n[[sinks]]\nuse = "wecom"\nname = "oncall"\nurl = "{fake.url}"\n'
        with PipelineRun(cfg) as run:
            run.host.pipeline.relay(alert_of(notification(3)))
            run.host.pipeline.relay(alert_of(notification(3)))  # still queued, or already sent
            wait_until(lambda: fake.accepted(), 60, 0.05, "the message")
            run.host.pipeline.relay(alert_of(notification(3)))  # after it was sent
            run.host.pipeline.relay(alert_of(notification(4)))
            wait_until(lambda: len(fake.accepted()) >= 2, 60, 0.05, "the next notification's message")
        assert [("svc-3" in r.content, "svc-4" in r.content) for r in fake.accepted()] == [(True, False), (False, True)]
    finally:
        fake.stop()


def test_a_relayed_message_names_every_host_and_fits_wecom_limits():
    from lgf.sinks.wecom_format import LIMITS, alert_messages

    n = notification(5, hosts=tuple(f"node-{i:02d}" for i in range(60)))
    n["alerts"][0]["status"] = "resolved"
    d = alert_of(n).to_dict()
    for msgtype in ("text", "markdown", "markdown_v2"):
        parts = alert_messages(d, msgtype)
        text = "\n".join(parts)
        assert all(len(p.encode()) <= LIMITS[msgtype] for p in parts)
        assert "FIRING on 60 host(s)" in text and "node-59" in text  # the hosts line names all 60
        assert "- node-00 (resolved): svc-5" in text and "... and 10 more" in text


def test_a_relayed_alert_on_stdout_names_its_hosts():
    from lgf.sinks.stdout import format_line

    line = format_line(alert_of(notification(5)))
    assert " ALERT critical lock via alertmanager firing alerts=2 hosts=node-a,node-b service=svc-5 worst=300.0ms" in line


@pytest.mark.skipif(not os.access("/usr/bin/amtool", os.X_OK), reason="amtool comes with prometheus-alertmanager")
def test_the_shipped_alertmanager_config_is_valid_as_it_is():
    out = subprocess.run(["/usr/bin/amtool", "check-config", str(DEPLOY)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 receivers" in out.stdout and "1 inhibit rules" in out.stdout


@needs_am
def test_a_relay_down_when_alertmanager_notifies_gets_the_notification_once_it_is_back(tmp_path):
    key = "k-" + uuid.uuid4().hex
    fake = FakeWeCom(keys=(key,)).start()
    relay = RelayProcess(tmp_path, fake, key)  # its port is chosen, nothing listens there yet
    am = Alertmanager(tmp_path / "am", deploy_config(tmp_path, relay.port)).start()
    try:
        with PipelineRun(node_config(tmp_path / "a", "node-a", [am.url], "payments",
                                     'resolve_timeout = "10m"\nresend_interval = "1s"')) as node:
            node.feed(stall(11, "checkout"))
            node.flush_alerts()
            wait_until(lambda: "connection refused" in am.log(), 120, 0.2, "Alertmanager failing to notify the relay")
            relay.start()
            wait_until(lambda: messages(fake, "FIRING on 1 host(s)"), 120, 0.2, "the notification once the relay is up")
            wait_until(lambda: relay.metric('lgf_relay_notifications_total{result="accepted"}') >= 1, 60, 0.2,
                       "the relay's count")
        assert len(messages(fake, "FIRING")) == 1
    finally:
        am.stop()
        relay.stop()
        fake.stop()
