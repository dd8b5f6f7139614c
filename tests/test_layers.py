"""The layer rules of pyproject.toml (import-linter) hold, and they bite when broken."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "lint_layers.py"


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_this_checkout_keeps_every_contract() -> None:
    out = _lint(REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 kept, 0 broken" in out.stdout


@pytest.mark.parametrize(
    ("file", "line", "broken"),
    [
        # the library must not reach up into the Lightning tasks
        (
            "ife_platform/scores.py",
            "import ife_platform.tasks.rainbow",
            "ife_platform.scores -> ife_platform.tasks.rainbow",
        ),
        # a Lightning task must not call the assembler
        (
            "tasks/a3c.py",
            "from ife_platform import experiment",
            "ife_platform.tasks.a3c -> ife_platform.experiment",
        ),
        # nothing imports the CLI, not even lazily inside a function
        (
            "callbacks/evaluation.py",
            "def f():\n    from ife_platform import cli",
            "ife_platform.callbacks.evaluation -> ife_platform.cli",
        ),
        # no cycles: the registry importing the config that imports it
        ("ife_platform/registry.py", "import ife_platform.config", ".registry -> .config"),
    ],
)
def test_a_forbidden_import_breaks_a_contract(tmp_path: Path, file, line, broken) -> None:
    for name in ("ife_platform", "tasks", "callbacks"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    target = tmp_path / file
    target.write_text(target.read_text() + f"\n{line}\n")
    out = _lint(tmp_path)
    assert out.returncode == 1, out.stdout
    assert broken in out.stdout.split("Broken contracts")[-1], out.stdout


def test_public_api_type_checks(tmp_path: Path) -> None:
    """mypy is clean on the files pyproject.toml's [tool.mypy] lists (the public API)."""
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success: no issues found" in out.stdout
