"""A sweep's Optuna study read from Optuna's own tables, as its RDB storage keeps them (the
schema of Optuna 3 and later: ``studies``, ``study_user_attributes``, ``trials``,
``trial_params``, ``trial_values``, ``trial_user_attributes``): a few short statements on the
reader given (the event loop's connection, or a session). Optuna's storage opens an engine and
checks its schema when it is made, then builds every attribute of every trial: tens of
milliseconds per read. Parameters come back as Optuna gives them (``to_external_repr`` of
their stored distribution), values with their infinities, trials in the order of their ids.
"""

from __future__ import annotations

import json
import math
import weakref
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import optuna
from sqlalchemy import (
    Connection,
    Engine,
    Float,
    Integer,
    String,
    Text,
    bindparam,
    column,
    inspect,
    select,
    table,
)

from api.http.queries.reader import Reader, connection_of
from search.sweep import OBJECTIVE

STUDIES = table("studies", column("study_id", Integer), column("study_name", String))
STUDY_ATTRS = table(
    "study_user_attributes",
    column("study_id", Integer),
    column("key", String),
    column("value_json", Text),
)
TRIALS = table(
    "trials",
    column("trial_id", Integer),
    column("number", Integer),
    column("study_id", Integer),
    column("state", String),
)
PARAMS = table(
    "trial_params",
    column("param_id", Integer),
    column("trial_id", Integer),
    column("param_name", String),
    column("param_value", Float),
    column("distribution_json", Text),
)
VALUES = table(
    "trial_values",
    column("trial_id", Integer),
    column("objective", Integer),
    column("value", Float),
    column("value_type", String),
)
TRIAL_ATTRS = table(
    "trial_user_attributes",
    column("trial_user_attribute_id", Integer),
    column("trial_id", Integer),
    column("key", String),
    column("value_json", Text),
)
SHOWN_ATTRS = ("accuracy", "error")  # the trials' user attributes a sweep shows
STORED_VALUE = {"INF_POS": math.inf, "INF_NEG": -math.inf}  # else FINITE: the stored value

# The statements, made once; their parameters: ``name`` (a study's), ``study_id``.
STUDY_ID = bindparam("study_id", type_=Integer)
OF_STUDY = TRIALS.c.study_id == STUDY_ID
RANKED_ON = select(STUDY_ATTRS.c.value_json).where(
    STUDY_ATTRS.c.study_id == STUDIES.c.study_id, STUDY_ATTRS.c.key == "objective"
)
FIND = select(STUDIES.c.study_id, RANKED_ON.scalar_subquery().label("objective")).where(
    STUDIES.c.study_name == bindparam("name", type_=String)
)
TRIAL_ROWS = (
    select(TRIALS.c.trial_id, TRIALS.c.number, TRIALS.c.state)
    .where(OF_STUDY)
    .order_by(TRIALS.c.trial_id)
)
PARAM_ROWS = (
    select(PARAMS.c.trial_id, PARAMS.c.param_name, PARAMS.c.param_value,
           PARAMS.c.distribution_json)
    .join(TRIALS, TRIALS.c.trial_id == PARAMS.c.trial_id)
    .where(OF_STUDY)
    .order_by(PARAMS.c.param_id)
)  # fmt: skip
VALUE_ROWS = (
    select(VALUES.c.trial_id, VALUES.c.objective, VALUES.c.value, VALUES.c.value_type)
    .join(TRIALS, TRIALS.c.trial_id == VALUES.c.trial_id)
    .where(OF_STUDY)
)
ATTR_ROWS = (
    select(TRIAL_ATTRS.c.trial_id, TRIAL_ATTRS.c.key, TRIAL_ATTRS.c.value_json)
    .join(TRIALS, TRIALS.c.trial_id == TRIAL_ATTRS.c.trial_id)
    .where(OF_STUDY, TRIAL_ATTRS.c.key.in_(SHOWN_ATTRS))
    .order_by(TRIAL_ATTRS.c.trial_user_attribute_id)
)
# the engines whose database has Optuna's tables (made with a sweep's study, never dropped)
_with_tables: weakref.WeakSet[Engine] = weakref.WeakSet()


@dataclass
class StoredTrial:
    """What a sweep shows of an Optuna trial, as ``study.get_trials()`` would give it."""

    number: int
    state: str  # Optuna's state, lower case: running, complete, fail, ...
    params: dict[str, Any] = field(default_factory=dict)
    values: list[float] | None = None
    user_attrs: dict[str, Any] = field(default_factory=dict)  # those of SHOWN_ATTRS it has


@dataclass
class Study:
    id: int
    on_dv: bool  # whether it ranks trials on D_v accuracy (its ``objective`` attribute)
    trials: list[StoredTrial]


def study(s: Reader, name: str) -> Study | None:
    """The study called ``name`` with its trials; None if there is no such study."""
    s = connection_of(s)
    if not _has_optuna_tables(s):
        return None
    found = s.execute(FIND, {"name": name}).first()
    if found is None:
        return None
    study_id, objective = found
    asked = {"study_id": study_id}
    rows = s.execute(TRIAL_ROWS, asked).all()
    trials = {r.trial_id: StoredTrial(number=r.number, state=str(r.state).lower()) for r in rows}
    for trial_id, name_, value, distribution in s.execute(PARAM_ROWS, asked).all():
        external = _distribution(distribution).to_external_repr(value)
        trials[trial_id].params[name_] = external
    stored: dict[int, dict[int, float]] = {}
    for trial_id, objective_index, value, kind in s.execute(VALUE_ROWS, asked).all():
        stored.setdefault(trial_id, {})[objective_index] = float(STORED_VALUE.get(str(kind), value))
    for trial_id, by_objective in stored.items():
        trials[trial_id].values = [by_objective[i] for i in sorted(by_objective)]
    for trial_id, key, value_json in s.execute(ATTR_ROWS, asked).all():
        trials[trial_id].user_attrs[key] = json.loads(value_json)
    on_dv = objective is not None and json.loads(objective) == OBJECTIVE
    return Study(id=study_id, on_dv=on_dv, trials=list(trials.values()))


@lru_cache(maxsize=1024)
def _distribution(stored: str) -> optuna.distributions.BaseDistribution:
    return optuna.distributions.json_to_distribution(stored)


def _has_optuna_tables(connection: Connection) -> bool:
    if connection.engine not in _with_tables and inspect(connection).has_table("studies"):
        _with_tables.add(connection.engine)
    return connection.engine in _with_tables
