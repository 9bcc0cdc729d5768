"""Environments as the design document's table has them: dev, test, prod and ones the user names."""

from __future__ import annotations

import pytest

from lgf import config as cfg
from lgf.alerts import AlertEngine
from lgf.environments import DEFAULT_POLICIES
from lgf.errors import ConfigErrors
from lgf.event import Event
from lgf.stats import Stats

MS = 1_000_000
S = 1000 * MS
MIN = 60 * S


class Clock:
    def __init__(self):
        self.now = 10 * S

    def __call__(self):
        return self.now


def engine_for(tmp_path, env, environments=None):
    raw = {"lgf": {"env": env, "spool_dir": str(tmp_path), "threshold": "50ms", "report_interval": "10s"},
           "environments": environments or {}}
    clock, stats = Clock(), Stats()
    return AlertEngine(cfg.validate(raw, {}), stats, clock=clock), clock, stats


def stall(build_id="v1", comm="api", dur_ms=300):
    return Event(pid=100, comm=comm, exe=f"/srv/{comm}", goid=1, cause="lock", wait_reason="sync.Mutex.Lock",
                 build_id=build_id, duration_ns=dur_ms * MS, stack_summary=["main.save"])


def alerts_at(eng, clock, at_ns, **kw) -> int:
    """Move to ``at_ns``, stall once, and count the alerts sent when the interval closes."""
    clock.now = at_ns
    eng.observe(stall(**kw))
    return len(eng.due(clock.now + 10 * S))


def test_the_defaults_are_the_design_documents_table():
    dev, test, prod = (DEFAULT_POLICIES[e] for e in ("dev", "test", "prod"))
    assert (dev.silence_after_deploy, dev.silence_after_loadtest) == (120 * MIN, 0)
    assert (test.silence_after_deploy, test.silence_after_loadtest) == (0, 30 * MIN)
    assert (prod.silence_after_deploy, prod.silence_after_loadtest) == (0, 0)
    assert (dev.approval, test.approval, prod.approval) == (False, False, True)
    assert (dev.loopback_changes, test.loopback_changes, prod.loopback_changes) == (True, True, False)
    assert (dev.sigma_scale, test.sigma_scale, prod.sigma_scale) == (1.5, 1.0, 0.8)


def test_dev_holds_a_service_for_two_hours_after_every_deploy(tmp_path):
    eng, clock, stats = engine_for(tmp_path, "dev")
    assert alerts_at(eng, clock, 1 * MIN, build_id="v1") == 1
    assert alerts_at(eng, clock, 2 * MIN, build_id="v2") == 0  # a new build: deployed
    assert alerts_at(eng, clock, 2 * MIN + 119 * MIN, build_id="v2") == 0
    assert alerts_at(eng, clock, 2 * MIN + 121 * MIN, build_id="v2") == 1
    assert alerts_at(eng, clock, 200 * MIN, build_id="v3") == 0  # every deploy, not only the first
    assert stats.get("lgf_alerts_silenced_total", cause="lock", reason="deploy") == 3
    eng.mark_deploy("api", at_ns=400 * MIN)  # `lgf silence deploy api`
    assert alerts_at(eng, clock, 401 * MIN, build_id="v3") == 0


def test_test_holds_a_service_for_thirty_minutes_from_a_load_test_not_after_a_deploy(tmp_path):
    eng, clock, stats = engine_for(tmp_path, "test")
    assert alerts_at(eng, clock, 1 * MIN, build_id="v1") == 1
    assert alerts_at(eng, clock, 2 * MIN, build_id="v2") == 1  # a deploy holds nothing in test
    eng.mark_loadtest("api", at_ns=10 * MIN)
    assert alerts_at(eng, clock, 11 * MIN, build_id="v2") == 0
    assert alerts_at(eng, clock, 39 * MIN, build_id="v2") == 0
    assert alerts_at(eng, clock, 41 * MIN, build_id="v2") == 1
    assert alerts_at(eng, clock, 12 * MIN, comm="billing") == 1  # only the service under test
    assert stats.get("lgf_alerts_silenced_total", cause="lock", reason="loadtest") == 2


def test_prod_has_no_default_silence(tmp_path):
    eng, clock, _ = engine_for(tmp_path, "prod")
    assert alerts_at(eng, clock, 1 * MIN, build_id="v1") == 1
    assert alerts_at(eng, clock, 2 * MIN, build_id="v2") == 1
    eng.mark_loadtest("api", at_ns=3 * MIN)
    assert alerts_at(eng, clock, 4 * MIN, build_id="v2") == 1
    assert eng.policy.approval  # its silences wait for a second person (tests/test_roles.py)


def test_a_user_named_environment_starts_from_the_one_it_is_like(tmp_path):
    eng, clock, _ = engine_for(tmp_path, "staging", {"staging": {"like": "test", "threshold": "150ms"}})
    assert eng.threshold_ns == 150 * MS and eng.policy.silence_after_loadtest == 30 * MIN
    assert eng.policy.warning == DEFAULT_POLICIES["test"].warning
    eng.mark_loadtest("api", at_ns=1 * MIN)
    assert alerts_at(eng, clock, 2 * MIN) == 0
    eng2, _, _ = engine_for(tmp_path / "b", "canary", {"canary": {"warning": "300ms"}})  # like prod by default
    assert eng2.policy.approval and eng2.policy.sigma_scale == 0.8 and eng2.policy.warning == 300 * MS


@pytest.mark.parametrize("env,environments,message", [
    ("prd", {}, r"lgf.env: unknown environment 'prd' .*did you mean 'prod'"),
    ("staging", {"staging": {"like": "tset"}}, r"environments.staging.like: .*did you mean 'test'"),
    ("prod", {"prod": {"sigma_scale": 0}}, r"environments.prod: sigma_scale must be more than 0"),
    ("dev", {"dev": {"silence_after_deploy": "2 hours"}}, r"environments.dev.silence_after_deploy: .* not a duration"),
])
def test_bad_environments_are_refused_with_their_key_path(tmp_path, env, environments, message):
    with pytest.raises(ConfigErrors, match=message):
        engine_for(tmp_path, env, environments)
