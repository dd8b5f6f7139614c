"""Check the import-linter contracts of pyproject.toml on the package as it is installed.

``tasks/`` and ``callbacks/`` sit at the repository's top level but are installed inside the
package as ``ife_platform.tasks`` and ``ife_platform.callbacks`` (pyproject.toml,
``[tool.setuptools.package-dir]``). import-linter (grimp) reads a package from one folder, so
this script copies the three folders into the layout a wheel has, in a temporary folder, and
runs ``lint-imports`` on that copy with the contracts of ``pyproject.toml``.

    python scripts/lint_layers.py            # this checkout
    python scripts/lint_layers.py --root DIR # another checkout (the tests lint a broken copy)

Exit status: 0 when every contract is kept, 1 when one is broken (lint-imports' report).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Top-level folders installed inside the package (pyproject.toml package-dir).
MAPPED = ("tasks", "callbacks")


def build_layout(root: Path, dest: Path) -> Path:
    """Copy ``root``'s package into ``dest`` as a wheel lays it out; returns the package dir."""
    package = dest / "ife_platform"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(root / "ife_platform", package, ignore=ignore)
    for name in MAPPED:
        shutil.copytree(root / name, package / name, ignore=ignore)
    return package


def lint(root: Path = REPO) -> int:
    """Run lint-imports on ``root``'s installed layout; returns its exit status."""
    with tempfile.TemporaryDirectory() as tmp:
        build_layout(root, Path(tmp))
        env = {**os.environ, "PYTHONPATH": tmp}
        cmd = [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())",
            str(root / "pyproject.toml"),
            "--no-cache",
            "--no-logo",
        ]
        return subprocess.run(cmd, env=env, cwd=tmp, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO, help="checkout to lint")
    return lint(parser.parse_args(argv).root.resolve())


if __name__ == "__main__":
    sys.exit(main())
