"""The ResKD pipeline end to end on the real digits, stage reuse, resume and config errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from api.client import load_json_or_yaml
from distill.combined import CombinedStudent
from distill.gap_info import SampleOutputs
from search.config import RunConfig
from search.pipeline import run

# make test-fast runs the unmarked cases: configs that fail before any training. The module's
# finished run is made once, on one test worker in a parallel run.
pytestmark = pytest.mark.xdist_group("pipeline")

TINY = {
    "dataset": "digits",
    "val_size": 100,
    "teacher": {"model": "resnet8", "width": 0.5},
    "student": {"model": "resnet8", "width": 0.25},
    "res_students": [{"model": "resnet8", "width": 0.25}],
    "kd": {"distance": "kl"},
    "preset": "cpu-tiny",
    "train": {"epochs": 1},
    "teacher_train": {"epochs": 2},
    "ratio": None,  # termination off: every stage asked for trains
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("run")
    config = RunConfig.from_dict({**TINY, "max_stages": 2, "baselines": ["ensemble", "together"]})
    return out, config, run(config, out_dir=out, progress=False, log=lambda _: None)


@pytest.mark.slow
def test_run_reports_every_model(finished) -> None:
    out, _, result = finished
    names = [r.model for r in result.rows]
    assert names == ["T", "S0", "S1", "S2", "S2 adaptive", "ensemble", "together"]
    t, s0, s1, s2 = result.rows[:4]
    assert s0.mflops < s1.mflops < s2.mflops < t.mflops
    assert s2.adaptive_mflops <= s2.mflops
    assert result.rows[4].adaptive_mflops <= s2.mflops
    assert t.l2_to_T == 0 and s0.l2_to_T > 0
    report = json.loads((out / "report.json").read_text())
    assert report["logits"] == "cached once per stage"
    assert report["threshold"] == pytest.approx(result.threshold)
    text = (out / "report.txt").read_text()
    assert "S2 adaptive" in text
    # units in the headers, accuracy in percent (report.json keeps fractions), Energy explained
    header, _, first = text.splitlines()[:3]
    assert "D_v acc" in header and "% of T's MFLOPs" in header and first.count("%") == 2
    assert f"{100 * t.accuracy:.2f}" in text.splitlines()[2]
    assert report["rows"][0]["accuracy"] == pytest.approx(t.accuracy) and t.accuracy <= 1
    assert "energy: the mean over test samples of the sum of squared softmax" in text
    # Table VIII's GI/C1 to T over the samples S0 gets wrong and some S_i right, named
    n = report["gi_samples"]
    if n:
        assert t.gi_over_c1_to_T == 0 and s0.gi_over_c1_to_T and s0.gi_over_c1_to_T > 0
        assert "GI/C1 to T (eq. 21, Table VIII): mean ||S - T||_2 over the" in text
    else:
        assert s0.gi_over_c1_to_T is None
    # each S_i's per-sample test outputs, for the reading across runs
    outputs = SampleOutputs.load(out)
    assert outputs.models == ["S0", "S1", "S2"] and outputs.archs == [s0.arch, s1.arch, s2.arch]
    assert outputs.predictions.shape == outputs.gi.shape == (3, len(outputs.labels))
    assert float(outputs.gi[0].mean()) == pytest.approx(s0.l2_to_T, rel=1e-5)


@pytest.mark.slow
def test_the_report_says_why_the_run_stopped(finished, tmp_path: Path) -> None:
    out, config, result = finished
    # termination off (ratio null): the two res-students asked for, whatever their Energy
    assert [r.model for r in result.rows if r.role == "stage"] == ["S0", "S1", "S2"]
    assert result.stop_reason == "max_stages 2 reached"
    assert "stopped: max_stages 2 reached" in (out / "report.txt").read_text()
    assert json.loads((out / "report.json").read_text())["stop_reason"] == "max_stages 2 reached"
    # the same stages (reused) under a ratio every S1 passes: Energy stops the run at S1
    quiet = {"progress": False, "log": lambda _: None, "stages_dir": out}
    energy = run(config.model_copy(update={"ratio": 0.01}), out_dir=tmp_path / "e", **quiet)
    assert [r.model for r in energy.rows if r.role == "stage"] == ["S0", "S1"]
    assert re.fullmatch(
        r"Energy\(S1, D_v\) \d\.\d{4} > 0\.01 x Energy\(T, D_v\) \d\.\d{4}",
        energy.stop_reason or "",
    )
    assert not any(s["trained"] for s in energy.stages)
    # no max_stages: as many res-students as the config lists
    listed = run(RunConfig.from_dict(TINY), out_dir=tmp_path / "r", **quiet)
    assert listed.stop_reason == "res_students exhausted (1 given)"
    assert [r.model for r in listed.rows if r.role == "stage"] == ["S0", "S1"]


@pytest.mark.slow
def test_combined_student_file_reproduces_the_adaptive_row(finished) -> None:
    out, _, result = finished
    model = CombinedStudent.load(out / "combined_student.pt")
    assert model.threshold == pytest.approx(result.threshold) and model.num_stages == 2
    from distill.combined import evaluate_adaptive
    from distill.data import load_dataset

    evaluation = evaluate_adaptive(model, load_dataset("digits", augment=False).test)
    assert evaluation.accuracy == pytest.approx(result.rows[4].accuracy)


@pytest.mark.slow
def test_a_second_run_reuses_every_stage(finished) -> None:
    out, config, first = finished
    second = run(config, out_dir=out, progress=False, log=lambda _: None)
    assert not any(s["trained"] for s in second.stages)
    assert [r.accuracy for r in second.rows] == [r.accuracy for r in first.rows]


@pytest.mark.slow
def test_a_changed_res_student_retrains_only_from_there(finished) -> None:
    out, _config, _ = finished
    changed = RunConfig.from_dict(
        {
            **TINY,
            "max_stages": 2,
            "res_students": [
                {"model": "resnet8", "width": 0.25},
                {"model": "resnet8", "width": 0.5},
            ],
        }
    )
    result = run(changed, out_dir=out, progress=False, log=lambda _: None)
    trained = {s.get("network", s["kind"]): s["trained"] for s in result.stages}
    assert trained == {"teacher": False, "gate": False, "S0": False, "R1": False, "R2": True}


@pytest.mark.slow
def test_an_interrupted_stage_resumes_from_its_epoch_checkpoint(
    tmp_path: Path, monkeypatch
) -> None:
    import distill.stages as stages_module
    from distill import train as train_module

    config = RunConfig.from_dict({**TINY, "teacher_train": {"epochs": 3}})
    calls = []
    real_fit = train_module.fit

    def dying_fit(*args, **kwargs):
        def on_epoch(record, total):
            calls.append(record.epoch)
            if record.epoch == 2 and len(calls) == 2:
                raise KeyboardInterrupt

        return real_fit(*args, **kwargs, on_epoch=on_epoch)

    monkeypatch.setattr(stages_module, "fit", dying_fit)
    with pytest.raises(KeyboardInterrupt):
        run(config, out_dir=tmp_path, progress=False, log=lambda _: None)
    assert calls == [1, 2]
    monkeypatch.setattr(stages_module, "fit", real_fit)
    epochs_seen = []
    monkeypatch.setattr(
        stages_module, "fit", lambda *a, **k: epochs_seen.append(real_fit(*a, **k).resumed_from)
    )
    run(config, out_dir=tmp_path, progress=False, log=lambda _: None)
    assert epochs_seen[0] == 2  # the teacher resumed after its 2nd epoch, not from scratch


@pytest.mark.slow
def test_augmented_runs_compute_frozen_logits_per_batch(tmp_path: Path) -> None:
    config = RunConfig.from_dict({**TINY, "augment": True, "teacher_train": {"epochs": 1}})
    result = run(config, out_dir=tmp_path, progress=False, log=lambda _: None)
    assert not result.logits_cached
    assert json.loads((tmp_path / "report.json").read_text())["logits"].startswith("computed")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"dataset": "svhn"}, "dataset"),
        ({"teacher": "vgg16"}, "teacher.model"),
        (
            {"res_students": [{"model": "resnet8", "num_classes": 100}]},
            "res_students[0].num_classes",
        ),
        ({"ratio": 0.0}, "ratio"),
        ({"ratio": 1.5}, "ratio"),
        ({"kd": {"distance": "l1"}}, "kd.distance"),
        ({"kd": {"method": "rkd"}}, "kd.method"),
        ({"baselines": ["bagging"]}, "baselines"),
        ({"preset": "fast"}, "preset"),
        ({"train": {"epochz": 3}}, "train"),
        ({"colour": "red"}, "colour"),
        ({"res_students": []}, "res_students"),
    ],
)
def test_bad_configs_fail_before_training_naming_the_field(change: dict, field: str) -> None:
    with pytest.raises(ValueError) as info:
        RunConfig.from_dict({**TINY, **change})
    assert str(info.value).startswith(f"{field}"), str(info.value)


def test_val_size_larger_than_the_training_set_fails_before_training(tmp_path: Path) -> None:
    config = RunConfig.from_dict({**TINY, "val_size": 5000})
    with pytest.raises(ValueError, match="val_size: must be <= 1437"):
        run(config, out_dir=tmp_path, progress=False, log=lambda _: None)
    assert not any(tmp_path.glob("teacher-*"))


def test_yaml_config_file(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("dataset: digits\nteacher: resnet20\nstudent: resnet8\nres_students: resnet8\n")
    config = RunConfig.from_dict(load_json_or_yaml(path))
    assert config.res_students[0].model == "resnet8" and config.stages == 1
    with pytest.raises(ValueError, match="config: no file"):
        load_json_or_yaml(tmp_path / "missing.yaml")


@pytest.mark.slow
def test_teacher_checkpoint_is_loaded_instead_of_trained(tmp_path: Path) -> None:
    from distill.data import dataset_info
    from distill.models import build_model

    teacher = build_model("resnet8", dataset_info("digits"), width=0.5)
    torch.save(teacher.state_dict(), tmp_path / "t.pt")
    config = RunConfig.from_dict(
        {**TINY, "teacher_checkpoint": str(tmp_path / "t.pt"), "allow_weak_teacher": True}
    )  # untrained: the gate would stop it
    result = run(config, out_dir=tmp_path / "out", progress=False, log=lambda _: None)
    assert [s["kind"] for s in result.stages][:2] == ["gate", "student"]  # loaded, not trained
    assert any("under 2x chance" in w for w in result.warnings)


@pytest.mark.slow
def test_a_given_s0_is_loaded_and_its_residual_learnt(finished, tmp_path: Path) -> None:
    """``student_checkpoint``: S0's trained weights (a stage's ``weights.pt`` here) are loaded,
    not trained; S0's accuracy is the trained one's, and R1 learns that S0's residual."""
    from distill.config import ConfigError

    out, _, trained = finished
    (weights,) = out.glob("student-*/weights.pt")
    config = RunConfig.from_dict({**TINY, "student_checkpoint": str(weights), "seed": 1})
    result = run(config, out_dir=tmp_path / "out", progress=False, log=lambda _: None)
    s0_stage = next(s for s in result.stages if s.get("network") == "S0")
    assert s0_stage["trained"] is False and s0_stage["seconds"] == 0  # nothing trains S0
    assert [s["kind"] for s in result.stages].count("residual") == 1
    rows = {r.model: r for r in result.rows}
    assert rows["S0"].accuracy == pytest.approx(
        next(r for r in trained.rows if r.model == "S0").accuracy
    )
    assert rows["S1"].mflops > rows["S0"].mflops
    # a plain state dict works as well; one for another network names the field and the network
    torch.save(torch.load(weights, weights_only=True)["model"], tmp_path / "s0.pt")
    other = RunConfig.from_dict({**TINY, "student_checkpoint": str(tmp_path / "s0.pt"),
                                 "student": {"model": "resnet8", "width": 0.5}})  # fmt: skip
    with pytest.raises(ConfigError, match=r"student_checkpoint: does not fit resnet8x0.5"):
        run(other, out_dir=tmp_path / "other", progress=False, log=lambda _: None)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    junk = RunConfig.from_dict({**TINY, "student_checkpoint": str(tmp_path / "junk.pt")})
    with pytest.raises(ConfigError, match="student_checkpoint: not a state dict torch loads"):
        run(junk, out_dir=tmp_path / "junk", progress=False, log=lambda _: None)


@pytest.fixture(scope="module")
def digits_t_s0():
    from distill.data import load_dataset
    from distill.models import build_model
    from distill.train import Supervised, fit, preset

    torch.manual_seed(0)
    data = load_dataset("digits", augment=False)
    teacher = build_model("resnet8", data.info, width=0.5)
    fit(Supervised(teacher), data.train, config=preset("cpu-tiny", epochs=2), progress=False)
    s0 = build_model("resnet8", data.info, width=0.25)
    fit(Supervised(s0), data.train, config=preset("cpu-tiny", epochs=1), progress=False)
    return data, teacher.eval(), s0.eval()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["kd", "dml", "relational"])
@pytest.mark.parametrize("frozen", ["cached", "per-batch"])
def test_every_method_trains_a_res_student(digits_t_s0, method: str, frozen: str) -> None:
    from distill.methods import METHODS
    from distill.models import build_model
    from distill.residual import ResidualDistillation
    from distill.train import fit, predict_logits, preset

    data, teacher, s0 = digits_t_s0
    before = {k: v.clone() for k, v in s0.state_dict().items()}
    kd = METHODS[method](**({} if method == "relational" else {"distance": "kl"}))
    cache = None
    if frozen == "cached":
        cache = (
            predict_logits(teacher, data.train_eval)[0],
            predict_logits(s0, data.train_eval)[0],
        )
    torch.manual_seed(0)
    r1 = build_model("resnet8", data.info, width=0.25)
    task = ResidualDistillation(
        r1,
        objective=kd.objective(),
        method=kd,
        cache=cache,
        teacher=None if cache else teacher,
        base=None if cache else s0,
        peer=build_model("resnet8", data.info, width=0.25) if kd.needs_peer else None,
    )
    history = fit(task, data.train, config=preset("cpu-tiny", epochs=2), progress=False)
    assert history.epochs[-1].loss < history.epochs[0].loss
    assert all(torch.equal(before[k], v) for k, v in s0.state_dict().items())  # S0 stays frozen
    assert not s0.training


def _image_tree(root: Path, classes: list[str], per_class: int) -> None:
    import numpy as np
    from PIL import Image

    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(np.full((12, 12, 3), 9 * i, np.uint8)).save(
                    root / split / c / f"{i}.png"
                )


def test_an_empty_dataset_fails_before_training(tmp_path: Path) -> None:
    from distill.data import DatasetError

    _image_tree(tmp_path / "data", ["a", "b"], per_class=0)
    config = RunConfig.from_dict({**TINY, "dataset": "imagefolder", "root": str(tmp_path / "data")})
    with pytest.raises(DatasetError, match="imagefolder"):
        run(config, out_dir=tmp_path / "out", progress=False, log=lambda _: None)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_class_count_of_a_folder_dataset_is_checked_against_its_class_folders(
    tmp_path: Path,
) -> None:
    _image_tree(tmp_path / "data", ["a", "b", "c"], per_class=1)
    raw = {
        **TINY,
        "dataset": "imagefolder",
        "root": str(tmp_path / "data"),
        "res_students": [{"model": "resnet8", "num_classes": 10}],
    }
    with pytest.raises(ValueError, match=r"res_students\[0\].num_classes: must be 3"):
        RunConfig.from_dict(raw)  # the folder's class folders are read when the config is checked


@pytest.mark.slow
def test_table_ii_baselines_distil_from_t_with_s0s_settings_and_clip_genotype_nets(
    tmp_path: Path,
) -> None:
    """Both baseline networks learn from T (as S0 does): S0's KD settings (student_kd), not the
    res-students' residual ones; a genotype member is clipped at 5 like a searched R_i."""
    from space.genotypes import DARTS_V2

    genotype_net = {"genotype": DARTS_V2.to_dict(), "channels": 4, "layers": 3}
    config = RunConfig.from_dict(
        {
            **TINY,
            "res_students": [genotype_net],
            "student_kd": {"distance": "kl", "t": 2.0, "tau": 0.5},
            "max_stages": 1,
            "baselines": ["ensemble"],
        }
    )
    run(config, out_dir=tmp_path, progress=False, log=lambda _: None)
    members = {}
    for stage in tmp_path.glob("ensemble-*/config.json"):
        payload = json.loads(stage.read_text())
        members[payload["member"]] = payload
    assert sorted(members) == [0, 1]
    assert all(m["kd"]["t"] == 2.0 and m["kd"]["tau"] == 0.5 for m in members.values())
    assert members[0]["train"].get("grad_clip") is None  # the ResNet member
    assert members[1]["train"]["grad_clip"] == 5.0  # the genotype member
