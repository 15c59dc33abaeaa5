"""Layering: NNI (optional, pinning old packages) is imported by its adapter only."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_only_the_adapter_imports_nni() -> None:
    pattern = re.compile(r"^\s*(import nni\b|from nni\b)", re.MULTILINE)
    importers = [
        str(path.relative_to(ROOT))
        for package in ("space", "search", "distill", "api", "db")
        for path in (ROOT / package).rglob("*.py")
        if pattern.search(path.read_text())
    ]
    assert importers == ["search/nni_adapter.py"]
