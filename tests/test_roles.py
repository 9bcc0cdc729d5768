"""Roles on the HTTP API, over real HTTP on 127.0.0.1: tokens, 401/403, prod's approval, the audit log."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import pytest

from lgf import config as cfg
from lgf.alerts import AlertEngine
from lgf.event import Event
from lgf.http import HttpServer
from lgf.roles import Guard, Identity, Refusal, TokenFileError, tokens_from_env
from lgf.stats import Stats
from support.cli import lgf, write

MS = 1_000_000
TOKENS = {"LGF_TOKEN_OPERATOR_ALICE": "alice-op-token-1", "LGF_TOKEN_APPROVER_BOB": "bob-approver-token",
          "LGF_TOKEN_APPROVER_CAROL": "carol-approver-tok", "LGF_TOKEN_VIEWER": "viewer-token-123"}


def call(method, url, body=None, token=""):
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 method=method, headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def serve(tmp_path, env, monkeypatch, tokens=TOKENS, http=None):
    for k, v in tokens.items():
        monkeypatch.setenv(k, v)
    raw = {"lgf": {"spool_dir": str(tmp_path), "env": env, "threshold": "50ms"},
           "http": {"listen": "127.0.0.1:0", **(http or {})}}
    config = cfg.validate(raw, {})
    stats = Stats()
    engine = AlertEngine(config, stats)
    srv = HttpServer(config, engine, stats, [])
    srv.start()
    assert srv.running
    return srv, engine, stats


@pytest.fixture
def prod(tmp_path, monkeypatch):
    srv, engine, stats = serve(tmp_path, "prod", monkeypatch)
    yield srv, engine, stats, tmp_path
    srv.stop()


def stall():
    return Event(pid=42, comm="api", goid=1, cause="lock", wait_reason="sync.Mutex.Lock", build_id="b",
                 duration_ns=300 * MS, stack_summary=["main.save"])


def alerts_sent(engine) -> int:
    engine.observe(stall())
    return len(engine.due(2**63 - 1))


SILENCE = {"matchers": ["cause=lock"], "duration": "1h", "comment": "INC-7"}


def test_a_prod_silence_silences_nothing_until_someone_else_approves_it(prod):
    srv, engine, stats, tmp_path = prod
    code, s = call("POST", srv.url + "/api/silences", {**SILENCE, "created_by": "mallory"},
                   token=TOKENS["LGF_TOKEN_OPERATOR_ALICE"])
    assert code == 201 and s["pending"] and s["created_by"] == "alice"  # the token says who, not the body
    assert alerts_sent(engine) == 1  # pending: silences nothing
    code, out = call("POST", srv.url + f"/api/silences/{s['id']}/approve", {},
                     token=TOKENS["LGF_TOKEN_OPERATOR_ALICE"])
    assert code == 403 and "approver" in out["error"]  # an operator cannot approve
    assert alerts_sent(engine) == 1
    code, out = call("POST", srv.url + f"/api/silences/{s['id']}/approve", {}, token=TOKENS["LGF_TOKEN_APPROVER_BOB"])
    assert code == 200 and not out["pending"] and out["approved_by"] == "bob"
    assert alerts_sent(engine) == 0  # approved: it silences
    assert stats.get("lgf_alerts_silenced_total", cause="lock", reason="silence") == 1
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(a["identity"], a["action"]) for a in audit] == [("alice", "silence.add"), ("bob", "silence.approve")]
    assert not any(tok in (tmp_path / "audit.jsonl").read_text() for tok in TOKENS.values())


def test_nobody_approves_their_own_silence(prod):
    srv, engine, *_ = prod
    code, s = call("POST", srv.url + "/api/silences", SILENCE, token=TOKENS["LGF_TOKEN_APPROVER_BOB"])
    assert code == 201 and s["pending"]
    code, out = call("POST", srv.url + f"/api/silences/{s['id']}/approve", {}, token=TOKENS["LGF_TOKEN_APPROVER_BOB"])
    assert code == 403 and "someone else" in out["error"]
    assert alerts_sent(engine) == 1
    assert call("POST", srv.url + f"/api/silences/{s['id']}/approve", {},
                token=TOKENS["LGF_TOKEN_APPROVER_CAROL"])[0] == 200
    assert alerts_sent(engine) == 0


@pytest.mark.parametrize("method,path,body,token,code", [
    ("POST", "/api/silences", SILENCE, "LGF_TOKEN_VIEWER", 403),       # a viewer cannot add
    ("POST", "/api/deploys", {"service": "api"}, "LGF_TOKEN_VIEWER", 403),
    ("POST", "/api/loadtests", {"service": "api"}, "LGF_TOKEN_VIEWER", 403),
    ("DELETE", "/api/silences/nope", None, "LGF_TOKEN_VIEWER", 403),
    ("POST", "/api/silences/nope/approve", {}, "LGF_TOKEN_OPERATOR_ALICE", 403),  # an operator cannot approve
    ("POST", "/api/silences", SILENCE, "", 401),                        # loopback, no token, prod
    ("POST", "/api/silences", SILENCE, "not-a-token", 401),
    ("GET", "/api/silences", None, "", 200),                            # reading from loopback is open
    ("GET", "/debug/latency", None, "LGF_TOKEN_VIEWER", 200),
    ("POST", "/api/silences", SILENCE, "LGF_TOKEN_OPERATOR_ALICE", 201),
])
def test_a_token_of_the_wrong_role_gets_403(prod, method, path, body, token, code):
    srv, *_ = prod
    got, out = call(method, srv.url + path, body, token=TOKENS.get(token, token))
    assert got == code, out


def test_loopback_without_a_token_keeps_its_old_rights_only_in_dev_and_test(tmp_path, monkeypatch):
    for env, allowed in (("dev", True), ("test", True), ("prod", False)):
        srv, engine, _ = serve(tmp_path / env, env, monkeypatch, tokens={})
        try:
            code, s = call("POST", srv.url + "/api/silences", SILENCE)
            assert (code == 201) == allowed, (env, s)
            if allowed:
                assert not s["pending"]  # dev and test: active at once
                assert call("POST", srv.url + "/api/loadtests", {"service": "api"})[0] == 202
            else:
                assert code == 403 and "configure tokens" in s["error"]
        finally:
            srv.stop()


def test_a_group_readable_token_file_is_refused_with_the_fix(tmp_path):
    path = write(tmp_path / "tokens.toml", '[alice]\nrole = "operator"\ntoken = "alice-op-token-1"\n')
    os.chmod(path, 0o644)
    config = write(tmp_path / "plugins.toml", f'[lgf]\nspool_dir = "{tmp_path}"\n[http]\ntoken_file = "{path}"\n')
    checked = lgf("check", str(config))
    assert checked.returncode == 2
    assert f"token file {path} is readable or writable by group or others (mode 0644)" in checked.stderr
    assert f"chmod 600 {path}" in checked.stderr and "alice-op-token-1" not in checked.stderr
    os.chmod(path, 0o600)
    assert lgf("check", str(config)).returncode == 0


def test_a_root_only_token_file_gives_identities_and_roles(tmp_path, monkeypatch):
    path = write(tmp_path / "tokens.toml", '[dana]\nrole = "approver"\ntoken = "dana-approver-tok"\n'
                                           '[erin]\nrole = "operator"\ntoken = "erin-operator-tok"\n')
    os.chmod(path, 0o600)
    srv, engine, _ = serve(tmp_path, "prod", monkeypatch, tokens={}, http={"token_file": str(path)})
    try:
        code, s = call("POST", srv.url + "/api/silences", SILENCE, token="erin-operator-tok")
        assert code == 201 and s["created_by"] == "erin" and s["pending"]
        assert call("POST", srv.url + f"/api/silences/{s['id']}/approve", {}, token="dana-approver-tok")[0] == 200
        assert alerts_sent(engine) == 0
    finally:
        srv.stop()


def test_two_identities_may_not_share_a_token():
    with pytest.raises(TokenFileError, match="same token"):
        tokens_from_env({"LGF_TOKEN_OPERATOR_A": "same-token-1", "LGF_TOKEN_APPROVER_B": "same-token-1"})


def test_the_guard_decides_from_token_and_address():
    g = Guard({"t-operator-1": ("alice", "operator")}, loopback_changes=True)
    assert g.authorize("Bearer t-operator-1", "10.0.0.5", "operator") == Identity("alice", "operator", "token")
    assert g.authorize("", "10.0.0.5", "viewer") == Refusal(401, "a bearer token is required from outside this host")
    assert isinstance(g.authorize("", "127.0.0.1", "operator"), Refusal)  # tokens exist: loopback only reads
    open_dev = Guard({}, loopback_changes=True)
    assert open_dev.authorize("", "127.0.0.1", "operator").role == "operator"
    assert open_dev.authorize("", "10.0.0.5", "viewer").role == "viewer"  # no tokens: reads as before


def test_lgf_silence_approve_through_the_real_cli(prod):
    srv, engine, *_ = prod
    env = {**os.environ, "LGF_URL": srv.url, "LGF_TOKEN": TOKENS["LGF_TOKEN_OPERATOR_ALICE"]}
    added = lgf("silence", "add", "cause=lock", "--for", "1h", env=env)
    assert added.returncode == 0 and "PENDING" in added.stdout and "approve" in added.stderr
    sid = added.stdout.split()[0]
    own = lgf("silence", "approve", sid, env=env)
    assert own.returncode == 1 and "403" in own.stderr
    approved = lgf("silence", "approve", sid, env={**env, "LGF_TOKEN": TOKENS["LGF_TOKEN_APPROVER_BOB"]})
    assert approved.returncode == 0, approved.stderr
    assert alerts_sent(engine) == 0
    loadtest = lgf("silence", "loadtest", "api", env=env)
    assert loadtest.returncode == 0 and "held for 0 s" in loadtest.stdout  # prod: no load-test window
