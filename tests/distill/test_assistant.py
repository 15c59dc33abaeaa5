"""Feature-residual assistant distillation (Gao et al.): losses pinned by hand, model separation,
each variant's training, and the method inside ``reskd run``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distill.assistant import (
    AssistantDistillation,
    AssistedStudent,
    attention_map,
    attention_transfer,
    feature_distance,
    load_assisted,
    plan,
    save_assisted,
    separate,
    teacher_adapters,
)
from distill.models import NetSpec
from distill.train import fit, preset
from search.config import RunConfig
from search.pipeline import run

pytestmark = pytest.mark.slow  # trains models or starts servers: not in make test-fast


def test_feature_distance_eq3_by_hand() -> None:
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert feature_distance(s, torch.zeros(2, 2)).item() == pytest.approx(7.5)


def test_assistant_loss_is_eq4_on_the_residual() -> None:
    # ||(f_T - f_S) - f_A||^2 averaged: ((2-1) - .5)^2 and ((2-0) - 1)^2 -> (0.25 + 1) / 2
    t, s, a = torch.tensor([[2.0, 2.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 1.0]])
    assert feature_distance(s + a, t).item() == pytest.approx(0.625)
    assert ((t - s) - a).pow(2).mean().item() == pytest.approx(0.625)


def test_attention_transfer_by_hand() -> None:
    f = torch.zeros(1, 2, 1, 2)
    f[0, :, 0, 0] = torch.tensor([1.0, 1.0])  # mean square 1 at the first position, 0 at the second
    torch.testing.assert_close(attention_map(f), torch.tensor([[1.0, 0.0]]))
    g = torch.ones(1, 3, 1, 2)  # uniform: [1, 1] / sqrt(2)
    expected = ((1 - 2**-0.5) ** 2 + 0.5) / 2
    assert attention_transfer(f, g).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("model", "input_size", "classes"),
    [("resnet20", 32, 10), ("resnet18", 224, 1000)],
)
@pytest.mark.parametrize("ratio", [0.5, 0.7, 0.8, 0.9])
def test_separation_keeps_total_mflops_within_1_percent(
    model: str, input_size: int, classes: int, ratio: float
) -> None:
    original = NetSpec(model, 1.0, classes, 3, input_size)
    sep = separate(original, ratio=ratio)
    assert abs(sep.relative_error) <= 0.01, sep.to_dict()
    assert abs(sep.student_mflops / sep.original_mflops - ratio) < 0.05
    # Table 1 splits 90/10 as 1.5201 + 0.1687 of 1.6895 GFLOPs: each share within 0.5 points
    assert abs(sep.student_mflops / sep.original_mflops - ratio) < 0.005, sep.to_dict()
    assert abs(sep.assistant_mflops / sep.original_mflops - (1 - ratio)) < 0.005, sep.to_dict()
    assert sep.student_mflops + sep.assistant_mflops == pytest.approx(sep.total_mflops)
    # the square-root rule: S's last stage has about sqrt(ratio) of the original's channels
    last = original.build().stage_channels
    assert sep.student.stage_widths is not None
    assert sep.student.stage_widths[-1] == pytest.approx(
        list(last.values())[-1] * ratio**0.5 / (4 if model == "resnet50" else 1), rel=0.1
    )


def test_separation_rejects_a_share_outside_0_1() -> None:
    with pytest.raises(ValueError, match="separation"):
        separate(NetSpec("resnet8"), ratio=1.0)


def _tiny(variant: str):
    from distill.data import load_dataset
    from distill.models import build_model
    from distill.train import Supervised

    data = load_dataset("digits", augment=False)
    torch.manual_seed(0)
    teacher = build_model("resnet8", data.info, width=0.5)
    fit(Supervised(teacher), data.train, config=preset("cpu-tiny", epochs=1), progress=False)
    s = NetSpec.for_dataset("resnet8", data.info, width=0.25).build()
    a = NetSpec.for_dataset("resnet8", data.info, width=0.125).build()
    return data, teacher.eval(), AssistedStudent(s, a, variant=variant)


@pytest.mark.parametrize("variant", ["plain", "progressive", "integrated"])
def test_each_variant_trains_and_lowers_its_loss(variant: str) -> None:
    data, teacher, model = _tiny(variant)
    adapters = teacher_adapters(teacher, model.student)
    phases = plan(model, adapters)
    assert [p.phase for p in phases][-1] == "assistant"
    if variant == "progressive":
        assert len(phases) == 2 * len(model.student.stage_names)
    for phase in phases:
        frozen_s = {k: v.clone() for k, v in model.student.stages.state_dict().items()}
        task = AssistantDistillation(
            model,
            teacher,
            adapters,
            phase=phase.phase,
            levels=phase.levels,
            parts=phase.parts,
            at_weight=10.0,
        )
        history = fit(task, data.train, config=preset("cpu-tiny", epochs=2), progress=False)
        assert history.epochs[-1].loss < history.epochs[0].loss, phase.name
        if phase.phase == "assistant":  # S is frozen while A trains
            after = model.student.stages.state_dict()
            assert all(torch.equal(frozen_s[k], after[k]) for k in frozen_s)


@pytest.mark.parametrize("variant", ["plain", "progressive", "integrated"])
def test_an_untrained_assistant_adds_nothing(variant: str) -> None:
    s = NetSpec("resnet8", 0.5, 10, 1, 8).build().eval()
    a = NetSpec("resnet8", 0.25, 10, 1, 8).build()
    model = AssistedStudent(s, a, variant=variant).eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), s(x))
        torch.testing.assert_close(model.forward_head(model.forward_features(x)), model(x))


def test_assisted_student_file_round_trip(tmp_path: Path) -> None:
    sep = separate(NetSpec("resnet8", 1.0, 10, 1, 8), ratio=0.8)
    model = AssistedStudent(sep.student.build(), sep.assistant.build(), variant="progressive")
    torch.nn.init.normal_(model.to_student["layer3"].weight)
    save_assisted(model.eval(), sep, tmp_path / "a.pt")
    loaded = load_assisted(tmp_path / "a.pt")
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_assistant_method_in_reskd_run(tmp_path: Path) -> None:
    config = RunConfig.from_dict(
        {
            "method": "assistant",
            "dataset": "digits",
            "val_size": 50,
            "teacher": {"model": "resnet8", "width": 0.5},
            "student": "resnet8",
            "assistant": {"variant": "integrated", "separation": 0.9, "at_weight": 1000.0},
            "preset": "cpu-tiny",
            "train": {"epochs": 1},
            "teacher_train": {"epochs": 1},
            "baselines": ["feature_kd"],
        }
    )
    result = run(config, out_dir=tmp_path, progress=False, log=lambda _: None)
    names = [r.model for r in result.rows]
    assert names == ["T", "S (separated)", "S + A (integrated)", "feature KD (unseparated)"]
    combined, baseline = result.rows[2], result.rows[3]
    assert abs(combined.mflops / baseline.mflops - 1) <= 0.01
    assert combined.student_mflops + combined.assistant_mflops == pytest.approx(
        combined.mflops, rel=1e-6
    )
    assert (tmp_path / "assisted_student.pt").is_file()
    again = run(config, out_dir=tmp_path, progress=False, log=lambda _: None)
    assert not any(s["trained"] for s in again.stages)


def test_assistant_baselines_train_what_their_rows_say(tmp_path: Path) -> None:
    """Gao et al.'s Table 1 rows: "Student" (labels alone) and "Baseline w/o A" (feature KD,
    eq. 3), which stays the same stage when the run adds attention transfer."""
    base = {
        "method": "assistant",
        "dataset": "digits",
        "val_size": 50,
        "teacher": {"model": "resnet8", "width": 0.5},
        "student": "resnet8",
        "preset": "cpu-tiny",
        "train": {"epochs": 1},
        "teacher_train": {"epochs": 1},
    }

    def run_with(at_weight: float, baselines: list[str], out: str):
        config = {**base, "assistant": {"at_weight": at_weight}, "baselines": baselines}
        return run(
            RunConfig.from_dict(config), out_dir=tmp_path / out, stages_dir=tmp_path / "stages",
            progress=False, log=lambda _: None,
        )  # fmt: skip

    with_at = run_with(1000.0, ["plain_student", "feature_kd"], "at")
    names = [r.model for r in with_at.rows]
    assert names[-2:] == ["student, no KD (unseparated)", "feature KD (unseparated)"]
    assert with_at.rows[-2].mflops == with_at.rows[-1].mflops
    assert with_at.rows[-2].accuracy > 0.2  # trained: ten classes
    without_at = run_with(0.0, ["feature_kd"], "plain")
    kd = [{s["kind"]: s for s in r.stages}["feature_kd-student"] for r in (with_at, without_at)]
    assert kd[0]["key"] == kd[1]["key"] and not kd[1]["trained"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"assistant": {"variant": "stacked"}}, "assistant.variant"),
        ({"assistant": {"separation": 1.0}}, "assistant.separation"),
        ({"assistant": {"ratio": 0.5}}, "assistant.ratio"),
        ({"baselines": ["ensemble"]}, "baselines"),
        ({"method": "rkd"}, "method"),
    ],
)
def test_bad_assistant_configs_name_the_field(change: dict, field: str) -> None:
    base = {"method": "assistant", "dataset": "digits", "teacher": "resnet20", "student": "resnet8"}
    with pytest.raises(ValueError) as info:
        RunConfig.from_dict({**base, **change})
    assert str(info.value).startswith(field), str(info.value)


def _student_grads(loss: torch.Tensor, model: AssistedStudent) -> list[torch.Tensor]:
    params = [*model.student.stem.parameters(), *model.student.stages.parameters()]
    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params, strict=True)]


@pytest.mark.parametrize("mode", ["instead", "added"])
def test_rkd_plus_at_has_s_mimic_attention_maps_instead_of_feature_maps(mode: str) -> None:
    """Gao et al. 4.4: "S aims at mimicking the attention map, instead of feature map, from T, and
    A is still optimized to learn the residual error". S's gradient is AT's over every block
    (beta/2 sum ||Q_S/|Q_S| - Q_T/|Q_T|||^2) and nothing of eq. 3; ``added`` is eq. 3 + AT."""
    torch.manual_seed(0)
    teacher = NetSpec("resnet8", 0.5, 10, 1, 8).build().eval()
    s = NetSpec("resnet8", 0.5, 10, 1, 8).build()
    a = NetSpec("resnet8", 0.25, 10, 1, 8).build()
    model = AssistedStudent(s, a, variant="integrated").eval()
    adapters = teacher_adapters(teacher, model.student)
    student_phase, assistant_phase = plan(model, adapters)
    assert student_phase.at_levels == [0, 1, 2]  # every block, not only the last
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    task = AssistantDistillation(
        model, teacher, adapters, phase="student", levels=student_phase.levels,
        parts=student_phase.parts, at_weight=1000.0, at_mode=mode,  # type: ignore[arg-type]
        at_levels=student_phase.at_levels,
    )  # fmt: skip
    loss, _ = task.loss(x, y, torch.arange(6))
    levels = model.forward_levels(x)
    t_maps = list(teacher.forward_stages(x).values())
    blocks = student_phase.at_levels if mode == "instead" else student_phase.levels
    expected = sum(500.0 * attention_transfer(levels.student[k], t_maps[k]) for k in blocks)
    if mode == "added":
        last = student_phase.levels[-1]
        name = model.student.stage_names[last]
        expected = expected + feature_distance(adapters[name](levels.student[last]), t_maps[last])
    for got, want in zip(_student_grads(loss, model), _student_grads(expected, model), strict=True):
        torch.testing.assert_close(got, want)
    # A still learns the feature residual (eq. 5), with no attention term under "instead"
    a_task = AssistantDistillation(
        model, teacher, adapters, phase="assistant", levels=assistant_phase.levels,
        parts=assistant_phase.parts, at_weight=1000.0, at_mode=mode,  # type: ignore[arg-type]
    )  # fmt: skip
    plain = AssistantDistillation(
        model, teacher, adapters, phase="assistant", levels=assistant_phase.levels,
        parts=assistant_phase.parts,
    )  # fmt: skip
    with_at, _ = a_task.loss(x, y, torch.arange(6))
    without, _ = plain.loss(x, y, torch.arange(6))
    assert (with_at.item() == pytest.approx(without.item())) == (mode == "instead")


def test_every_adapter_eq5_uses_learns_in_the_integrated_variant() -> None:
    """Eq. 5 compares f_T^i with f_S^i + f_A^i at every block through 1x1 adapters (section
    3.6); each of them (S -> T and A -> S) must get a gradient in some phase and move, else the
    intermediate residuals are measured against channel-truncated teacher maps."""
    torch.manual_seed(0)
    teacher = NetSpec("resnet8", 1.0, 10, 1, 8).build().eval()
    model = AssistedStudent(
        NetSpec("resnet8", 0.5, 10, 1, 8).build(),
        NetSpec("resnet8", 0.25, 10, 1, 8).build(),
        variant="integrated",
    )
    adapters = teacher_adapters(teacher, model.student)
    used = {f"to_teacher.{k}": m for k, m in adapters.items()}
    used |= {f"to_student.{k}": m for k, m in model.to_student.items()}
    assert all(isinstance(m, torch.nn.Conv2d) for m in used.values())  # T is wider than S
    before = {name: m.weight.detach().clone() for name, m in used.items()}
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    got_grad = set()
    for phase in plan(model, adapters):
        task = AssistantDistillation.for_phase(model, teacher, adapters, phase)
        optimized = {id(p) for p in task.optimized_parameters()}
        optimizer = torch.optim.SGD(task.optimized_parameters(), lr=0.1)
        task.train()
        for _ in range(3):
            task.step(x, y, torch.arange(16), optimizer)
            got_grad |= {
                name
                for name, m in used.items()
                if id(m.weight) in optimized and m.weight.grad is not None and m.weight.grad.any()
            }
    assert got_grad == set(used)
    assert [n for n, m in used.items() if torch.equal(m.weight, before[n])] == []
