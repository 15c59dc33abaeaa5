from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import Subset

from api.cli.main import main
from distill.config import parse
from distill.data import load_dataset
from distill.methods import KDConfig
from search.budget import BudgetError
from search.config import RunConfig
from search.pipeline import run, search
from search.run import SearchResult, residual_objective, run_search
from search.spec import SearchSpec
from space.genotypes import Genotype
from space.operations import PRIMITIVES

# make test-fast runs the unmarked cases: one 1-epoch search per strategy on a 3-cell, 4-channel
# supernet and 96 digits, and the checks that fail before any work.

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits_subset() -> tuple:
    data = load_dataset("digits")
    n = 96
    torch.manual_seed(0)
    teacher = torch.randn(n, 10) * 3
    student = torch.randn(n, 10)
    return data.info, Subset(data.train, list(range(n))), teacher, student


def _factory(teacher: torch.Tensor, student: torch.Tensor | None):
    method = KDConfig(distance="kl")
    return residual_objective(
        method=method,
        objective=method.objective(),
        teacher=None,
        base=None,
        cache=(teacher, student),
    )


def _batch(train: Subset, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``n`` training images, their labels and their indices."""
    x = torch.stack([train[i][0] for i in range(n)])
    y = torch.tensor([train[i][1] for i in range(n)])
    return x, y, torch.arange(n)


def _one_level_task(net: Any, digits_subset: tuple, **options: Any) -> Any:
    """A one-level ``SearchTask`` on the digits subset's logits, with no pull from the FLOPs term
    (a 100 MFLOPs budget) and no weight decay on the architecture; ``options`` add to or replace
    these (``arch_lr`` 0.05 unless given)."""
    from search.task import SearchSettings, SearchTask

    _, _, teacher, student = digits_subset
    settings: dict[str, Any] = {
        "budget_mflops": 100.0, "flops_weight": 1.0, "arch_lr": 0.05, "arch_weight_decay": 0.0,
        "optimization": "one-level",
    }  # fmt: skip
    return SearchTask(
        net,
        objective=_factory(teacher, student)(net, None),
        settings=SearchSettings(**{**settings, **options}),
    )


def _quiet_search(spec: SearchSpec, digits_subset: tuple, out: Path) -> SearchResult:
    info, train, teacher, student = digits_subset
    return run_search(
        spec,
        info=info,
        train_data=train,
        objective_factory=_factory(teacher, student),
        out_dir=out,
        progress=False,
        log=lambda _: None,
    )


@pytest.mark.parametrize("strategy", ["stacnas", "darts"])
def test_search_derives_a_genotype_within_budget_with_plot_and_records(
    strategy: str, digits_subset: tuple, tmp_path: Path
) -> None:
    spec = SearchSpec(
        budget_mflops=0.12, strategy=strategy, epochs=1, channels=4, layers=3, batch_size=32
    )
    result = _quiet_search(spec, digits_subset, tmp_path)
    assert result.complexity.mflops <= 0.12
    assert result.complexity.mflops >= 0.85 * 0.12  # reachable: the maximum here is 0.31
    stored = json.loads((tmp_path / "genotype.json").read_text())
    assert Genotype.from_dict(stored["genotype"]) == result.genotype
    assert (tmp_path / "alphas.png").stat().st_size > 10_000
    assert (tmp_path / "cells.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((tmp_path / "search.json").read_text())
    repair = record["derivation"]["repair"]  # provenance of the derived network
    changed = sum(
        a != b
        for kind in ("normal", "reduce")
        for a, b in zip(record["argmax_genotype"][kind], record["genotype"][kind], strict=True)
    )
    assert repair["operations_changed"] == changed
    assert repair["channels_before"] == 4 and repair["channels_after"] == result.channels
    assert repair["mflops_after"] == pytest.approx(result.complexity.mflops)
    history = record["history"]
    stages = [h["stage"] for h in history]
    assert stages == (["stage1", "stage2"] if strategy == "stacnas" else ["darts"])
    if strategy == "stacnas":  # stage 2 searched each edge's winning group only
        stage2_ops = {op for edge in history[1]["probabilities"]["normal"] for op in edge}
        assert len(max(history[1]["probabilities"]["normal"], key=len)) <= 3
        assert stage2_ops <= set(PRIMITIVES)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["stacnas", "darts"])
def test_perturbation_selection_derives_what_removing_each_operation_costs(
    strategy: str, digits_subset: tuple, tmp_path: Path
) -> None:
    """DARTS-PT's selection: each kept operation is the one whose removal raised the objective
    most on its edge, each node keeps the two edges whose removal hurt most; search.json holds
    the scores."""
    spec = parse(
        SearchSpec,
        {
            "budget_mflops": 0.3,  # the most this space reaches: no repair
            "strategy": strategy,
            "epochs": 1,
            "channels": 4,
            "layers": 3,
            "batch_size": 32,
            "selection": "perturbation",
            "selection_samples": 32,
        },
    )
    assert spec.to_dict()["selection"] == "perturbation"  # its own stage key
    result = _quiet_search(spec, digits_subset, tmp_path)
    record = json.loads((tmp_path / "search.json").read_text())
    scored = record["selection"]["stage2" if strategy == "stacnas" else "darts"]
    assert record["selection"]["method"] == "perturbation" and scored["evaluations"] > 28
    steps = [(j, i) for j in range(4) for i in range(2 + j)]
    for kind in ("normal", "reduce"):
        for k, (op, i) in enumerate(record["argmax_genotype"][kind]):
            e = steps.index((k // 2, i))
            assert op == max(scored["ops"][kind][e], key=scored["ops"][kind][e].get)
            rivals = [scored["edges"][kind][f] for f, (j, _) in enumerate(steps) if j == k // 2]
            assert scored["edges"][kind][e] >= sorted(rivals)[-2]
    assert result.complexity.mflops <= 0.3
    with pytest.raises(ValueError, match="selection: nni-darts derives by argmax"):
        parse(
            SearchSpec, {"budget_mflops": 1, "strategy": "nni-darts", "selection": "perturbation"}
        )


@pytest.mark.slow
def test_the_search_objective_is_the_kd_loss_against_the_residual(digits_subset: tuple) -> None:
    """With S0's logits as the base, the search loss of a candidate is eq. 3 between its logits
    and T - S0 (plus the FLOPs term, zero within budget)."""
    from search.task import SearchSettings, SearchTask
    from space.operations import PRIMITIVES
    from space.supernet import NetShape, Supernet, uniform_candidates

    _info, train, teacher, student = digits_subset
    shape = NetShape.of(channels=4, layers=3, num_classes=10, in_chans=1, input_size=8)
    net = Supernet(shape, uniform_candidates(PRIMITIVES))
    objective = _factory(teacher, student)(net, None)
    task = SearchTask(
        net,
        objective=objective,
        settings=SearchSettings(
            budget_mflops=100.0,
            flops_weight=1.0,
            arch_lr=1e-3,
            arch_weight_decay=0.0,
            optimization="one-level",
        ),
    )
    x = torch.stack([train[i][0] for i in range(8)])
    y = torch.tensor([train[i][1] for i in range(8)])
    index = torch.arange(8)
    net.eval()
    loss, _ = task.loss(x, y, index)
    method = KDConfig(distance="kl")
    r = net(x)
    want = method.objective()(r, teacher[:8] - student[:8], y, student[:8] + r)
    assert float(loss.detach()) == pytest.approx(float(want), rel=1e-5)
    over = SearchTask(
        net,
        objective=objective,
        settings=SearchSettings(
            budget_mflops=0.01,
            flops_weight=2.0,
            arch_lr=1e-3,
            arch_weight_decay=0.0,
            optimization="one-level",
        ),
    )
    expected = float(net.expected_mflops().detach())
    assert float(over.loss(x, y, index)[0]) == pytest.approx(
        float(want) + 2.0 * (expected / 0.01 - 1), rel=1e-5
    )
    under = SearchTask(  # the floor: a derived network using under 85% of the budget pays too
        net,
        objective=objective,
        settings=SearchSettings(
            budget_mflops=10 * expected,
            flops_weight=2.0,
            budget_floor=0.85,
            arch_lr=1e-3,
            arch_weight_decay=0.0,
            optimization="one-level",
        ),
    )
    assert float(under.loss(x, y, index)[0]) == pytest.approx(
        float(want) + 2.0 * (0.85 - 0.1), rel=1e-4
    )


@pytest.mark.slow
def test_the_budget_floor_pulls_the_architecture_to_dearer_operations() -> None:
    """Below the floor the penalty's gradient raises the architecture weight of every edge's
    dearest operation and lowers the cheapest's; within [floor, 1] of the budget it is 0."""
    from search.task import flops_penalty
    from space.operations import PRIMITIVES
    from space.supernet import NetShape, Supernet, uniform_candidates

    shape = NetShape.of(channels=4, layers=3, num_classes=10, in_chans=1, input_size=8)
    net = Supernet(shape, uniform_candidates(PRIMITIVES))
    expected = net.expected_mflops()
    counted = float(expected.detach())
    inside = flops_penalty(expected, counted / 0.9, 1.0, floor=0.85)
    assert float(inside) == 0.0
    below = flops_penalty(net.expected_mflops(), counted / 0.5, 1.0, floor=0.85)
    assert float(below) == pytest.approx(0.35, rel=1e-5)
    below.backward()
    grad = net.alphas["normal"].grad
    assert grad is not None
    column = {op: PRIMITIVES.index(op) for op in ("sep_conv_5x5", "max_pool_3x3")}
    # gradient descent raises what has a negative gradient: the dear convolution
    assert bool((grad[:, column["sep_conv_5x5"]] < 0).all())
    assert bool((grad[:, column["max_pool_3x3"]] > 0).all())
    with pytest.raises(ValueError, match="budget_floor"):
        SearchSpec(budget_mflops=1.0, strategy="nni-darts", budget_floor=0.85)
    assert "budget_floor" not in SearchSpec(budget_mflops=1.0, budget_floor=0).to_dict()
    # default: the repair's fill for our strategies (in the stage key), off for NNI's
    assert SearchSpec(budget_mflops=1.0).to_dict()["budget_floor"] == 0.85
    assert "budget_floor" not in SearchSpec(budget_mflops=1.0, strategy="nni-darts").to_dict()
    assert SearchSpec(budget_mflops=1.0, budget_floor=0.85).to_dict()["budget_floor"] == 0.85


def test_a_budget_below_the_minimum_fails_before_any_work(
    digits_subset: tuple, tmp_path: Path
) -> None:
    info, train, teacher, _student = digits_subset
    spec = SearchSpec(budget_mflops=0.01, epochs=1, channels=4, layers=3, min_channels=4)
    with pytest.raises(BudgetError, match=r"budget_mflops: 0.01 is below the minimum .* 0.0519"):
        run_search(
            spec,
            info=info,
            train_data=train,
            objective_factory=_factory(teacher, None),
            out_dir=tmp_path / "s",
            progress=False,
        )
    assert not (tmp_path / "s").exists()


def test_bad_search_specs_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"res_students\[0\].search.strategy: must be one of"):
        RunConfig.from_dict(
            {
                "dataset": "digits",
                "teacher": "resnet8",
                "student": "resnet8",
                "res_students": [{"search": {"budget_mflops": 1, "strategy": "x"}}],
            }
        )
    with pytest.raises(ValueError, match=r"res_students\[0\].search.budget_mflops: required"):
        RunConfig.from_dict(
            {
                "dataset": "digits",
                "teacher": "resnet8",
                "student": "resnet8",
                "res_students": [{"search": {"epochs": 1}}],
            }
        )
    with pytest.raises(ValueError, match=r"res_students\[0\].search.chanels: unknown field"):
        RunConfig.from_dict(
            {
                "dataset": "digits",
                "teacher": "resnet8",
                "student": "resnet8",
                "res_students": [{"search": {"budget_mflops": 1, "chanels": 8}}],
            }
        )
    with pytest.raises(ValueError, match=r"channels: must be a multiple of 2"):
        parse(SearchSpec, {"budget_mflops": 1, "channels": 7})


def _config(**search: object) -> RunConfig:
    return RunConfig.from_dict(
        {
            "dataset": "digits",
            "val_size": 60,
            "teacher": {"model": "resnet8", "width": 0.25},
            "student": {"model": "resnet8", "width": 0.25},
            "res_students": [
                {
                    "search": {
                        "budget_mflops": 0.1,
                        "epochs": 1,
                        "channels": 4,
                        "layers": 3,
                        "batch_size": 128,
                        **search,
                    }
                }
            ],
            "kd": {"distance": "kl"},
            "max_stages": 1,
            "preset": "cpu-tiny",
            "train": {"epochs": 1, "batch_size": 128},
        }
    )


@pytest.mark.slow
def test_pipeline_searches_then_finetunes_r1_and_reuses_stored_stages(tmp_path: Path) -> None:
    config = _config()
    result = run(config, out_dir=tmp_path, progress=False, log=lambda _: None)
    kinds = [s["kind"] for s in result.stages]
    assert kinds == ["teacher", "gate", "student", "search", "finetune"]
    found = result.searches[0]
    assert found["mflops"] <= 0.1
    rows = {r.model: r for r in result.rows}
    assert rows["S1"].arch == f"resnet8x0.25-nas[C{found['channels']}L3]"
    assert rows["S1"].mflops - rows["S0"].mflops == pytest.approx(found["mflops"])
    # Stored stages are reused: nothing trains again, the same genotype comes back.
    again = run(config, out_dir=tmp_path, progress=False, log=lambda _: None)
    assert not any(s["trained"] for s in again.stages)
    assert again.searches[0]["genotype"] == found["genotype"]
    # `reskd search` on the same config reuses the stored search too.
    assert (
        search(config, out_dir=tmp_path, progress=False, log=lambda _: None)["genotype"]
        == found["genotype"]
    )


@pytest.mark.slow
def test_budgets_that_share_a_supernet_search_once_and_each_derive_within_its_own(
    tmp_path: Path,
) -> None:
    """Three budgets under one shared supernet (at the largest): one search stage, trained once;
    each budget a derive stage of it, within its own budget, naming the search it came from.
    The largest budget's network is the plain search's at that budget."""
    logs: list[str] = []
    found = {}
    for budget in (0.2, 0.1, 0.06):
        config = _config(budget_mflops=budget, supernet_budget_mflops=0.2, channels="auto")
        result = run(config, out_dir=tmp_path, progress=False, log=logs.append)
        kinds = [(s["kind"], s["trained"]) for s in result.stages]
        searched = budget == 0.2  # the first run trains the supernet; the others reuse it
        assert ("search", searched) in kinds and ("derive", True) in kinds, kinds
        found[budget] = result.searches[0]
        assert found[budget]["mflops"] <= budget
    searches = {f["derived_from"] for f in found.values()}
    assert len(searches) == 1 and len(list(tmp_path.glob("search-*"))) == 1
    assert len(list(tmp_path.glob("derive-*"))) == 3
    assert found[0.06]["mflops"] < found[0.2]["mflops"]
    plain = run(_config(budget_mflops=0.2, channels="auto"), out_dir=tmp_path, progress=False,
                log=logs.append)  # fmt: skip
    assert not any(s["trained"] for s in plain.stages if s["kind"] == "search")
    assert plain.searches[0]["genotype"] == found[0.2]["genotype"]
    assert plain.searches[0]["derived_from"] is None


@pytest.mark.slow
def test_an_interrupted_search_resumes_from_its_last_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import distill.train as train_module
    import search.strategies.training as strategies

    config = _config(epochs=2, strategy="darts", optimization="one-level")
    real_fit = train_module.fit
    calls: list[int] = []

    def dying_fit(*args, **kwargs):  # train one epoch of the supernet, then die
        calls.append(1)
        history = real_fit(
            *args,
            **{
                **kwargs,
                "config": kwargs["config"].__class__(**{**kwargs["config"].to_dict(), "epochs": 1}),
            },
        )
        raise KeyboardInterrupt(f"killed after {len(history.epochs)} epoch")

    monkeypatch.setattr(strategies, "fit", dying_fit)
    with pytest.raises(KeyboardInterrupt):
        search(config, out_dir=tmp_path, progress=False, log=lambda _: None)
    checkpoint = next(tmp_path.glob("search-*/checkpoints/darts/last.pt"))
    assert len(torch.load(checkpoint, weights_only=False)["history"]) == 1
    resumed: list[int] = []

    def counting_fit(*args, **kwargs):
        history = real_fit(*args, **kwargs)
        resumed.append(history.resumed_from)
        return history

    monkeypatch.setattr(strategies, "fit", counting_fit)
    found = search(config, out_dir=tmp_path, progress=False, log=lambda _: None)
    assert resumed == [1] and found["mflops"] <= 0.1
    history = json.loads((Path(found["directory"]) / "search.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]


@pytest.mark.slow
def test_reskd_search_command_prints_genotype_mflops_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cfg.json"
    path.write_text(
        json.dumps(
            _config().to_dict()
            | {
                "res_students": [
                    {
                        "search": {
                            "budget_mflops": 0.1,
                            "epochs": 1,
                            "channels": 4,
                            "layers": 3,
                            "batch_size": 128,
                        }
                    }
                ]
            }
        )
    )
    assert main(["search", str(path), "--out", str(tmp_path / "out"), "--quiet", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["mflops"] <= 0.1 and Path(found["plot"]).is_file()
    Genotype.from_dict(found["genotype"])
    assert main(["search", str(path), "--out", str(tmp_path / "low"), "--quiet"]) == 0
    bad = tmp_path / "bad.json"
    raw = json.loads(path.read_text())
    raw["res_students"][0]["search"]["budget_mflops"] = 0.001
    bad.write_text(json.dumps(raw))
    assert main(["search", str(bad), "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    assert "budget_mflops: 0.001 is below the minimum" in capsys.readouterr().err


def _task_with_held_out(
    net: Any, factory: Any, batch: tuple, optimization: str, **options: Any
) -> Any:
    """A ``SearchTask`` with no pull from the FLOPs term whose held-out batches repeat ``batch``."""
    from search.strategies import cycle
    from search.task import SearchSettings, SearchTask

    return SearchTask(
        net,
        objective=factory(net, None),
        settings=SearchSettings(
            budget_mflops=100.0,
            flops_weight=1.0,
            arch_lr=1e-2,
            arch_weight_decay=0.0,
            optimization=optimization,  # type: ignore[arg-type]
            **options,
        ),
        held_out=factory(net, None),
        held_out_batches=cycle([batch]),
    )


@pytest.mark.slow
@pytest.mark.parametrize("optimization", ["one-level", "bilevel"])
def test_warmup_epochs_train_the_weights_only(digits_subset: tuple, optimization: str) -> None:
    from space.operations import PRIMITIVES
    from space.supernet import NetShape, Supernet, uniform_candidates

    _, train, teacher, student = digits_subset
    shape = NetShape.of(channels=4, layers=3, num_classes=10, in_chans=1, input_size=8)
    net = Supernet(shape, uniform_candidates(PRIMITIVES))
    x = torch.stack([train[i][0] for i in range(16)])
    y = torch.tensor([train[i][1] for i in range(16)])
    index = torch.arange(16)
    task = _task_with_held_out(
        net, _factory(teacher, student), (x, y, index), optimization, warmup_epochs=1
    )
    optimizer = torch.optim.SGD(net.weight_parameters(), lr=0.05)
    alphas = [a.detach().clone() for a in net.arch_parameters()]
    weights = [w.detach().clone() for w in net.weight_parameters()[:3]]
    task.start_epoch(0, 2)
    task.step(x, y, index, optimizer)
    assert all(torch.equal(a, b) for a, b in zip(alphas, net.arch_parameters(), strict=True))
    assert not all(
        torch.equal(a, b) for a, b in zip(weights, net.weight_parameters()[:3], strict=True)
    )
    task.start_epoch(1, 2)
    task.step(x, y, index, optimizer)
    assert not any(torch.equal(a, b) for a, b in zip(alphas, net.arch_parameters(), strict=True))


def test_the_bilevel_architecture_step_asks_no_weight_gradient(monkeypatch: Any) -> None:
    """The architecture step of bilevel optimisation takes only the architecture's gradient: a
    custom autograd function in the fused cells (the channels-last depthwise weight gradient on
    32x32 maps) is told its weight needs none there, and is asked for it in the weight step."""
    from space import kernels
    from space.operations import PRIMITIVES
    from space.supernet import NetShape, Supernet, uniform_candidates

    asked: list[bool] = []
    backward = kernels.Depthwise5x5.backward

    def recording(ctx: Any, grad: torch.Tensor) -> Any:
        asked.append(ctx.needs_input_grad[1])
        return backward(ctx, grad)

    monkeypatch.setattr(kernels.Depthwise5x5, "backward", staticmethod(recording))
    shape = NetShape.of(channels=4, layers=3, num_classes=10, in_chans=3, input_size=32)
    net = Supernet(shape, uniform_candidates(PRIMITIVES))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g)
    index = torch.arange(4)
    factory = _factory(torch.randn(4, 10, generator=g), None)
    task = _task_with_held_out(net, factory, (x, y, index), "bilevel")
    alphas = [a.detach().clone() for a in net.arch_parameters()]
    task.step(x, y, index, torch.optim.SGD(net.weight_parameters(), lr=0.05))
    # the 32x32 cell's sep_conv_5x5 bundles: first the architecture pass (where the backward of
    # a bundle on the stem's states is pruned: nothing before it reaches the architecture), then
    # the weights' on every state
    assert asked == [False] * 3 + [True] * 5
    assert all(p.requires_grad for p in net.weight_parameters())
    assert not any(torch.equal(a, b) for a, b in zip(alphas, net.arch_parameters(), strict=True))


def test_run_configs_round_trip_through_to_dict() -> None:
    """What a run writes as config.json (and the service stores) reads back as the same config."""
    genotype = {
        "genotype": Genotype.from_json(
            '{"normal":[["sep_conv_3x3",0],["skip_connect",1],["max_pool_3x3",0],["skip_connect",2],'
            '["dil_conv_3x3",1],["skip_connect",0],["avg_pool_3x3",3],["skip_connect",0]],'
            '"reduce":[["max_pool_3x3",0],["max_pool_3x3",1],["skip_connect",2],["max_pool_3x3",1],'
            '["max_pool_3x3",0],["skip_connect",2],["skip_connect",2],["max_pool_3x3",1]]}'
        ).to_dict(),
        "channels": 4,
        "layers": 3,
    }
    for res in ([{"search": {"budget_mflops": 0.1}}], [genotype], ["resnet8"]):
        config = RunConfig.from_dict(
            {"dataset": "digits", "teacher": "resnet8", "student": "resnet8", "res_students": res}
        )
        assert RunConfig.from_dict(config.to_dict()) == config


@pytest.mark.slow
def test_stacnas_stage1_on_a_shallower_proxy_closes_the_depth_gap_in_stage2(
    digits_subset: tuple, tmp_path: Path
) -> None:
    """StacNAS searches stage 1 on 14 cells and stage 2 on 20: ``stage1_layers`` is stage 1's
    depth, ``layers`` stage 2's and the derived network's; stage 1's budget is the derived
    network's scaled by the two depths' costs."""
    from dataclasses import replace

    from search.budget import learnable_mflops
    from search.run import shape_for

    info, train, teacher, student = digits_subset
    spec = SearchSpec(
        budget_mflops=0.16, epochs=1, channels=4, layers=4, stage1_layers=3, batch_size=32
    )
    result = run_search(
        spec, info=info, train_data=train, objective_factory=_factory(teacher, student),
        out_dir=tmp_path, progress=False, log=lambda _: None,
    )  # fmt: skip
    assert result.complexity.mflops <= 0.16
    assert json.loads((tmp_path / "genotype.json").read_text())["layers"] == 4
    shape = shape_for(spec, info)
    scale = learnable_mflops(replace(shape, layers=3)) / learnable_mflops(shape)
    history = json.loads((tmp_path / "search.json").read_text())["history"]
    assert [h["stage"] for h in history] == ["stage1", "stage2"]
    assert history[0]["budget_mflops"] == pytest.approx(0.16 * scale) and scale < 0.9
    assert history[1]["budget_mflops"] == 0.16
    # the shallow proxy is a proxy: a spec without it keeps the stage key it always had
    assert "stage1_layers" not in replace_spec(spec, stage1_layers=None).to_dict()
    with pytest.raises(ValueError, match=r"stage1_layers: must be an integer in \[3, layers=4\]"):
        parse(SearchSpec, {"budget_mflops": 1, "layers": 4, "stage1_layers": 5})
    with pytest.raises(ValueError, match=r"stage1_layers: only the stacnas strategy"):
        parse(SearchSpec, {"budget_mflops": 1, "strategy": "darts", "stage1_layers": 3})


def replace_spec(spec: SearchSpec, **changes: object) -> SearchSpec:
    return SearchSpec.model_validate(spec.model_dump() | changes)


@pytest.mark.slow
def test_a_wider_supernet_counts_its_cost_at_the_derived_width(
    digits_subset: tuple, tmp_path: Path
) -> None:
    """``search_width``: the supernet has more channels than the derived network, but every
    MFLOPs figure of the search (the penalty's, the derivation's, the budget's) is the derived
    network's: with the same architecture weights the wide and the narrow supernet agree."""
    from search.run import shape_for
    from space.supernet import NetShape, Supernet, uniform_candidates

    shape = NetShape.of(channels=4, layers=3, num_classes=10, in_chans=1, input_size=8)
    narrow = Supernet(shape, uniform_candidates(PRIMITIVES))
    wide = Supernet(shape.with_channels(8), uniform_candidates(PRIMITIVES), cost_shape=shape)
    torch.manual_seed(3)
    for kind in narrow.alphas:
        wide.alphas[kind].data = narrow.alphas[kind].data = torch.randn(14, 8)
    assert wide.shape.channels == 8 and wide.cost_shape == shape
    assert float(wide.expected_mflops().detach()) == pytest.approx(
        float(narrow.expected_mflops().detach())
    )
    assert float(wide.smooth_mflops().detach()) == pytest.approx(
        float(narrow.smooth_mflops().detach())
    )
    assert wide.mflops_of(wide.genotype()) == narrow.mflops_of(narrow.genotype())
    with pytest.raises(ValueError, match="cost_shape: must differ .* in channels only"):
        Supernet(shape, uniform_candidates(PRIMITIVES), cost_shape=replace_shape(shape, 4))

    info, train, teacher, student = digits_subset
    spec = SearchSpec(budget_mflops=0.16, epochs=1, channels=4, layers=3, search_width=2)
    assert spec.supernet_channels(4) == 8 and spec.supernet_channels(3) == 6
    assert SearchSpec(budget_mflops=1, search_width=1.4).supernet_channels(4) == 6
    result = run_search(
        spec, info=info, train_data=train, objective_factory=_factory(teacher, student),
        out_dir=tmp_path, progress=False, log=lambda _: None,
    )  # fmt: skip
    assert result.channels == shape_for(spec, info).channels == 4
    assert result.complexity.mflops <= 0.16
    weights = torch.load(tmp_path / "checkpoints" / "stage1" / "last.pt", weights_only=False)
    assert weights["trained"]["model.stem0.0.weight"].shape[0] == 8 * 3  # 3x C, as DARTS
    # a spec that does not widen keeps the stage key it always had; NNI's space is its own
    assert "search_width" in spec.to_dict()
    assert "search_width" not in SearchSpec(budget_mflops=1).to_dict()
    with pytest.raises(ValueError, match="search_width: nni-darts searches NNI's own space"):
        parse(SearchSpec, {"budget_mflops": 1, "strategy": "nni-darts", "search_width": 2})


def replace_shape(shape, layers: int):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    return replace(shape, layers=layers)


@pytest.mark.slow
def test_beta_decay_regularises_the_architecture_weights(digits_subset: tuple) -> None:
    """beta-DARTS: the term is the mean over edges of log-sum-exp of the architecture parameters
    (its gradient is each edge's softmax over its present candidates); its weight ramps linearly
    from 0 at the first epoch to ``beta_decay`` at the last; with it the parameters of a few
    steps stay smaller (their log-sum-exp lower) than without it."""
    from search.task import beta_decay
    from space.supernet import NetShape, Supernet, uniform_candidates

    shape = NetShape.of(channels=4, layers=3, num_classes=10, in_chans=1, input_size=8)
    net = Supernet(shape, uniform_candidates(("none", "max_pool_3x3", "sep_conv_3x3")))
    torch.manual_seed(1)
    for a in net.arch_parameters():
        a.data = torch.randn_like(a)
    value = beta_decay(net)
    value.backward()
    weights = net.weights()
    for kind, a in net.alphas.items():
        assert torch.allclose(a.grad, weights[kind] / 28, atol=1e-7)  # 14 edges x 2 kinds
        assert torch.equal(a.grad[:, 3:], torch.zeros_like(a.grad[:, 3:]))  # absent candidates
    expected = sum(
        torch.logsumexp(a[:, :3], dim=-1).sum() for a in net.alphas.values()
    ) / 28  # fmt: skip
    assert float(value) == pytest.approx(float(expected))

    x, y, index = _batch(digits_subset[1], 16)
    lse = {}
    for beta in (0.0, 50.0):
        torch.manual_seed(0)
        net = Supernet(shape, uniform_candidates(PRIMITIVES))
        task = _one_level_task(net, digits_subset, beta_decay=beta)
        task.start_epoch(0, 3)
        assert task.beta_weight == 0
        task.start_epoch(2, 3)
        assert task.beta_weight == beta
        optimizer = torch.optim.SGD(net.weight_parameters(), lr=0.05)
        for _ in range(5):
            task.step(x, y, index, optimizer)
        lse[beta] = float(beta_decay(net))
    assert lse[50.0] < lse[0.0] - 0.1


@pytest.mark.slow
def test_random_smoothing_perturbs_the_weights_step_only(digits_subset: tuple) -> None:
    """SDARTS-RS: the smoothed weights stay a distribution over each edge's present candidates
    (masked ones at 0) within epsilon of the softmax before renormalising; epsilon ramps from 0.03
    to the set value; a step trains at perturbed weights (other weights than without it) while
    the reported loss of the unperturbed supernet is untouched, and the architecture still gets a
    gradient through the softmax."""
    from search.task import smoothed_weights
    from space.supernet import NetShape, Supernet, uniform_candidates

    shape = NetShape.of(channels=4, layers=3, num_classes=10, in_chans=1, input_size=8)
    net = Supernet(shape, uniform_candidates(("none", "max_pool_3x3", "sep_conv_3x3")))
    generator = torch.Generator().manual_seed(0)
    smooth = smoothed_weights(net, 0.3, generator)
    for kind, weights in net.weights().items():
        assert torch.equal(smooth[kind][:, 3:], torch.zeros_like(smooth[kind][:, 3:]))
        assert torch.allclose(smooth[kind].sum(dim=-1), torch.ones(len(weights)))
        assert not torch.allclose(smooth[kind], weights)
        assert (smooth[kind] >= 0).all()
    assert smoothed_weights(net, 0.3, generator)["normal"].requires_grad

    x, y, index = _batch(digits_subset[1], 16)
    alphas = {}
    for epsilon in (0.0, 0.3):
        torch.manual_seed(0)
        net = Supernet(shape, uniform_candidates(PRIMITIVES))
        task = _one_level_task(net, digits_subset, random_smoothing=epsilon)
        task.start_epoch(0, 3)
        assert task.epsilon == (0.03 if epsilon else 0.0)
        task.start_epoch(2, 3)
        assert task.epsilon == pytest.approx(epsilon)
        before = [a.detach().clone() for a in net.arch_parameters()]
        optimizer = torch.optim.SGD(net.weight_parameters(), lr=0.05)
        task.step(x, y, index, optimizer)
        assert all(
            not torch.equal(a, b) for a, b in zip(net.arch_parameters(), before, strict=True)
        )
        alphas[epsilon] = torch.cat([a.detach().flatten() for a in net.arch_parameters()])
        assert net._override is None  # the perturbation ends with the step
    assert not torch.allclose(alphas[0.0], alphas[0.3])


@pytest.mark.slow
def test_sigmoid_weighting_and_zero_one_loss(digits_subset: tuple) -> None:
    """FairDARTS: with ``weighting: sigmoid`` each candidate's weight is its own sigmoid (masked
    ones at 0, an edge's weights need not sum to 1); the zero-one loss is minus the mean squared
    distance from 0.5 over present candidates, and a few steps with it push the weights away from
    0.5 more than the same steps without it. The spec refuses the loss without sigmoid weights,
    and leaves both fields out of its hashed form at their defaults."""
    from search.spec import SearchSpec
    from search.task import zero_one_loss
    from space.supernet import NetShape, Supernet, uniform_candidates

    shape = NetShape.of(channels=4, layers=3, num_classes=10, in_chans=1, input_size=8)
    net = Supernet(shape, uniform_candidates(("none", "max_pool_3x3")), weighting="sigmoid")
    with torch.no_grad():
        for alphas in net.arch_parameters():
            alphas.normal_(0, 2)
    for kind, weights in net.weights().items():
        assert torch.allclose(weights[:, :2], torch.sigmoid(net.alphas[kind][:, :2]))
        assert torch.equal(weights[:, 2:], torch.zeros_like(weights[:, 2:]))
    present = torch.cat([w[:, :2].flatten() for w in net.weights().values()])
    assert not torch.allclose(present.view(-1, 2).sum(-1), torch.ones(len(present) // 2))
    expected = -float((present - 0.5).square().mean())
    assert float(zero_one_loss(net).detach()) == pytest.approx(expected)

    x, y, index = _batch(digits_subset[1], 32)
    spread = {}
    for weight in (0.0, 10.0):
        torch.manual_seed(0)
        net = Supernet(shape, uniform_candidates(PRIMITIVES), weighting="sigmoid")
        with torch.no_grad():  # away from 0.5, where the loss's gradient vanishes
            for alphas in net.arch_parameters():
                alphas.normal_(0, 0.5)
        task = _one_level_task(net, digits_subset, zero_one=weight)
        optimizer = torch.optim.SGD(net.weight_parameters(), lr=0.05)
        start = float(-zero_one_loss(net).detach())
        for _ in range(5):
            task.step(x, y, index, optimizer)
        spread[weight] = float(-zero_one_loss(net).detach()) - start
    assert spread[10.0] > 0 and spread[10.0] > 2 * abs(spread[0.0])

    with pytest.raises(ValueError, match="zero_one_loss"):
        SearchSpec(budget_mflops=1.0, zero_one_loss=10.0)
    with pytest.raises(ValueError, match="weighting"):
        SearchSpec(budget_mflops=1.0, strategy="nni-darts", weighting="sigmoid")
    plain = SearchSpec(budget_mflops=1.0).to_dict()
    assert "weighting" not in plain and "zero_one_loss" not in plain
    fair = SearchSpec(budget_mflops=1.0, weighting="sigmoid", zero_one_loss=10.0).to_dict()
    assert fair["weighting"] == "sigmoid" and fair["zero_one_loss"] == 10.0


@pytest.mark.slow
def test_gumbel_weighting_samples_one_operation_per_edge(digits_subset: tuple) -> None:
    """GDAS: each sampled weight is one-hot in value (one present candidate per edge, never a
    masked one) with the tempered softmax's gradient (straight-through); the draws follow the
    softmax (Gumbel-max); the temperature anneals from 10 to 0.1 over a stage; a step trains
    only the sampled operations' weights, moves the architecture, and leaves no override; the
    spec refuses it with SDARTS-RS's smoothing and keeps it in its hashed form."""
    from search.spec import SearchSpec
    from search.task import gumbel_weights
    from space.supernet import NetShape, Supernet, uniform_candidates

    shape = NetShape.of(channels=4, layers=3, num_classes=10, in_chans=1, input_size=8)
    net = Supernet(
        shape, uniform_candidates(("none", "max_pool_3x3", "sep_conv_3x3")), weighting="gumbel"
    )
    with torch.no_grad():
        net.alphas["normal"][0, :3] = torch.tensor([0.0, 1.0, 2.0])
    generator = torch.Generator().manual_seed(0)
    drawn = torch.zeros(3)
    for _ in range(2000):
        sampled = gumbel_weights(net, 1.0, generator)
        for w in sampled.values():
            assert torch.equal(w.detach().sum(-1), torch.ones(len(w)))
            assert set(w.detach().unique().tolist()) <= {0.0, 1.0}
            assert torch.equal(w.detach()[:, 3:], torch.zeros_like(w[:, 3:]))
        drawn += sampled["normal"][0, :3].detach()
    expected = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0)
    assert torch.allclose(drawn / 2000, expected, atol=0.03)

    # straight-through: the gradient is that of the tempered softmax of the perturbed logits
    sampled = gumbel_weights(net, 2.0, torch.Generator().manual_seed(1))
    (sampled["normal"][0, :3] * torch.tensor([1.0, -2.0, 3.0])).sum().backward()
    grad = net.alphas["normal"].grad[0, :3]
    assert grad.abs().sum() > 0 and abs(float(grad.sum())) < 1e-5  # softmax: sums to 0

    x, y, index = _batch(digits_subset[1], 16)
    torch.manual_seed(0)
    net = Supernet(  # per-edge cells: every edge's convolution has its own parameters
        shape,
        uniform_candidates(("max_pool_3x3", "sep_conv_3x3")),
        weighting="gumbel",
        fused=False,
    )
    task = _one_level_task(net, digits_subset, seed=3)
    task.start_epoch(0, 3)
    assert task.tau == 10.0
    task.start_epoch(2, 3)
    assert task.tau == pytest.approx(0.1)
    probe = torch.Generator()  # the draw the step will make, from a copy of its generator
    probe.set_state(task.noise.get_state())
    conv_drawn = gumbel_weights(net, task.tau, probe)["normal"][:, 1].detach() == 1
    assert 0 < int(conv_drawn.sum()) < len(conv_drawn)
    params = dict(net.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    task.step(x, y, index, torch.optim.SGD(net.weight_parameters(), lr=0.05))
    assert net._override is None
    for kind in ("normal", "reduce"):
        assert not torch.equal(net.alphas[kind], before[f"alphas.{kind}"])
    for e, drawn in enumerate(conv_drawn.tolist()):  # the first (normal) cell's edges
        conv = [n for n in params if n.startswith(f"cells.0.edges.{e}.ops.1.")]
        assert conv and all(torch.equal(params[n], before[n]) != drawn for n in conv), (
            f"edge {e}: its convolution trains exactly when it was drawn"
        )

    with pytest.raises(ValueError, match="random_smoothing"):
        SearchSpec(budget_mflops=1.0, weighting="gumbel", random_smoothing=0.3)
    assert SearchSpec(budget_mflops=1.0, weighting="gumbel").to_dict()["weighting"] == "gumbel"


@pytest.mark.slow
def test_auxiliary_skip_decays_to_zero_and_is_a_spec_option(digits_subset: tuple) -> None:
    """DARTS-: the search sets the auxiliary skip's coefficient each epoch, from the set value at
    the first epoch linearly to 0 at the last (the supernet derivation reads is the plain one),
    and the weights step trains through it. The spec refuses it for nni-darts and leaves it out
    of its hashed form at 0."""
    from search.spec import SearchSpec
    from space.supernet import NetShape, Supernet, uniform_candidates

    shape = NetShape.of(channels=4, layers=3, num_classes=10, in_chans=1, input_size=8)
    x, y, index = _batch(digits_subset[1], 16)
    torch.manual_seed(0)
    net = Supernet(shape, uniform_candidates(PRIMITIVES), aux_skip=True)
    task = _one_level_task(net, digits_subset, arch_lr=0.01, aux_skip=1.0)
    betas = []
    for epoch in range(4):
        task.start_epoch(epoch, 4)
        betas.append(net.aux_beta)
    assert betas == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])
    task.start_epoch(0, 4)
    reduce_aux = next(iter(net.cells[1].aux_reduce.values()))
    before = reduce_aux.w1.detach().clone()
    task.step(x, y, index, torch.optim.SGD(net.weight_parameters(), lr=0.1))
    assert not torch.equal(reduce_aux.w1, before), "the strided auxiliary skip trains"

    with pytest.raises(ValueError, match="aux_skip"):
        SearchSpec(budget_mflops=1.0, strategy="nni-darts", aux_skip=1.0)
    assert "aux_skip" not in SearchSpec(budget_mflops=1.0).to_dict()
    assert SearchSpec(budget_mflops=1.0, aux_skip=1.0).to_dict()["aux_skip"] == 1.0
