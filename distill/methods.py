"""KD methods as a registry: the method of S0 and of every res-student (``kd:``, ``student_kd:``).

A method is one pydantic model, a subclass of :class:`MethodConfig`, that carries its settings
and its hooks; the run config's ``kd`` field is the discriminated union of every registered
model (on ``method``; a config without it is ``kd``), so ``/openapi.json`` documents each
method's fields and an unknown name is a 422 that lists the registered ones. Built-ins
(``kd``, ``dml``, ``relational``) register as a plug-in does, through the entry-point group
``reskd.methods`` in ``pyproject.toml``.

What a method provides, in one file::

    from typing import Literal
    from distill.losses import Objective
    from distill.methods import MethodConfig

    class MyLoss(Objective):
        def __init__(self, *, tau: float, weight: float) -> None: ...
        def forward(self, student, teacher, target, ce_logits=None): ...  # a scalar Tensor

    class Mine(MethodConfig):
        \"\"\"What the method does (shown on /docs).\"\"\"

        method: Literal["mine"] = "mine"  # the entry point's name, as the default
        weight: float = 1.0  # its own settings, validated like any config field

        def objective(self) -> Objective:  # the loss of a batch, built from the settings
            return MyLoss(tau=self.tau, weight=self.weight)

    # its pyproject.toml
    [project.entry-points."reskd.methods"]
    mine = "my_package.module:Mine"

The shared fields (``tau``, ``residual_target``, ``ce_on``, ``zero_init_residual``) are what the
residual task reads; ``needs_peer = True`` trains a second copy of every network alongside, each
also matching the other's prediction (deep mutual learning). A stage's key holds
:meth:`MethodConfig.settings`, so changing a method's settings trains its stages again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Union, get_args

from pydantic import Discriminator, Field, Tag, field_validator

from distill.config import TAG_SUFFIX, ConfigModel, Flag
from distill.losses import Distance, KDLoss, Objective, RelationalObjective
from space.registry import Registry, RegistryError

ResidualTarget = Literal["residual", "combined"]
CeOn = Literal["combined", "residual"]
DEFAULT_METHOD = "kd"  # the method of a config that names none (stored configs omit it)
RESIDUAL_ONLY = ("residual_target", "ce_on", "zero_init_residual")  # S0 has no base


class MethodConfig(ConfigModel):
    """What every KD method has: ``method`` (its registered name), the weight of its teacher
    term and how a res-student applies it.

    ``residual_target``: what a res-student's KD term compares. ``residual`` is the paper's
    literal form, eq. 3 between R_i and T_i = T - S_{i-1}; ``combined`` compares S_i = S_{i-1} + R_i
    with T instead (the same optimum up to a per-sample constant, which softmax ignores).

    ``ce_on``: the paper does not say whether the cross-entropy term of eq. 3 applies to R_i or
    to S_i. R_i's logits are a correction, not a classifier, so the default applies it to S_i
    (``combined``): the res-student is pushed to fix the labels S_{i-1} gets wrong. ``residual``
    applies it to R_i alone, as a literal reading of "R_i = KD(T_i)" would.
    """

    method: str
    tau: float = Field(0.9, ge=0, le=1, description="weight of the KD term against cross-entropy")
    residual_target: ResidualTarget = "residual"
    ce_on: CeOn = "combined"
    zero_init_residual: Flag = Field(
        True, description="zero each res-student's classifier so S_i starts at S_{i-1}"
    )

    @field_validator("method", mode="before")
    @classmethod
    def _registered(cls, name: Any) -> Any:
        METHODS.get(name)  # an unknown name is an error that lists the registered ones
        return name

    needs_peer: ClassVar[bool] = False  # a second copy of each network trains alongside
    # Settings a stage key holds beside the model's own (the built-ins' keys predate the split
    # into one model per method: each holds every built-in's fields, so stored stages are reused).
    key_extras: ClassVar[Mapping[str, Any]] = {}

    def objective(self) -> Objective:
        """The method's loss on a batch (a fresh module)."""
        raise NotImplementedError(f"KD method {self.method!r} defines no objective()")

    def settings(self) -> dict[str, Any]:
        """What a stage's result depends on of the method (a stage key's ``kd``)."""
        return {**self.key_extras, **self.model_dump(mode="json")}

    def for_stage(self, i: int) -> dict[str, Any]:
        """The settings that matter to stage ``i`` (S0 ignores the residual-only ones)."""
        settings = self.settings()
        if i == 0:
            for residual_only in RESIDUAL_ONLY:
                settings.pop(residual_only)
        return settings


class _EqThree(MethodConfig):
    """Eq. 3's distance and temperature (``kd`` and ``dml``)."""

    distance: Distance = Field("l2", description="eq. 3's distance: l2 (paper) or kl")
    t: float = Field(4.0, gt=0, le=1000, description="KD temperature")
    key_extras: ClassVar[Mapping[str, Any]] = {"distance_weight": 25.0, "angle_weight": 50.0}

    def objective(self) -> Objective:
        return KDLoss(distance=self.distance, tau=self.tau, t=self.t)


class KDConfig(_EqThree):
    """Eq. 3 of ResKD: ``tau * t^2 * distance(softmax(S/t), softmax(T/t)) + (1 - tau) * CE``."""

    method: Literal["kd"] = "kd"


class DMLConfig(_EqThree):
    """Deep mutual learning: eq. 3, with a peer copy of each network trained alongside, each
    network also matching the other's prediction (KL)."""

    method: Literal["dml"] = "dml"
    needs_peer: ClassVar[bool] = True


class RelationalConfig(MethodConfig):
    """Relational KD (Park et al.): ``(1 - tau) * CE + distance_weight * distance-wise loss +
    angle_weight * angle-wise loss`` on the output embeddings."""

    method: Literal["relational"] = "relational"
    distance_weight: float = Field(25.0, ge=0, le=1e6, description="the distance-wise term's")
    angle_weight: float = Field(50.0, ge=0, le=1e6, description="the angle-wise term's")
    key_extras: ClassVar[Mapping[str, Any]] = {"distance": "l2", "t": 4.0}

    def objective(self) -> Objective:
        return RelationalObjective(
            tau=self.tau, distance_weight=self.distance_weight, angle_weight=self.angle_weight
        )


def _check(name: str, entry: type[MethodConfig]) -> None:
    """An entry is a :class:`MethodConfig` whose ``method`` is ``Literal[name]`` with default
    ``name`` (so the union can tell it, and a config that omits ``method`` still reads)."""
    if not (isinstance(entry, type) and issubclass(entry, MethodConfig)):
        raise RegistryError(f"KD method {name!r}: {entry!r} is not a MethodConfig subclass")
    field = entry.model_fields["method"]
    if get_args(field.annotation) != (name,) or field.default != name:
        raise RegistryError(
            f"KD method {name!r}: {entry.__name__}.method must be Literal[{name!r}] = {name!r}"
        )


METHODS: Registry[type[MethodConfig]] = Registry("KD method", "reskd.methods", check=_check)


def _method_tag(raw: Any) -> str:
    """The union member of ``raw``: its method's. A config that names none, names an unknown
    method or is no mapping goes to ``kd``'s model, which says what is wrong at ``method`` (the
    registered names) or at the config ("must be a mapping")."""
    name = raw.method if isinstance(raw, MethodConfig) else DEFAULT_METHOD
    if isinstance(raw, Mapping):
        name = raw.get("method", DEFAULT_METHOD)
    known = isinstance(name, str) and name in METHODS
    return f"{name if known else DEFAULT_METHOD}{TAG_SUFFIX}"


def method_union() -> Any:
    """The type of a ``kd`` field: the registered methods' models, told apart by ``method``
    (built when the config that holds it is defined, so a plug-in's model joins it)."""
    members = tuple(Annotated[model, Tag(name + TAG_SUFFIX)] for name, model in METHODS.items())
    return Annotated[Union[members], Discriminator(_method_tag)]  # noqa: UP007 (from a tuple)
