"""The linters as tests: ruff (lint + format) and mypy --strict, configured in pyproject.toml."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PATHS = ["mtpoold", "tests", "examples", "bench"]


def run_tool(module: str, *args: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install -e '.[test]')")
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    command = " ".join([module, *args])
    assert result.returncode == 0, (
        f"{command} exited {result.returncode}:\n{result.stdout}{result.stderr}"
    )


def test_ruff_check() -> None:
    run_tool("ruff", "check", "--no-cache", *PATHS)


def test_ruff_format() -> None:
    run_tool("ruff", "format", "--check", "--no-cache", *PATHS)


def test_mypy_strict() -> None:
    run_tool("mypy")  # files and strictness from [tool.mypy] in pyproject.toml
