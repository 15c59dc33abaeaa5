"""The base of every config (pydantic v2, ``extra="forbid"``, frozen) and its one error type.

A config is checked in two steps: its fields (types, ranges, allowed values) by pydantic, then what
needs several fields or the outside world (a model name against the dataset, a budget against the
search space) by the config's own ``check``. Both raise :class:`ConfigError`, whose ``errors`` name
each field as a list location (``["res_students", 0, "search", "strategy"]``), as FastAPI does; its
text reads ``res_students[0].search.strategy: <what is allowed>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Strict,
    StringConstraints,
    ValidationError,
)

Loc = tuple[str | int, ...]
M = TypeVar("M", bound="ConfigModel")

# Union members' tags pydantic puts into a location; a user names the field, not the member.
UNION_TAGS = frozenset(
    {"zoo-net", "genotype-net", "searched-net", "torchvision-net", "timm-net", "program-net"}
)
TAG_SUFFIX = ":tag"  # the suffix of the tags of a union whose members are registered (KD methods)


def _no_lone_surrogates(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


# Strings that are valid UTF-8: a lone surrogate such as "\\ud800" parses from JSON but cannot
# be stored or echoed back.
Name = Annotated[str, StringConstraints(max_length=200), AfterValidator(_no_lone_surrogates)]
PathText = Annotated[str, StringConstraints(max_length=4096), AfterValidator(_no_lone_surrogates)]
Flag = Annotated[bool, Strict()]  # true or false only: "yes", 1 or "on" are refused


class ConfigModel(BaseModel):
    """Unknown fields are errors, configs are immutable, numbers are finite and a bool is a JSON
    bool (``augment: "yes"`` is refused, not read as true)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @classmethod
    def from_dict(cls, raw: Any) -> Self:
        """Fields, then :meth:`check`; a :class:`ConfigError` names the first bad field."""
        config = parse(cls, raw)
        config.check()
        return config

    def check(self) -> None:
        """What needs several fields or the outside world (none by default)."""
        return None


def dotted(loc: Sequence[str | int]) -> str:
    """``("res_students", 0, "search")`` -> ``res_students[0].search``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def clean_loc(loc: Iterable[str | int]) -> list[str | int]:
    return [p for p in loc if p not in UNION_TAGS and not str(p).endswith(TAG_SUFFIX)]


_BOUNDS = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
    "multiple_of": ("a multiple of", "multiple_of"),
}
_KINDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "dict": "a mapping",
    "model": "a mapping",
    "list": "a list",
    "tuple": "a list",
    "finite": "a finite number",
}


def _message(error: Any) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    got = f", got {error['input']!r}" if "input" in error and kind != "missing" else ""
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required"
    if kind == "literal_error":
        allowed = str(ctx["expected"]).replace("'", "").replace(" or ", ", ")
        return f"must be one of {allowed}{got}"
    if kind in _BOUNDS:
        words, key = _BOUNDS[kind]
        bound = f"{ctx[key]:g}" if isinstance(ctx[key], float) else ctx[key]
        return f"must be {words} {bound}{got}"
    for prefix, words in _KINDS.items():
        if kind.startswith(prefix):
            return f"must be {words}{got}"
    return str(error["msg"]).removeprefix("Value error, ")


class ConfigError(ValueError):
    """One or more invalid fields; ``errors`` are ``{"loc": [...], "msg": ...}``."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        first = errors[0]
        where = dotted(first["loc"])
        super().__init__(f"{where}: {first['msg']}" if where else first["msg"])

    @classmethod
    def at(cls, loc: Sequence[str | int], msg: str) -> ConfigError:
        return cls([{"loc": list(loc), "msg": msg}])

    @classmethod
    def of(cls, exc: ValidationError, prefix: Loc = ()) -> ConfigError:
        return cls(
            [
                {"loc": [*prefix, *clean_loc(e["loc"])], "msg": _message(e)}
                for e in exc.errors(include_url=False)
            ]
        )

    def within(self, *prefix: str | int) -> ConfigError:
        """The same errors, located inside ``prefix`` (a base config inside a sweep)."""
        return ConfigError([{**e, "loc": [*prefix, *e["loc"]]} for e in self.errors])


def parse(cls: type[M], raw: Any) -> M:
    """``raw`` (a mapping from YAML, JSON or a request) as ``cls``, or a :class:`ConfigError`."""
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError.of(exc) from None


def require(ok: bool, loc: Sequence[str | int], msg: str) -> None:
    if not ok:
        raise ConfigError.at(loc, msg)
