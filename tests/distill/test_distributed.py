"""One training on several devices (``devices: N``), here two gloo ranks on the CPU: the same
weights as one process on the same global batches, a stage interrupted under it resumes from its
checkpoint, and a search's architecture parameters stay the same on every rank.

Tolerance: rtol 1e-5 (the ranks sum their shares' gradients in another order than one process
sums the whole batch's: float32 rounding, 3e-8 measured on these networks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import Subset, TensorDataset

from distill.batching import Indexed, loader
from distill.data import load_dataset
from distill.distributed import launch, world
from distill.methods import KDConfig
from distill.observe import observing
from distill.stages import StageStore
from distill.train import Supervised, TrainConfig, fit
from search.run import residual_objective
from search.task import SearchSettings, SearchTask
from space.supernet import NetShape, Supernet, uniform_candidates
from tests.distill.observers import Recording

pytestmark = pytest.mark.xdist_group("ranks")  # two processes each: not beside each other
# each case but the first starts two rank processes (4-7 s here, most of it their imports)
RANKS = pytest.mark.slow
SMALL_SPACE = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")


class Stopped(Exception):
    pass


class Stopping(Supervised):
    """Supervised training whose every process stops when epoch ``stop_at`` (0-based) begins:
    a worker killed mid-stage, after the checkpoints of the epochs before."""

    def __init__(self, model: nn.Module, stop_at: int | None = None) -> None:
        super().__init__(model)
        self.stop_at = stop_at

    def start_epoch(self, epoch: int, epochs: int) -> None:
        if epoch == self.stop_at:
            raise Stopped(f"stopped at epoch {epoch + 1}")
        super().start_epoch(epoch, epochs)


def _net() -> nn.Module:
    torch.manual_seed(1)  # the same start in every process
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


@pytest.fixture(scope="module")
def digits() -> Any:
    return Subset(load_dataset("digits", augment=False).train, list(range(72)))


def _config(**kw: Any) -> TrainConfig:
    # 72 samples in batches of 16: the last global batch has 8, 4 per rank
    return TrainConfig(**{"epochs": 3, "batch_size": 16, "lr": 0.1, "weight_decay": 5e-4,
                          "device": "cpu"} | kw)  # fmt: skip


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("source", ["in-memory", pytest.param("dataloader", marks=RANKS)])
def test_two_ranks_reach_the_weights_of_one_process(digits: Any, source: str) -> None:
    """In-memory images served by index, or a plain dataset through a ``DataLoader``: each rank
    trains on its share of every global batch, and the replicas end where one process ends."""
    data = digits
    if source == "dataloader":
        x = torch.stack([digits[i][0] for i in range(len(digits))])
        data = TensorDataset(x, torch.tensor([digits[i][1] for i in range(len(digits))]))
    alone, ranked = _net(), _net()
    one = fit(Supervised(alone), data, config=_config(), progress=False)
    two = fit(Supervised(ranked), data, config=_config(devices=2), progress=False)
    torch.testing.assert_close(_flat(ranked), _flat(alone), rtol=1e-5, atol=1e-7)
    for a, b in zip(one.epochs, two.epochs, strict=True):  # the epochs' figures: every rank's
        assert b.loss == pytest.approx(a.loss, rel=1e-5)
        assert b.train_accuracy == a.train_accuracy


@RANKS
def test_a_stage_interrupted_on_two_ranks_resumes_from_its_checkpoint(
    digits: Any, tmp_path: Path
) -> None:
    store = StageStore(tmp_path, log=lambda _: None)
    config = _config(epochs=4, devices=2)

    def train(task: Supervised, net: nn.Module) -> Any:
        return store.train("student", {"net": "mlp"}, {"model": net}, task=task,
                           train_data=digits, config=config, desc="S", progress=False)  # fmt: skip

    interrupted = _net()
    with pytest.raises(Stopped, match="stopped at epoch 3"):
        train(Stopping(interrupted, stop_at=2), interrupted)
    partial = next(tmp_path.glob("student-*.partial"))
    assert len(torch.load(partial / "last.pt", weights_only=False)["history"]) == 2
    observer, resumed = Recording(), _net()
    with observing(observer):
        result = train(Stopping(resumed), resumed)
    assert result.trained and observer.resumed_from == [2, 2]  # epochs 3 and 4 only
    alone = _net()
    fit(Supervised(alone), digits, config=_config(epochs=4), progress=False)
    torch.testing.assert_close(_flat(resumed), _flat(alone), rtol=1e-5, atol=1e-7)


def _search_in_rank(task: SearchTask, data: Any, events: Any) -> dict[str, Any]:
    """One rank of the search test: a short search, then its architecture parameters."""
    del events
    config = TrainConfig(epochs=1, batch_size=16, lr=0.05, device="cpu", devices=2)
    fit(task, data, config=config, progress=False)
    return {"rank": world().rank, "alphas": [a.detach() for a in task.supernet.arch_parameters()]}


@RANKS
@pytest.mark.parametrize("optimization", ["one-level", "bilevel"])
def test_a_searchs_architecture_parameters_stay_the_same_on_every_rank(
    digits: Any, optimization: str
) -> None:
    """Each rank steps the architecture on its share of the (held-out) batch with the gradient
    reduced over the ranks: after a search they hold the same parameters, and they moved."""
    torch.manual_seed(0)
    shape = NetShape.of(channels=4, layers=3, num_classes=10, in_chans=1, input_size=8)
    net = Supernet(shape, uniform_candidates(SMALL_SPACE))
    before = [a.detach().clone() for a in net.arch_parameters()]
    method = KDConfig(distance="kl")
    factory = residual_objective(method=method, objective=method.objective(), teacher=None,
                                 base=None, cache=(torch.randn(len(digits), 10), None))  # fmt: skip
    held = loader(Indexed(digits), batch_size=16, shuffle=True,
                  generator=torch.Generator().manual_seed(5))  # fmt: skip
    settings = SearchSettings(budget_mflops=100.0, flops_weight=1.0, arch_lr=0.05,
                              arch_weight_decay=0.0, optimization=optimization)  # type: ignore[arg-type]  # fmt: skip
    task = SearchTask(net, objective=factory(net, None), settings=settings,
                      held_out=factory(net, None), held_out_batches=held)  # fmt: skip
    ranks = launch(_search_in_rank, (task, digits), devices=2, cuda=False)
    assert [r["rank"] for r in ranks] == [0, 1]
    for a, b, start in zip(ranks[0]["alphas"], ranks[1]["alphas"], before, strict=True):
        assert torch.equal(a, b)
        assert not torch.allclose(a, start)
