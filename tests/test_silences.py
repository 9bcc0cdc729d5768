"""Silences: matchers on any alert field, expiry, persistence across a restart."""

from __future__ import annotations

import json

import pytest

from lgf.silences import SilencesOptions, SilenceStore, matches, parse_matcher

ALERT = {"kind": "alert", "cause": "lock", "comm": "api-gw", "severity": "warning", "service": "api",
         "tags": {"team": "payments"}, "count": 12, "pid": 4242}


class Clock:
    def __init__(self, t=1_800_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


@pytest.mark.parametrize("matcher,hit", [
    ("cause=lock", True), ("cause=channel", False), ("cause!=channel", True),
    ("comm=~api-.*", True), ("comm=~^api", False),  # regexes match the whole value
    ("comm!~^db-.*", True), ("tags.team=payments", True), ("tags.team=infra", False),
    ("count=12", True), ("pid=4242", True), ("nosuchfield=", True), ("nosuchfield=x", False),
])
def test_matchers_on_any_field(matcher, hit):
    assert matches([matcher], ALERT) is hit


def test_every_matcher_of_a_silence_must_hold():
    assert matches(["cause=lock", "service=api"], ALERT)
    assert not matches(["cause=lock", "service=checkout"], ALERT)


@pytest.mark.parametrize("bad", ["cause", "=lock", "comm=~(", "1x=2"])
def test_a_bad_matcher_is_refused_with_the_syntax(bad):
    with pytest.raises(ValueError, match="matcher|regular expression"):
        parse_matcher(bad)


def test_a_silence_expires(tmp_path):
    clock = Clock()
    store = SilenceStore(str(tmp_path), clock=clock)
    s = store.add(["cause=lock"], duration="1h", comment="known issue")
    assert store.match(ALERT) is s and s.silenced == 1
    clock.t += 3601
    assert store.match(ALERT) is None
    assert store.list() == []


def test_runtime_silences_survive_a_restart_and_config_ones_come_from_config(tmp_path):
    clock = Clock()
    rules = [{"matchers": ["env=dev"], "comment": "dev is noisy"}]
    first = SilenceStore(str(tmp_path), rules, clock=clock)
    kept = first.add(["comm=~^api-.*"], duration="2h", created_by="oncall")
    gone = first.add(["cause=sleep"], duration="2h")
    first.expire(gone.id)
    on_disk = json.loads((tmp_path / "silences.json").read_text())
    assert [s["id"] for s in on_disk["silences"]] == [kept.id]  # config rules are not persisted

    second = SilenceStore(str(tmp_path), rules, clock=clock)
    ids = {s.id for s in second.list()}
    assert ids == {kept.id, "config-0"}
    assert second.match(ALERT).id == kept.id
    clock.t += 7201
    assert {s.id for s in SilenceStore(str(tmp_path), rules, clock=clock).list()} == {"config-0"}


def test_expiring_an_unknown_silence_says_so(tmp_path):
    assert SilenceStore(str(tmp_path)).expire("nope") is None


def test_add_needs_exactly_one_expiry(tmp_path):
    store = SilenceStore(str(tmp_path), clock=Clock())
    with pytest.raises(ValueError, match="exactly one"):
        store.add(["cause=lock"])
    with pytest.raises(ValueError, match="already be expired"):
        store.add(["cause=lock"], until="2001-01-01T00:00:00Z")


def test_config_rules_are_checked_with_their_key_path():
    with pytest.raises(ValueError, match=r"^rules\[0\].matchers\[1\]"):
        SilencesOptions(rules=[{"matchers": ["cause=lock", "comm=~("]}])
    with pytest.raises(ValueError, match=r"^rules\[0\].until"):
        SilencesOptions(rules=[{"matchers": ["cause=lock"], "until": "tomorrow"}])
