"""Static checks run with the tests: mypy --strict, ruff (lint and format), import-linter.

They are tests so that the one test command of the README (and CI) enforces them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.static


def _run(*cmd: str) -> None:
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"


def test_mypy_strict() -> None:
    _run(sys.executable, "-m", "mypy")


def test_ruff_lint() -> None:
    _run(sys.executable, "-m", "ruff", "check", ".")


def test_ruff_format() -> None:
    _run(sys.executable, "-m", "ruff", "format", "--check", ".")


def test_import_layers() -> None:
    lint_imports = shutil.which("lint-imports")
    assert lint_imports is not None, "import-linter is not installed (pip install -e '.[dev]')"
    _run(lint_imports)
