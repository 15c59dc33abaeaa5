"""The layering contract (pyproject's [tool.importlinter]) checked by import-linter itself, and no
private name imported from another module."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("space", "distill", "search", "api", "db")


def test_import_contracts_hold() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("import-linter is not installed (it is in the dev extra)")
    done = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_no_private_name_is_imported_across_modules() -> None:
    pattern = re.compile(r"^\s*from\s+[\w.]+\s+import\s+\(?([^)]*)\)?", re.MULTILINE)
    offenders = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for names in pattern.findall(path.read_text()):
                private = [
                    n.strip().split(" as ")[0]
                    for n in names.replace("\n", " ").split(",")
                    if n.strip().startswith("_") and not n.strip().startswith("__")
                ]
                offenders += [f"{path.relative_to(ROOT)}: {n}" for n in private]
    assert offenders == []


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses(source: str) -> list[str]:
    """The packages' private names that ``source`` reaches: ``from pkg.mod import _x`` and
    ``name._x`` where ``name`` was imported from a package (a module, class or function)."""
    import ast

    tree = ast.parse(source)
    ours = (*PACKAGES, "benchmarks")
    imported: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ours:
            found += [f"from {node.module} import {a.name}" for a in node.names if _private(a.name)]
            imported |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in ours:
                    found += [f"import {a.name}"] if any(map(_private, a.name.split("."))) else []
                    imported.add(a.asname or a.name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root: ast.expr = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in imported:
                found.append(f"{ast.unparse(node)} (line {node.lineno})")
    return found


def test_private_uses_are_found() -> None:
    source = (
        "from search.strategies import _cycle, train_supernet\n"
        "from space import pooling\nfrom space.pooling import MaxPool3x3\nimport search.run\n"
        "pooling._cache\nMaxPool3x3._pool = None\nsearch.run._shape\nlocal._fine\npooling.__doc__\n"
    )
    assert private_uses(source) == [
        "from search.strategies import _cycle",
        "pooling._cache (line 5)",
        "MaxPool3x3._pool (line 6)",
        "search.run._shape (line 7)",
    ]


def test_benchmarks_use_only_public_names_of_the_packages() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {use}"
        for path in sorted((ROOT / "benchmarks").glob("*.py"))
        for use in private_uses(path.read_text())
    ]
    assert offenders == []
