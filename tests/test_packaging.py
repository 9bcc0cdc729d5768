"""Every package folder is in pyproject's package list: a folder missing from it works in the
editable install the tests use and breaks the wheel, so the container image and a `pip install`
(an import error at `lgf run`) would be the first to notice."""

from __future__ import annotations

import tomllib

from support.gobuild import ROOT


def test_every_package_folder_is_packaged():
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = setup["package-dir"]
    listed = set(setup["packages"])
    found = set()
    for package, folder in dirs.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *rel.parts]) if rel.parts else package)
    assert found <= listed, f"not in pyproject's packages: {sorted(found - listed)}"
