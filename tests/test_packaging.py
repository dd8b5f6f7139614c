"""The wheel ships every subpackage (setuptools' explicit package list must not fall behind)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "ife_platform").rglob("__init__.py")
    }
    assert found <= listed, f"missing from [tool.setuptools] packages: {sorted(found - listed)}"
    for folder in ("tasks", "callbacks", "configs"):
        assert config["package-dir"][f"ife_platform.{folder}"] == folder
        assert f"ife_platform.{folder}" in listed
