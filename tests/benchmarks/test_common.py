"""What the benchmarks share: the record names the command that reproduces it, ``--set`` reads as
the CLI's does, and the random arm's genotypes are the same draws wherever they are made."""

from __future__ import annotations

import json
import sys

import pytest

from benchmarks import common
from distill.data import dataset_info


def test_record_names_the_command_line(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sys, "argv", ["reskd_seeds.py", "--seeds", "0", "--out", "a dir"])
    path = common.write_record(tmp_path / "deep" / "r.json", {"accuracy": [0.97]})
    assert json.loads(path.read_text()) == {
        "command": "python reskd_seeds.py --seeds 0 --out 'a dir'",
        "accuracy": [0.97],
    }
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary file left


def test_set_reads_as_the_cli_does() -> None:
    spec = common.search_spec(1.5, 3, ["epochs=2", "strategy=darts", "warmup_epochs=1"])
    assert (spec.budget_mflops, spec.seed, spec.epochs, spec.strategy) == (1.5, 3, 2, "darts")
    assert spec.warmup_epochs == 1
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        common.search_spec(1.5, 3, ["epochs"])


def test_random_genotypes_are_the_same_draws_and_within_budget() -> None:
    info = dataset_info("mnist5k")
    spec = common.search_spec(0.5, 1)
    first = common.random_genotypes(spec, info, factor=1.0, count=2)
    again = common.random_genotypes(spec, info, factor=1.0, count=2)
    other = common.random_genotypes(spec, info, factor=2.0, count=2)
    assert [d.genotype for d in first] == [d.genotype for d in again]
    assert [d.genotype for d in first] != [d.genotype for d in other]
    assert all(d.mflops <= 0.5 for d in first)


def test_the_base_setting_extends_without_changing_it() -> None:
    reskd = common.reskd_config("mnist5k", 2, epochs=6, teacher_epochs=8)
    base = common.base_config("cifar10", 2, epochs=6, teacher_epochs=8, root="/data")
    quality = common.quality_setting(base)
    assert reskd["student"] == quality["student"] == {"model": "resnet14", "width": 0.25}
    assert (reskd["ratio"], quality["ratio"]) == (0.9, None)  # None: termination off
    assert quality["train"] == {"epochs": 6, "grad_clip": 5.0} and reskd["train"] == {"epochs": 6}
    assert (reskd["augment"], quality["augment"], quality["root"]) == (False, True, "/data")
    assert base["train"] == {"epochs": 6} and "ratio" not in base  # the base stays as it was
