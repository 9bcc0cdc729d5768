"""Plugins: built-ins and third parties through the same door; a broken one is named, not fatal."""

from __future__ import annotations

import json
import sys
import textwrap

from lgf import hookspecs
from lgf.event import Event, write_events
from lgf.manager import make_manager
from support.cli import lgf, write


def test_third_party_plugin_is_listed_with_its_origin():
    res = lgf("plugins", "--json")
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)["plugins"]}
    assert rows["example"]["origin"] == "entry point (lgf-example 0.3.0)"
    assert set(rows["example"]["components"]) == {"sink:example_jsonl", "classifier:example_prefix"}
    assert rows["lgf.sinks.file"]["origin"] == "built-in"
    text = lgf("plugins").stdout
    assert "example" in text and "entry point (lgf-example 0.3.0)" in text


def test_replay_routes_events_through_a_third_party_sink_and_classifier(tmp_path):
    events = [Event(pid=1, goid=i, start_ns=0, end_ns=80_000_000, wait_reason=w)
              for i, w in enumerate(["custom wait", "chan receive", "custom thing"])]
    recording = tmp_path / "rec.msgpack"
    write_events(recording, events)
    out = tmp_path / "example.txt"
    cfg = write(tmp_path / "c.toml", f"""
[lgf]
spool_dir = "{tmp_path}/spool"
[[classifiers]]
use = "example_prefix"
prefix = "custom"
cause = "custom_cause"
[[sinks]]
use = "example_jsonl"
path = "{out}"
""")
    res = lgf("replay", str(recording), "--config", str(cfg))
    assert res.returncode == 0, res.stderr
    lines = [ln.split() for ln in out.read_text().splitlines()]
    by_id = {ev_id: cause for ev_id, cause, kind in lines if kind == "stall"}
    assert by_id[events[0].id] == "custom_cause"
    assert by_id[events[2].id] == "custom_cause"
    assert by_id[events[1].id] != "custom_cause"  # left to the next classifier
    assert "replayed 3 event(s)" in res.stderr


def test_broken_plugin_is_reported_by_name_and_the_rest_load(tmp_path, monkeypatch):
    pkg = tmp_path / "brokenplug.py"
    pkg.write_text("raise RuntimeError('boom at import')\n")
    misspelt = tmp_path / "misspelt.py"
    misspelt.write_text(textwrap.dedent("""
        from lgf import hookimpl
        @hookimpl
        def lgf_clasify(event):
            return "x"
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    m = make_manager(entry_points=False, extra=["brokenplug", "misspelt"])
    errors = "\n".join(str(f) for f in m.failures)
    assert "plugin 'brokenplug': failed to load: RuntimeError: boom at import" in errors
    assert "plugin 'misspelt': rejected: unknown hook 'lgf_clasify'" in errors
    assert ("sink", "file") in m.components()  # the built-ins are still there
    sys.modules.pop("brokenplug", None)


def test_plugin_named_in_config_is_loaded(tmp_path):
    (tmp_path / "mysink.py").write_text(textwrap.dedent("""
        from lgf import Component, hookimpl
        class Sink:
            def __init__(self, options, ctx): self.path = ctx.config.raw["lgf"]["spool_dir"] + "/seen"
            def send(self, event):
                open(self.path, "a").write(event.id + "\\n")
        @hookimpl
        def lgf_components():
            return [Component("sink", "mine", Sink)]
    """))
    spool = tmp_path / "spool"
    spool.mkdir()
    cfg = write(tmp_path / "c.toml", f'[lgf]\nspool_dir = "{spool}"\nplugins = ["mysink"]\n'
                                     '[[sinks]]\nuse = "mine"\n')
    rec = tmp_path / "r.jsonl"
    write_events(rec, [Event(pid=3, end_ns=10**8)], fmt="jsonl")
    res = lgf("replay", str(rec), "--config", str(cfg), env={"PYTHONPATH": str(tmp_path),
                                                              "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    assert len((spool / "seen").read_text().split()) == 1


def test_every_hook_is_documented_with_its_arguments():
    import inspect
    for name in dir(hookspecs):
        if not name.startswith("lgf_"):
            continue
        fn = getattr(hookspecs, name)
        doc = inspect.getdoc(fn) or ""
        assert len(doc) > 40, f"{name} has no docstring"
        for arg in inspect.signature(fn).parameters:
            assert f":param {arg}:" in doc, f"{name} does not document {arg}"


# --- the contract, enforced when a component is loaded (lgf.components.missing) -------------------

BROKEN = textwrap.dedent('''
    from lgf import Component, hookimpl

    class NoSend:
        def __init__(self, options, ctx): pass
        def deliver(self, event): pass

    class HalfSource:
        def __init__(self, options, ctx): pass
        def start(self, emit): pass

    class UnmarkedEnricher:
        def __init__(self, options, ctx): pass
        def lgf_enrich(self, event): event.extra["never"] = True

    class NoClassify:
        def __init__(self, options, ctx): pass
        @hookimpl
        def lgf_enrich(self, event): pass

    class GoodSink:
        def __init__(self, options, ctx): pass
        def send(self, event): pass

    def sink_factory(options, ctx):  # a function: what it makes is known only once it is called
        return NoSend(options, ctx)

    @hookimpl
    def lgf_components():
        return [Component("sink", "nosend", NoSend), Component("source", "half", HalfSource),
                Component("enricher", "unmarked", UnmarkedEnricher),
                Component("classifier", "noclassify", NoClassify),
                Component("sink", "made_by_function", sink_factory), Component("sink", "good", GoodSink)]
''')


def _broken(tmp_path, monkeypatch) -> str:
    (tmp_path / "brokencomponents.py").write_text(BROKEN)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("brokencomponents", None)
    return "brokencomponents"


def test_components_missing_a_required_member_are_refused_by_lgf_check(tmp_path, monkeypatch):
    """lgf check (lgf.run.load) names each table, the component and what it lacks; nothing runs."""
    import pytest

    from lgf.errors import ConfigErrors
    from lgf.run import load

    plugin = _broken(tmp_path, monkeypatch)
    cfg = write(tmp_path / "c.toml", f'[lgf]\nspool_dir = "{tmp_path}"\nplugins = ["{plugin}"]\n'
                                     '[[sources]]\nuse = "half"\n[[enrichers]]\nuse = "unmarked"\n'
                                     '[[classifiers]]\nuse = "noclassify"\n[[sinks]]\nuse = "nosend"\n'
                                     '[[sinks]]\nuse = "good"\n')
    with pytest.raises(ConfigErrors) as caught:
        load(str(cfg), entry_points=False)
    errors = sorted(str(e) for e in caught.value.errors)
    assert errors == [
        "classifiers[0].use: classifier 'noclassify' (NoClassify) lacks an @lgf.hookimpl lgf_classify()"
        " (see lgf.components)",
        "enrichers[0].use: enricher 'unmarked' (UnmarkedEnricher) lacks the @lgf.hookimpl mark on"
        " lgf_enrich() (unmarked, it is never called) (see lgf.components)",
        "sinks[0].use: sink 'nosend' (NoSend) lacks send() (see lgf.components)",
        "sources[0].use: source 'half' (HalfSource) lacks stop() (see lgf.components)",
    ], errors
    res = lgf("check", str(cfg), env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 2 and "sink 'nosend' (NoSend) lacks send()" in res.stderr, res.stderr


def test_a_factory_making_an_incomplete_component_is_refused_at_start(tmp_path, monkeypatch):
    """A factory function says nothing before it is called: the host refuses what it made, by the
    table's name, before any event, and stops the queues of the sinks it had already made."""
    import threading

    import pytest

    from lgf.errors import ConfigErrors
    from lgf.testing import PipelineRun

    plugin = _broken(tmp_path, monkeypatch)
    with pytest.raises(ConfigErrors) as caught:
        PipelineRun('[[sinks]]\nuse = "good"\nname = "ok"\n[[sinks]]\nuse = "made_by_function"\nname = "pager"\n',
                    plugins=[plugin])
    (error,) = caught.value.errors
    assert str(error) == "sinks[1].use: sink 'made_by_function' (pager) lacks send() (see lgf.components)"
    assert not [t for t in threading.enumerate() if t.name == "lgf-delivery-ok"], "the good sink's queue was stopped"


def test_the_builtins_and_the_example_plugin_pass_the_contract():
    from lgf.components import missing
    m = make_manager(entry_points=True)
    for (kind, use), comp in m.components().items():
        if isinstance(comp.factory, type):
            assert missing(kind, comp.factory) == [], (kind, use)
    # made by a function (its modules are imported only by a host that runs it): its class
    from lgf.sources.uprobe import UprobeSource
    assert missing("source", UprobeSource) == []


def test_the_always_on_scope_step_is_listed_and_takes_no_table():
    """scope is a built-in like the others (listed by `lgf plugins`), made by every host itself."""
    import pytest

    from lgf.errors import ConfigErrors
    from lgf.testing import PipelineRun

    rows = {r["name"]: r for r in json.loads(lgf("plugins", "--json").stdout)["plugins"]}
    assert rows["lgf.plugins.scope"]["origin"] == "built-in"
    assert rows["lgf.plugins.scope"]["components"] == ["enricher:scope"]
    with pytest.raises(ConfigErrors) as caught:
        PipelineRun('[[enrichers]]\nuse = "scope"\n')
    assert [str(e) for e in caught.value.errors] == [
        "enrichers[0].use: enricher 'scope' is always on, one per host: it takes no table (remove this table)"]
    with PipelineRun() as run:
        assert run.manager.infos["lgf.plugins.scope:scope"].origin == "built-in (per host)"
    # A table named like a registered plugin was dropped without a word by pluggy: now refused.
    with pytest.raises(ConfigErrors) as caught:
        PipelineRun('[[classifiers]]\nuse = "waitreason"\nname = "lgf.plugins.scope:scope"\n')
    assert [str(e) for e in caught.value.errors] == [
        "classifiers[0].name: 'lgf.plugins.scope:scope' is already the name of a registered plugin "
        "(give the table another name)"]
