"""``benchmarks/search_quality.py``'s ``--augment``: R1 and the search on random shifts, with T and
S0 given (trained without them), never silently retrained with them."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(scope="module")
def quality(benchmark):  # type: ignore[no-untyped-def]
    return benchmark("search_quality")


def _main(quality, monkeypatch, *args: str) -> str:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sys, "argv", ["search_quality.py", "--allocator", "system", *args])
    with pytest.raises(SystemExit) as stopped:
        quality.main()
    return str(stopped.value)


def test_augment_needs_given_teacher_and_student(quality, monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = ["--out", str(tmp_path)]
    assert "needs --shared-student" in _main(quality, monkeypatch, "--augment", *out)
    said = _main(quality, monkeypatch, "--augment", "--shared-student", *out)
    assert f"no {tmp_path / 'teacher.pt'}" in said and "without --augment first" in said
    (tmp_path / "teacher.pt").write_bytes(b"")
    said = _main(quality, monkeypatch, "--augment", "--shared-student", *out)
    assert f"no {tmp_path / 'student.pt'}" in said
    assert not list(tmp_path.glob("mnist5k-seed*"))  # nothing was trained
