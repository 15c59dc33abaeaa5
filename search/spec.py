"""The search spec: what a user sets for one res-student search (a pydantic config)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from distill.config import ConfigModel, Flag
from distill.train import TrainConfig
from search.budget import FILL

Strategy = Literal["stacnas", "darts", "nni-darts"]
STRATEGY_NAMES: tuple[Strategy, ...] = ("stacnas", "darts", "nni-darts")


# What nni-darts (NNI's own supernet, weights and export) cannot take: field -> (the value it
# needs, why).
NNI_FIXED: dict[str, tuple[Any, str]] = {
    "selection": ("argmax", "nni-darts derives by argmax (NNI's own export): use argmax"),
    "weighting": ("softmax", "nni-darts uses NNI's own softmax weights: use softmax"),
    "aux_skip": (0.0, "nni-darts trains NNI's own supernet, which has none: use 0"),
    "search_width": (1.0, "nni-darts searches NNI's own space at the derived width: use 1"),
}


class SearchSpec(ConfigModel):
    """One architecture search under a hard FLOPs budget.

    ``epochs`` is per search stage (STACNAS runs two). ``channels`` and ``layers`` shape both the
    supernet and the derived network (the budget may narrow the channels); ``channels: auto``
    (default) takes the widest count at which a cell of learnable operations fits the budget.
    ``optimization: auto`` is one-level for ``stacnas`` (as StacNAS does) and first-order bilevel
    for ``darts`` and ``nni-darts`` (as DARTS does). ``arch_lr`` defaults to 10x DARTS's 3e-4
    because searches here run a few epochs, not 50. ``auxiliary`` and ``drop_path_prob`` apply to
    the fine-tuned network.
    """

    budget_mflops: float = Field(
        gt=0, le=1e6, allow_inf_nan=False, description="the derived network's MFLOPs cap"
    )
    strategy: Strategy = "stacnas"
    epochs: int = Field(4, ge=1, le=1000, description="per search stage")
    channels: int | Literal["auto"] = Field(
        "auto",
        description="an even integer, or auto: the widest at which learnable operations on "
        "every edge fit the budget",
    )
    layers: int = Field(5, ge=3, le=64, description="cells")
    search_width: float = Field(
        1.0,
        ge=1,
        le=8,
        allow_inf_nan=False,
        description="the supernet's channels as a multiple of the derived network's (rounded "
        "to an even count): room for the convolutions to learn during the search; the FLOPs "
        "term is still counted at the derived network's channels",
    )
    stage1_layers: int | None = Field(
        None,
        ge=3,
        le=64,
        description="stacnas: cells of stage 1's proxy supernet (StacNAS: 14, then 20 = layers "
        "in stage 2 and the derived network, to close the depth gap); default: layers",
    )
    optimization: Literal["auto", "one-level", "bilevel"] = "auto"
    flops_weight: float = Field(1.0, ge=0, le=1e6)
    budget_floor: float | None = Field(
        None,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="the search is penalised (with flops_weight) when its derived network "
        "would use less than this share of the budget, as it is above the budget, so that it "
        "spends the budget itself instead of leaving the derivation's repair to fill it; "
        "default: 0.85 (the repair's own fill) for stacnas and darts, 0 (off) for nni-darts",
    )
    batch_size: int = Field(64, ge=1, le=65_536)
    lr: float = Field(0.025, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(3e-4, ge=0, le=1)
    arch_lr: float = Field(3e-3, gt=0, le=10)
    arch_weight_decay: float = Field(1e-3, ge=0, le=1)
    warmup_epochs: int = Field(
        0,
        ge=0,
        le=1000,
        description="per search stage: train the weights only, then the architecture too",
    )
    beta_decay: float = Field(
        0.0,
        ge=0,
        le=1e4,
        allow_inf_nan=False,
        description="beta-DARTS: weight of the Beta-Decay regularisation (mean log-sum-exp of "
        "each edge's architecture parameters), ramped linearly from 0 over each stage; 0: off",
    )
    random_smoothing: float = Field(
        0.0,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="SDARTS-RS: the weights train at the softmax weights plus uniform noise in "
        "[-epsilon, epsilon] (clipped, renormalised), epsilon ramped linearly from 0.03 to this "
        "value over each stage (SDARTS: 0.3); 0: off",
    )
    weighting: Literal["softmax", "sigmoid", "gumbel"] = Field(
        "softmax",
        description="how an edge's architecture parameters weight its candidates: softmax "
        "(DARTS: they compete for one unit), sigmoid (FairDARTS: each on its own) or gumbel "
        "(GDAS: each pass samples one operation per edge from the softmax, straight-through, "
        "temperature 10 to 0.1 over each stage)",
    )
    zero_one_loss: float = Field(
        0.0,
        ge=0,
        le=1e4,
        allow_inf_nan=False,
        description="FairDARTS: weight of the zero-one loss that pushes each sigmoid weight to 0 "
        "or 1 (FairDARTS: 10); needs weighting: sigmoid; 0: off",
    )
    aux_skip: float = Field(
        0.0,
        ge=0,
        le=10,
        allow_inf_nan=False,
        description="DARTS-: the coefficient of an auxiliary skip connection added to every "
        "edge outside the mixture, decayed linearly to 0 over each stage (DARTS-: 1); 0: off",
    )
    max_skips: int | None = Field(
        None, ge=0, le=8, description="P-DARTS: at most this many skip_connect in the normal cell"
    )
    partial_channels: Literal[1, 2, 4] = Field(
        1,
        description="PC-DARTS: 1/K of the channels go through an edge's candidates (1: all)",
    )
    selection: Literal["argmax", "perturbation"] = Field(
        "argmax",
        description="how the operations and edges are chosen from the trained supernet: argmax "
        "(the largest architecture weights, DARTS) or perturbation (DARTS-PT: what removing "
        "each one costs the objective); nni-darts always uses argmax",
    )
    selection_samples: int = Field(
        256, ge=8, le=1_000_000, description="perturbation: training images it scores on"
    )
    rank_candidates: int = Field(
        1,
        ge=1,
        le=32,
        description="train this many of the search's best networks briefly and keep the one "
        "with the lowest held-out objective (DARTS's selection by short training; 1: the "
        "derivation alone)",
    )
    rank_epochs: int = Field(1, ge=1, le=100, description="rank_candidates: epochs of each")
    grad_clip: float = Field(5.0, gt=0, le=1e4)
    min_channels: int = Field(
        2, ge=2, multiple_of=2, description="the narrowest the budget may make the network"
    )
    held_out: float = Field(
        0.5, gt=0, lt=1, description="bilevel: share of the training set the architecture steps on"
    )
    auxiliary: Flag = False
    drop_path_prob: float = Field(0.0, ge=0, lt=1)
    seed: int = Field(0, ge=0, lt=2**63)

    @field_validator("channels", mode="before")
    @classmethod
    def _even_or_auto(cls, value: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise ValueError(f"must be auto or an even integer in [2, 512], got {value!r}")
        if not 2 <= value <= 512 or int(value) % 2:
            raise ValueError(f"must be a multiple of 2 in [2, 512], got {value!r}")
        return int(value)

    @field_validator("warmup_epochs")
    @classmethod
    def _before_the_last_epoch(cls, value: int, info: ValidationInfo) -> int:
        epochs = info.data.get("epochs", 1)
        if value >= epochs:
            raise ValueError(f"must be an integer in [0, epochs={epochs})")
        return value

    @field_validator("stage1_layers")
    @classmethod
    def _shallower_stage1(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is None:
            return value
        if info.data.get("strategy", "stacnas") != "stacnas":
            raise ValueError("only the stacnas strategy has two stages; leave it unset")
        layers = info.data.get("layers", value)
        if value > layers:
            raise ValueError(f"must be an integer in [3, layers={layers}]")
        return value

    @field_validator(*NNI_FIXED)
    @classmethod
    def _nni_fixed(cls, value: Any, info: ValidationInfo) -> Any:
        needed, why = NNI_FIXED[str(info.field_name)]
        if value != needed and info.data.get("strategy") == "nni-darts":
            raise ValueError(why)
        return value

    @field_validator("budget_floor")
    @classmethod
    def _ours_only(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value and info.data.get("strategy") == "nni-darts":
            raise ValueError("nni-darts has no FLOPs term of ours (only the derivation): use 0")
        return value

    @field_validator("weighting")
    @classmethod
    def _not_smoothed(cls, value: str, info: ValidationInfo) -> str:
        if value == "gumbel" and info.data.get("random_smoothing"):
            raise ValueError(
                "gumbel trains on sampled architectures, not on SDARTS-RS's perturbed weights: "
                "use random_smoothing: 0 with it"
            )
        return value

    @field_validator("zero_one_loss")
    @classmethod
    def _sigmoid_only(cls, value: float, info: ValidationInfo) -> float:
        if value and info.data.get("weighting", "softmax") != "sigmoid":
            raise ValueError("needs weighting: sigmoid (softmax weights already sum to 1); use 0")
        return value

    @field_validator("min_channels")
    @classmethod
    def _at_most_channels(cls, value: int, info: ValidationInfo) -> int:
        channels = info.data.get("channels", value)
        if channels != "auto" and value > channels:
            raise ValueError(f"must be an even integer in [2, channels={channels}]")
        return value

    @field_validator("partial_channels")
    @classmethod
    def _divides_channels(cls, value: int, info: ValidationInfo) -> int:
        channels = info.data.get("channels", value)
        if channels != "auto" and channels % value:
            raise ValueError(f"must divide channels={channels}: one of 1, 2, 4")
        return value

    def supernet_channels(self, channels: int) -> int:
        """The supernet's channels for a derived network of ``channels``: ``search_width`` times
        as many, rounded to a multiple of 2 and of ``partial_channels``."""
        step = max(2, self.partial_channels)
        return max(channels, step * round(channels * self.search_width / step))

    @property
    def resolved_budget_floor(self) -> float:
        if self.budget_floor is not None:
            return self.budget_floor
        return 0.0 if self.strategy == "nni-darts" else FILL

    @property
    def resolved_optimization(self) -> Literal["one-level", "bilevel"]:
        if self.optimization != "auto":
            return self.optimization
        return "one-level" if self.strategy == "stacnas" else "bilevel"

    def train_config(self, device: str) -> TrainConfig:
        """How the supernet's weights are trained (DARTS: SGD, cosine)."""
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            schedule="cosine",
            seed=self.seed,
            device=device,
        )

    def to_dict(self) -> dict[str, Any]:
        """Every field, as stage keys hash it (``stage1_layers`` only when set, the selection's
        fields only when it is not the argmax, the ranking's only when it ranks, so searches
        stored before they existed keep their keys)."""
        left_out = set()
        if self.stage1_layers is None:
            left_out.add("stage1_layers")
        if self.selection == "argmax":
            left_out |= {"selection", "selection_samples"}
        if self.rank_candidates == 1:
            left_out |= {"rank_candidates", "rank_epochs"}
        if self.search_width == 1:
            left_out.add("search_width")
        if self.beta_decay == 0:
            left_out.add("beta_decay")
        if self.random_smoothing == 0:
            left_out.add("random_smoothing")
        if self.weighting == "softmax":
            left_out.add("weighting")
        if self.zero_one_loss == 0:
            left_out.add("zero_one_loss")
        if self.aux_skip == 0:
            left_out.add("aux_skip")
        floor = self.resolved_budget_floor
        if floor == 0:  # searches stored before the floor existed keep their keys
            left_out.add("budget_floor")
        fields = self.model_dump(exclude=left_out)
        if floor:
            fields["budget_floor"] = floor
        return fields
