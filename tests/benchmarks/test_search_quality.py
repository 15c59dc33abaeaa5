"""``benchmarks.search_quality``'s ``--augment`` (R1 and the search on random shifts, with T and
S0 given, trained without them, never silently retrained with them), its CIFAR runs from a local
root, and its pooled comparison."""

from __future__ import annotations

import json
import sys

import pytest

from tests.distill.cifar_files import write_cifar10


@pytest.fixture(scope="module")
def quality():  # type: ignore[no-untyped-def]
    from benchmarks import search_quality

    return search_quality


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


def test_pooled_paired_over_budgets(quality) -> None:  # type: ignore[no-untyped-def]
    """Searched minus random's per-seed mean, pooled over (budget, seed) pairs, with Student's t."""

    def rec(factor: float, seed: int, arm: str, s1: float) -> dict[str, object]:
        return {"factor": factor, "seed": seed, "arm": arm, "s1": s1}

    records = []
    # per-seed differences: x1 +0.20, +0.11 (seed 2 has no random: left out), x2 +0.30, -0.10, +0.20
    for factor, searched, randoms in (
        (1.0, [0.97, 0.96, 0.95], [[0.76, 0.78], [0.85, 0.85], []]),
        (2.0, [0.90, 0.80, 0.70], [[0.60], [0.90, 0.80, 1.00], [0.5]]),
    ):
        for seed, (s, rs) in enumerate(zip(searched, randoms, strict=True)):
            records.append(rec(factor, seed, "searched", s))
            records += [rec(factor, seed, "random", r) for r in rs]
    diffs = [0.20, 0.11, 0.30, -0.10, 0.20]
    assert quality.paired_diffs(records, 1.0, "random") == pytest.approx(diffs[:2])
    got = quality.pooled_paired(records, [1.0, 2.0], "random")
    mean = sum(diffs) / 5
    se = (sum((d - mean) ** 2 for d in diffs) / 4 / 5) ** 0.5
    assert got["n"] == 5
    assert got["mean"] == pytest.approx(mean) and got["se"] == pytest.approx(se)
    assert got["t"] == pytest.approx(mean / se)
    t4 = mean / se  # Student's t on 4 d.f.: sf(t) = 1/2 - (t/sqrt(4+t^2)) (1 + 2/(4+t^2)) / 2
    closed = 0.5 - 0.5 * (t4 / (4 + t4 * t4) ** 0.5) * (1 + 2 / (4 + t4 * t4))
    assert got["p"] == pytest.approx(closed, rel=1e-9)
    # no pairs at all (no handcrafted arm), and a constant difference (zero SE)
    assert quality.pooled_paired(records, [1.0, 2.0], "handcrafted") is None
    flat = [
        rec(f, s, a, 0.9 + (0.01 if a == "searched" else 0))
        for f in (1.0, 2.0)
        for s in (0, 1)
        for a in ("searched", "random")
    ]
    assert quality.pooled_paired(flat, [1.0, 2.0], "random")["p"] == 0.0


def test_cifar_needs_its_root_and_refuses_what_it_does_anyway(  # type: ignore[no-untyped-def]
    quality, monkeypatch, tmp_path
) -> None:
    out = ["--out", str(tmp_path / "out")]
    said = _main(quality, monkeypatch, "--dataset", "cifar10", *out)
    assert said.startswith("--root: dataset 'cifar10' is read from a local directory")
    root = ["--root", str(tmp_path)]
    said = _main(quality, monkeypatch, "--dataset", "cifar100", *root, "--augment", *out)
    assert said.startswith("--augment: cifar100 trains every stage, T and S0 included")
    said = _main(quality, monkeypatch, *root, *out)  # mnist5k ships in a package
    assert said.startswith("--root: dataset 'mnist5k' ships in a package")
    assert not (tmp_path / "out").exists()  # refused before anything was trained or written


def test_cifar10_from_a_local_root_trains_t_s0_and_r1_on_its_augmentation(  # type: ignore[no-untyped-def]
    quality, monkeypatch, tmp_path
) -> None:
    """Real CIFAR-format files (5 x 24 training images, 20 test): T and S0 are trained (not
    loaded), every stage on CIFAR's augmentation, and the arms are measured on the 20 test images."""
    write_cifar10(tmp_path / "cifar", per_batch=24, test=20)
    out = tmp_path / "out"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "search_quality.py", "--allocator", "system", "--dataset", "cifar10",
            "--root", str(tmp_path / "cifar"), "--device", "cpu", "--val-size", "20",
            "--seeds", "0", "--budgets", "0.5", "--arms", "handcrafted", "random",
            "--random", "1", "--epochs", "1", "--teacher-epochs", "1", "--shared-student",
            "--out", str(out),
        ],
    )  # fmt: skip
    quality.main()
    records = json.loads((out / "quality.json").read_text())["records"]
    assert sorted(r["arm"] for r in records) == ["handcrafted", "random"]
    assert all(round(r["s1"] * 20, 6) == round(r["s1"] * 20) for r in records)  # of 20 images
    run = out / "cifar10-seed0"
    for stage in ("teacher", "student", "residual"):
        configs = [json.loads(c.read_text()) for c in run.glob(f"{stage}-*/config.json")]
        assert configs, stage
        assert all(c["augment"] is True and c["root"] == str(tmp_path / "cifar") for c in configs)
    assert list(run.glob("teacher-*/weights.pt")) and (out / "teacher.pt").exists()
