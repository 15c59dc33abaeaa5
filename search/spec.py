"""The search spec: what a user sets for one res-student search (checked field by field)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from distill.train import TrainConfig

STRATEGY_NAMES = ("stacnas", "darts", "nni-darts")
OPTIMIZATIONS = ("auto", "one-level", "bilevel")


@dataclass(frozen=True)
class SearchSpec:
    """One architecture search under a hard FLOPs budget.

    ``epochs`` is per search stage (STACNAS runs two). ``channels`` and ``layers`` shape both the
    supernet and the derived network (the budget may narrow the channels). ``optimization``
    ``auto`` is one-level for ``stacnas`` (as StacNAS does) and first-order bilevel for ``darts``
    and ``nni-darts`` (as DARTS does). ``arch_lr`` defaults to 10x DARTS's 3e-4 because searches
    here run a few epochs, not 50. ``auxiliary`` and ``drop_path_prob`` apply to the fine-tuned
    network.
    """

    budget_mflops: float
    strategy: Literal["stacnas", "darts", "nni-darts"] = "stacnas"
    epochs: int = 4
    channels: int = 8
    layers: int = 5
    optimization: Literal["auto", "one-level", "bilevel"] = "auto"
    flops_weight: float = 1.0
    batch_size: int = 64
    lr: float = 0.025
    momentum: float = 0.9
    weight_decay: float = 3e-4
    arch_lr: float = 3e-3
    arch_weight_decay: float = 1e-3
    warmup_epochs: int = 0  # per search stage: train the weights only, then the architecture too
    max_skips: int | None = None  # P-DARTS: at most this many skip_connect in the normal cell
    grad_clip: float = 5.0
    min_channels: int = 4
    held_out: float = 0.5  # bilevel: share of the training set the architecture steps on
    auxiliary: bool = False
    drop_path_prob: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("budget_mflops", self.budget_mflops > 0, "a number > 0"),
            ("strategy", self.strategy in STRATEGY_NAMES, f"one of {', '.join(STRATEGY_NAMES)}"),
            ("epochs", self.epochs >= 1, "an integer >= 1"),
            ("channels", self.channels >= 2 and self.channels % 2 == 0, "an even integer >= 2"),
            ("layers", self.layers >= 3, "an integer >= 3"),
            (
                "optimization",
                self.optimization in OPTIMIZATIONS,
                f"one of {', '.join(OPTIMIZATIONS)}",
            ),
            ("flops_weight", self.flops_weight >= 0, "a number >= 0"),
            ("batch_size", self.batch_size >= 1, "an integer >= 1"),
            ("lr", self.lr > 0, "a number > 0"),
            ("arch_lr", self.arch_lr > 0, "a number > 0"),
            ("grad_clip", self.grad_clip > 0, "a number > 0"),
            (
                "warmup_epochs",
                0 <= self.warmup_epochs < self.epochs,
                f"an integer in [0, epochs={self.epochs})",
            ),
            (
                "min_channels",
                2 <= self.min_channels <= self.channels and self.min_channels % 2 == 0,
                f"an even integer in [2, channels={self.channels}]",
            ),
            ("held_out", 0 < self.held_out < 1, "in (0, 1)"),
            ("max_skips", self.max_skips is None or 0 <= self.max_skips <= 8, "None or 0..8"),
            ("drop_path_prob", 0 <= self.drop_path_prob < 1, "in [0, 1)"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"{name}: must be {allowed}, got {getattr(self, name)!r}")

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
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Any, *, name: str = "search") -> SearchSpec:
        """A spec from a mapping; errors name ``<name>.<field>``."""
        if not isinstance(raw, Mapping):
            raise ValueError(f"{name}: a mapping of search settings (budget_mflops, ...)")
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise ValueError(
                f"{name}.{unknown[0]}: unknown field; allowed: {', '.join(sorted(allowed))}"
            )
        if "budget_mflops" not in raw:
            raise ValueError(f"{name}.budget_mflops: required (the derived network's MFLOPs cap)")
        try:
            return cls(**raw)
        except ValueError as exc:
            raise ValueError(f"{name}.{exc}") from exc
        except TypeError as exc:  # e.g. a string where a number belongs
            raise ValueError(f"{name}: a field has the wrong type ({exc})") from exc
