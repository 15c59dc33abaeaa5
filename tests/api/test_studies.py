"""A sweep's study read from Optuna's tables is Optuna's own view of it (on SQLite and
PostgreSQL, through a session and through the event loop's connection)."""

from __future__ import annotations

import math

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from api.http.queries import studies
from api.runtime.sweeps import study_storage
from db.session import Database


def test_a_sweeps_trials_read_from_optunas_tables_are_optunas_own(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    with db.session(readonly=True) as s:  # no sweep yet: Optuna's tables are not there either
        assert studies.study(s, "reskd-sweep-1") is None
    storage = study_storage(database_url)
    study = optuna.create_study(
        study_name="reskd-sweep-1", storage=storage, directions=["maximize", "minimize"]
    )
    study.set_user_attr("objective", "val_accuracy")
    space = {
        "tau": FloatDistribution(0.5, 0.95),
        "res_students": IntDistribution(1, 3),
        "sampler": CategoricalDistribution(["nsga2", None, 4]),
        "t": FloatDistribution(1.0, 8.0, log=True),
    }
    study.add_trials([
        create_trial(params={"tau": 0.7, "res_students": 2, "sampler": None, "t": 2.5},
                     distributions=space, values=[0.91, 1.25],
                     user_attrs={"accuracy": 0.9, "job_id": 3, "error": None}),
        create_trial(params={"res_students": 1, "tau": 0.55, "sampler": 4, "t": 7.0},
                     distributions=space, values=[0.5, math.inf], user_attrs={"accuracy": 0.4}),
        create_trial(params={"tau": 0.9, "sampler": "nsga2"},
                     distributions={k: space[k] for k in ("tau", "sampler")},
                     state=TrialState.FAIL, user_attrs={"error": "RuntimeError: x"}),
    ])  # fmt: skip
    study.enqueue_trial({"tau": 0.6})
    study.ask()  # running, without values
    other = optuna.create_study(study_name="reskd-sweep-2", storage=storage)
    other.add_trial(
        create_trial(params={"tau": 0.8}, distributions={"tau": space["tau"]}, value=0.3)
    )
    expected = [
        (t.number, t.state.name.lower(), t.params, t.values,
         {k: v for k, v in t.user_attrs.items() if k in studies.SHOWN_ATTRS})
        for t in optuna.load_study(study_name="reskd-sweep-1", storage=storage).get_trials()
    ]  # fmt: skip
    assert [list(e[2]) for e in expected][:2] == [
        ["tau", "res_students", "sampler", "t"],
        ["res_students", "tau", "sampler", "t"],
    ]  # the order they were suggested in, which a trial's params keep
    with db.session(readonly=True) as s:
        in_session = studies.study(s, "reskd-sweep-1")
    on_the_loop = db.loop_read(lambda c: studies.study(c, "reskd-sweep-1"))
    for found in (in_session, on_the_loop):
        assert found is not None
        assert (found.id, found.on_dv) == (storage.get_study_id_from_name("reskd-sweep-1"), True)
        shown = [(t.number, t.state, t.params, t.values, t.user_attrs) for t in found.trials]
        assert shown == expected
        assert [list(t.params) for t in found.trials] == [list(e[2]) for e in expected]
    assert db.loop_read(lambda c: studies.study(c, "reskd-sweep-3")) is None
    storage.engine.dispose()
    db.dispose()
