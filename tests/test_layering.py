"""Every import points into core (tests/support/layering.py, also run by `make lint`)."""

from __future__ import annotations

from pathlib import Path

from support.layering import wrong_way_imports

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
