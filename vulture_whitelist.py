"""Names vulture reports as unused that a framework uses by name (pass this file to vulture beside
the packages: ``vulture space distill search api db vulture_whitelist.py``, as
tests/test_code_health.py does). One group per mechanism; add a name to the group that calls it,
with no name that is truly dead and none that vulture reports nothing of without it."""

# ruff: noqa
# mypy: ignore-errors

# FastAPI: route functions, registered by their decorator and called by the router.
examples  # api/http/dashboard.py
docs  # api/http/dashboard.py
redoc  # api/http/dashboard.py
upload  # api/http/routes/checkpoints.py, api/http/routes/datasets.py
get_metrics  # api/http/routes/jobs.py
_.openapi  # api/http/main.py: FastAPI calls app.openapi() for /openapi.json

# pydantic: model_config, validators, and the fields of response models (serialised by name).
_.model_config
_._allocator_known  # api/runtime/settings.py: a field_validator
input  # api/http/schemas.py: FieldProblem
resumed_from_epoch  # api/http/schemas.py: StagePublic
eta_seconds  # api/http/schemas.py: Progress
stages_done
genotypes  # api/http/schemas.py: ArchitecturePublic; db/models.py: a mapped column
latest_job_id  # api/http/schemas.py: ArchitectureGroup(s)
queued  # api/http/schemas.py: Health
trial_states  # api/http/schemas.py: SweepSummary, SweepPublic
trial_list
optuna_dashboard
test_images  # api/http/schemas.py: DatasetPublic
mixed_sizes

# SQLAlchemy: mapped columns and a TypeDecorator's hooks (db/models.py), and a connection's
# isolation level set by attribute (db/session.py).
impl
cache_ok
_.process_bind_param
_.process_result_value
_.isolation_level

# Alembic: a migration's module-level names and its downgrade (db/migrations/versions/*.py).
down_revision
branch_labels
depends_on
downgrade
