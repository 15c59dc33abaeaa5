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
