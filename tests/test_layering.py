"""The structure rules of tests/support/layering.py (also run by `make lint`): every import points
into core, no import cycle among lgf's modules, no module-level state. Each is checked on the
real tree and shown failing on a small tree made to break it."""

from __future__ import annotations

from pathlib import Path

from support.layering import import_cycles, main, module_state, wrong_way_imports

ROOT = Path(__file__).resolve().parents[1]


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in ("core", "sources", "plugins", "sinks"):
        (tmp_path / folder).mkdir(exist_ok=True)
    return tmp_path


def test_the_real_tree_has_no_wrong_way_import():
    assert wrong_way_imports(ROOT) == []


def test_core_importing_a_plugin_is_caught(tmp_path):
    root = _tree(tmp_path, {"core/http.py": "from lgf.plugins.waitreason import cause_of\n"})
    (problem,) = wrong_way_imports(root)
    assert problem.startswith("core/http.py:1: lgf.http imports lgf.plugins.waitreason")


def test_a_source_importing_a_plugin_or_a_sink_is_caught(tmp_path):
    root = _tree(tmp_path, {"sources/uprobe.py": "import lgf.plugins.sched\nfrom lgf.sinks import stdout\n"})
    assert [p.split(" imports ")[1].split(" ")[0] for p in wrong_way_imports(root)] == [
        "lgf.plugins.sched", "lgf.sinks.stdout"]


def test_the_go_reading_library_emits_and_judges_nothing(tmp_path):
    root = _tree(tmp_path, {"core/golang/reader.py": "from lgf import Event\nfrom ..idle import IdleRules\n",
                            "core/golang/fine.py": "from lgf.errors import TargetRefused\n"})
    assert [p.split(" imports ")[1].split(" ")[0] for p in wrong_way_imports(root)] == ["lgf.Event", "lgf.idle"]


def test_relative_imports_are_resolved(tmp_path):
    root = _tree(tmp_path, {"core/golang/runtime_reader.py": "from ..sources.uprobe import X\n"})
    assert "lgf.golang.runtime_reader imports lgf.sources.uprobe" in wrong_way_imports(root)[0]


def test_own_folder_and_core_are_allowed(tmp_path):
    root = _tree(tmp_path, {
        "sinks/wecom.py": "from .wecom_format import LIMITS\nfrom lgf import hookimpl, arming\n",
        "plugins/sched.py": "from lgf.golang.runtime_reader import RuntimeEnricher\n",
        "core/golang/x.py": "from . import goelf\nfrom lgf.causes import cause_of\n"})
    assert wrong_way_imports(root) == []


# --- import cycles ---------------------------------------------------------------------------------

def test_the_real_tree_has_no_import_cycle():
    assert import_cycles(ROOT) == []


def test_a_cycle_of_two_modules_is_caught_with_its_lines(tmp_path):
    root = _tree(tmp_path, {"core/__init__.py": "", "core/a.py": "import os\nfrom . import b\n",
                            "core/b.py": "from lgf.a import thing\n"})
    assert import_cycles(root) == ["import cycle: lgf.a (core/a.py:2) -> lgf.b (core/b.py:1) -> lgf.a"]


def test_a_function_level_or_type_checking_import_closes_a_cycle_too(tmp_path):
    root = _tree(tmp_path, {
        "core/__init__.py": "",
        "core/components.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .config import Config\n",
        "core/config.py": "from .components import KINDS\n",
        "core/run.py": "from . import reload\n",
        "core/reload.py": "def reload(host):\n    from .run import load\n"})
    found = import_cycles(root)
    assert len(found) == 2, found
    assert any("lgf.components (core/components.py:3) -> lgf.config" in c for c in found)
    assert any("lgf.reload (core/reload.py:2) -> lgf.run (core/run.py:1) -> lgf.reload" in c for c in found)


def test_a_longer_cycle_is_one_finding_and_names_every_module(tmp_path):
    root = _tree(tmp_path, {"core/__init__.py": "", "core/a.py": "from . import b\n",
                            "core/b.py": "from . import c\n", "core/c.py": "import lgf.a\n",
                            "plugins/p.py": "from lgf import a\n"})
    (cycle,) = import_cycles(root)
    assert cycle.startswith("import cycle: lgf.a (core/a.py:1) -> lgf.b (core/b.py:1) -> lgf.c (core/c.py:1) -> lgf.a")


def test_importing_a_name_from_the_package_points_at_the_package(tmp_path):
    root = _tree(tmp_path, {"core/__init__.py": "from .components import Component\n",
                            "core/components.py": "X = 1\n", "plugins/p.py": "from lgf import Component\n"})
    assert import_cycles(root) == []
    (tmp_path / "core/components.py").write_text("from lgf import hookimpl\n")
    assert import_cycles(root) == [
        "import cycle: lgf (core/__init__.py:1) -> lgf.components (core/components.py:1) -> lgf"]


# --- module-level state ----------------------------------------------------------------------------

def test_the_real_tree_has_no_module_level_state():
    assert module_state(ROOT) == []


def test_a_global_statement_is_caught(tmp_path):
    root = _tree(tmp_path, {"plugins/scope.py": "_rules = None\n\ndef configure(r):\n    global _rules\n    _rules = r\n"})
    (problem,) = module_state(root)
    assert problem.startswith("plugins/scope.py:4: global _rules")


def test_a_module_level_registry_is_caught_in_every_product_folder(tmp_path):
    root = _tree(tmp_path, {
        "plugins/scope.py": '_state: dict = {"options": None}\n',
        "sources/uprobe.py": "import collections\n_armers = collections.deque()\n",
        "sinks/wecom.py": "from weakref import WeakValueDictionary\nif True:\n    _budgets = WeakValueDictionary()\n",
        "core/cache.py": "_cache = {k: 0 for k in 'ab'}\n",
        "core/components.py": "class Registry:\n    instances = []\n"})
    found = module_state(root)
    assert [p.split(":")[0] for p in found] == ["core/cache.py", "core/components.py", "sources/uprobe.py",
                                                 "plugins/scope.py", "sinks/wecom.py"], found
    assert "Registry.instances is a mutable container at class level" in found[1]


def test_an_upper_case_constant_is_allowed_until_the_module_mutates_it(tmp_path):
    constant = 'SECTIONS = {"lgf": 1}\n__all__ = ["x"]\n\ndef get(k):\n    return SECTIONS[k]\n'
    root = _tree(tmp_path, {"core/config.py": constant})
    assert module_state(root) == []
    for mutation in ("SECTIONS['x'] = 2", "SECTIONS.update(x=2)", "del SECTIONS['lgf']", "SECTIONS |= {}"):
        (tmp_path / "core/config.py").write_text(constant + f"\ndef register():\n    {mutation}\n")
        (problem,) = module_state(root)
        assert "SECTIONS is UPPER_CASE but mutated in the module" in problem, mutation


def test_the_demo_is_exempt_and_tests_are_not_product_code(tmp_path):
    root = _tree(tmp_path, {"core/demo/__init__.py": "_procs = []\n", "tests/test_x.py": "seen = []\n"})
    assert module_state(root) == []


def test_main_fails_on_each_rule_and_passes_on_a_clean_tree(tmp_path, capsys):
    root = _tree(tmp_path, {"core/__init__.py": "", "core/ok.py": "LIMITS = (1, 2)\n"})
    assert main([str(root)]) == 0
    (tmp_path / "core/bad.py").write_text("_seen = set()\n")
    assert main([str(root)]) == 1
    assert "core/bad.py:1: _seen is a mutable container" in capsys.readouterr().out
