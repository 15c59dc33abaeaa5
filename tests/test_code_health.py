"""Code health of the packages: short functions and files, no dead code, no import cycle.

Vulture and pylint are in the dev extra; a check whose tool is missing is skipped, saying so."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("space", "distill", "search", "api", "db")
MAX_FUNCTION_LINES = 80
MAX_FILE_LINES = 500


def _sources(*, migrations: bool = True) -> list[Path]:
    """The packages' modules; without ``migrations``, Alembic's aside (one function per change)."""
    return [
        path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if migrations or "migrations" not in path.relative_to(ROOT).parts
    ]


def _tool(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (it is in the dev extra: pip install -e '.[dev]')")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_no_function_is_longer_than_80_lines() -> None:
    long = []
    for path in _sources(migrations=False):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    assert long == []


def test_no_file_is_longer_than_500_lines() -> None:
    long = [
        f"{path.relative_to(ROOT)} ({n})"
        for path in _sources()
        if (n := len(path.read_text().splitlines())) > MAX_FILE_LINES
    ]
    assert long == []


def test_vulture_finds_no_dead_code() -> None:
    """Names only a framework calls (routes, validators, hooks) are in vulture_whitelist.py."""
    _tool("vulture")
    done = _run("vulture", *PACKAGES, "vulture_whitelist.py", "--min-confidence", "80")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""


@pytest.mark.slow
def test_no_import_cycle() -> None:
    _tool("pylint")
    done = _run(
        "pylint", "--disable=all", "--enable=cyclic-import", "--persistent=n", "--score=n",
        *PACKAGES,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cyclic-import" not in done.stdout
