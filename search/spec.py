"""The search spec: what a user sets for one res-student search (a pydantic config).

Every search strategy has its own config model, a subclass of :class:`StrategySpec` (the fields
every strategy shares) whose ``strategy`` field is ``Literal[<its name>]``; the models live with
their strategies (``search.strategies``). :data:`SearchSpec` is the discriminated union of the
registered strategies' models, told apart by ``strategy`` (``stacnas`` when a config names none:
stored configs and YAML files omit it), so ``/openapi.json`` documents each strategy's fields and
an unknown name is a 422 that lists the registered ones. :data:`STRATEGIES` is the registry
(entry-point group ``reskd.strategies``) that built-ins and plug-ins join alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union, get_args

from pydantic import (
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from distill.config import TAG_SUFFIX, ConfigModel, Flag
from distill.train import TrainConfig
from search.budget import FILL
from space.registry import Registry, RegistryError, UnknownName

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler
    from pydantic_core import CoreSchema

    from search.strategies.base import Strategy

DEFAULT_STRATEGY = "stacnas"  # the strategy of a spec that names none
Optimization = Literal["one-level", "bilevel"]


class StrategySpec(ConfigModel):
    """One architecture search under a hard FLOPs budget: the fields every strategy shares.

    ``epochs`` is per search stage. ``channels`` and ``layers`` shape both the supernet and the
    derived network (the budget may narrow the channels); ``channels: auto`` (default) takes the
    widest count at which a cell of learnable operations fits the budget. ``optimization: auto``
    is the strategy's own (``default_optimization``). ``arch_lr`` defaults to 10x DARTS's 3e-4
    because searches here run a few epochs, not 50. ``auxiliary`` and ``drop_path_prob`` apply to
    the fine-tuned network. A strategy's model subclasses this one with ``strategy:
    Literal[<name>]`` and adds its own fields and checks.
    """

    # what ``auto`` and an unset ``budget_floor`` mean for the strategy
    default_optimization: ClassVar[Optimization] = "bilevel"
    default_budget_floor: ClassVar[float] = FILL

    budget_mflops: float = Field(
        gt=0, le=1e6, allow_inf_nan=False, description="the derived network's MFLOPs cap"
    )
    strategy: str = Field(description="the registered search strategy")
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
        "default: 0.85 (the repair's own fill), 0 (off) for a strategy without a FLOPs term",
    )
    batch_size: int = Field(64, ge=1, le=65_536)
    lr: float = Field(0.025, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(3e-4, ge=0, le=1)
    arch_lr: float = Field(
        3e-3,
        gt=0,
        le=10,
        description="the architecture's Adam learning rate; the default is 10x DARTS's and "
        "StacNAS's 3e-4, for searches of a few epochs (the paper configs set 3e-4)",
    )
    arch_weight_decay: float = Field(1e-3, ge=0, le=1)
    warmup_epochs: int = Field(
        0,
        ge=0,
        le=1000,
        description="per search stage: train the weights only, then the architecture too",
    )
    weighting: Literal["softmax", "sigmoid", "gumbel"] = Field(
        "softmax",
        description="how an edge's architecture parameters weight its candidates: softmax "
        "(DARTS: they compete for one unit), sigmoid (FairDARTS: each on its own) or gumbel "
        "(GDAS: each pass samples one operation per edge from the softmax, straight-through, "
        "temperature 10 to 0.1 over each stage)",
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
        "each one costs the objective)",
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
    supernet_budget_mflops: float | None = Field(
        None,
        gt=0,
        le=1e6,
        allow_inf_nan=False,
        description="share one search between budgets: the supernet trains as a search at this "
        "budget (a sweep's largest) and this network is derived from its architecture weights "
        "at budget_mflops with the budget repair, so searches that differ only in budget_mflops "
        "share one stored search stage; None: a search of its own",
    )
    supernet_budget_term: bool = Field(
        True,
        description="with supernet_budget_mflops: whether the shared supernet trains with its "
        "FLOPs term (at supernet_budget_mflops) or without any (budget-free: flops_weight and "
        "budget_floor 0)",
    )

    def shared_supernet(self) -> StrategySpec:
        """The search this one derives from (itself without ``supernet_budget_mflops``): the
        same settings at the supernet's budget (budget-free if asked), ranking no candidates
        (each budget ranks its own)."""
        assert self.supernet_budget_mflops is not None
        update: dict[str, Any] = {
            "budget_mflops": self.supernet_budget_mflops,
            "supernet_budget_mflops": None,
            "supernet_budget_term": True,
            "rank_candidates": 1,
            "rank_epochs": 1,
        }
        if not self.supernet_budget_term:
            update |= {"flops_weight": 0.0, "budget_floor": 0.0}
        return self.model_copy(update=update)

    @model_validator(mode="before")
    @classmethod
    def _fields_of_other_strategies(cls, raw: Any) -> Any:
        """A field that only other strategies have names them, not just "unknown field"."""
        if not isinstance(raw, Mapping):
            return raw
        errors = []
        for key in raw:
            owners = [n for n, s in STRATEGIES.items() if key in s.config.model_fields]
            if owners and key not in cls.model_fields:
                which = f"the {' and '.join(owners)} strateg{'y' if len(owners) == 1 else 'ies'}"
                errors.append((key, f"only {which} {'has' if len(owners) == 1 else 'have'} it; "
                               "leave it unset", raw[key]))  # fmt: skip
        if errors:
            raise _invalid("value_error", errors)
        return raw

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

    @classmethod
    def registered_name(cls) -> str | None:
        """The name in ``strategy: Literal[<name>]`` (None: not one strategy's model)."""
        names = get_args(cls.model_fields["strategy"].annotation)
        return names[0] if len(names) == 1 and isinstance(names[0], str) else None

    def supernet_channels(self, channels: int) -> int:
        """The supernet's channels for a derived network of ``channels``: ``search_width`` times
        as many, rounded to a multiple of 2 and of ``partial_channels``."""
        step = max(2, self.partial_channels)
        return max(channels, step * round(channels * self.search_width / step))

    @property
    def resolved_budget_floor(self) -> float:
        return self.default_budget_floor if self.budget_floor is None else self.budget_floor

    @property
    def resolved_optimization(self) -> Optimization:
        return self.default_optimization if self.optimization == "auto" else self.optimization

    def train_config(
        self, device: str, *, precision: str = "auto", devices: int = 1
    ) -> TrainConfig:
        """How the supernet's weights are trained (DARTS: SGD, cosine), at the run's
        ``precision`` on its ``devices``."""
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            schedule="cosine",
            seed=self.seed,
            device=device,
            precision=precision,
            devices=devices,
        )

    def left_out(self) -> set[str]:
        """Fields a stage key leaves out at their "off" value, so that searches stored before
        they existed keep their keys (a strategy's model adds its own)."""
        off = {
            "selection": self.selection == "argmax",
            "rank_candidates": self.rank_candidates == 1,
            "rank_epochs": self.rank_candidates == 1,
            "search_width": self.search_width == 1,
            "weighting": self.weighting == "softmax",
            "aux_skip": self.aux_skip == 0,
            "budget_floor": self.resolved_budget_floor == 0,
            "supernet_budget_mflops": self.supernet_budget_mflops is None,
            "supernet_budget_term": self.supernet_budget_term,
        }
        return {name for name, unset in off.items() if unset}

    def to_dict(self) -> dict[str, Any]:
        """Every field, as stage keys hash it (:meth:`left_out` left out; ``budget_floor``
        resolved)."""
        fields = self.model_dump(exclude=self.left_out())
        if "budget_floor" in fields:
            fields["budget_floor"] = self.resolved_budget_floor
        return fields


def _invalid(kind: str, errors: list[tuple[str, str, Any]], **context: Any) -> ValidationError:
    """A validation error of ``kind`` for each ``(field, message, value)``."""
    details = [
        InitErrorDetails(
            type=PydanticCustomError(kind, message, context or None),
            loc=(field,),
            input=value,
        )
        for field, message, value in errors
    ]
    return ValidationError.from_exception_data("SearchSpec", details)


def _check(name: str, entry: type[Strategy]) -> None:
    """An entry carries ``config``: a :class:`StrategySpec` whose ``strategy`` is
    ``Literal[name]`` (so the union can tell it), and the hooks ``search`` and ``plan``."""
    config = getattr(entry, "config", None)
    if not (isinstance(config, type) and issubclass(config, StrategySpec)):
        raise RegistryError(f"search strategy {name!r}: {entry!r} has no StrategySpec config")
    if config.registered_name() != name:
        raise RegistryError(
            f"search strategy {name!r}: {config.__name__}.strategy must be Literal[{name!r}]"
        )
    missing = [hook for hook in ("search", "plan") if not callable(getattr(entry, hook, None))]
    if missing:
        raise RegistryError(f"search strategy {name!r}: no {' or '.join(missing)}()")


STRATEGIES: Registry[type[Strategy]] = Registry("search strategy", "reskd.strategies", check=_check)


def _strategy_tag(raw: Any) -> str:
    """The union member of ``raw``: its strategy's (``stacnas`` when it names none)."""
    if isinstance(raw, StrategySpec):
        return raw.strategy + TAG_SUFFIX
    name = raw.get("strategy", DEFAULT_STRATEGY) if isinstance(raw, Mapping) else DEFAULT_STRATEGY
    return f"{name}{TAG_SUFFIX}"


def _known_strategy(raw: Any) -> Any:
    """An unknown ``strategy`` is an error at that field whose message is ``UnknownName``'s
    (it lists the registered names)."""
    if not isinstance(raw, Mapping):
        return raw
    name = raw.get("strategy", DEFAULT_STRATEGY)
    if name not in STRATEGIES:
        unknown = UnknownName(STRATEGIES.what, name, STRATEGIES.names())
        expected = " or ".join(", ".join(map(repr, unknown.known)).rsplit(", ", 1))
        raise _invalid("literal_error", [("strategy", str(unknown), name)], expected=expected)
    return raw


def spec_union() -> Any:
    """The registered strategies' models as one discriminated union on ``strategy`` (read from
    the registry when a config that holds it is defined, so a plug-in's model joins it)."""
    members = tuple(
        Annotated[entry.config, Tag(name + TAG_SUFFIX)] for name, entry in STRATEGIES.items()
    )
    return Annotated[
        Union[members],  # noqa: UP007 (a union built from a tuple)
        Discriminator(_strategy_tag),
        BeforeValidator(_known_strategy),
    ]


@lru_cache(maxsize=4)
def _adapter(entries: tuple[tuple[str, type[Strategy]], ...]) -> TypeAdapter[StrategySpec]:
    return TypeAdapter(spec_union())


class _RegisteredSpec:
    """``SearchSpec`` at run time: as a field's type, :func:`spec_union`; called (or its
    ``model_validate``), the registered strategy's model of the fields."""

    def __new__(cls, **fields: Any) -> StrategySpec:  # type: ignore[misc]
        return cls.model_validate(fields)

    @classmethod
    def model_validate(cls, raw: Any) -> StrategySpec:
        return _adapter(tuple(STRATEGIES.items())).validate_python(raw)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return handler.generate_schema(spec_union())


if TYPE_CHECKING:
    SearchSpec = StrategySpec
else:  # the registered strategies' models, told apart by ``strategy`` (plug-ins included)
    SearchSpec = _RegisteredSpec
