"""Names vulture reports as unused that a framework uses by name (pass this file to vulture beside
the packages: ``vulture api db vulture_whitelist.py``). One group per mechanism; add a name to
the group that calls it, with no name that is truly dead."""

# ruff: noqa
# mypy: ignore-errors

# FastAPI: route functions, registered by their decorator and called by the router.
index  # api/http/dashboard.py
examples  # api/http/dashboard.py
docs  # api/http/dashboard.py
redoc  # api/http/dashboard.py
upload  # api/http/routes/checkpoints.py, api/http/routes/datasets.py
get_metrics  # api/http/routes/jobs.py
create_sweep  # api/http/routes/sweeps.py
sweep_trials  # api/http/routes/sweeps.py
cancel_sweep  # api/http/routes/sweeps.py
_.openapi  # api/http/main.py: FastAPI calls app.openapi() for /openapi.json

# pydantic: model_config, validators, and the fields of response models (serialised by name).
_.model_config
_._allocator_known  # api/runtime/settings.py: a field_validator
loc  # api/http/schemas.py: Problem and ValidationProblem
msg
input
reused  # api/http/schemas.py: StagePublic
resumed_from_epoch
eta_seconds  # api/http/schemas.py: Progress
stages_done
network  # api/http/schemas.py: SearchPublic
strategy
genotype
layers
budget_mflops
repair
deployed  # api/http/schemas.py: Best
best  # api/http/schemas.py: JobRow, JobPublic
expected_mflops  # api/http/schemas.py: EpochPublic
genotypes  # api/http/schemas.py: ArchitecturePublic
latest_job_id  # api/http/schemas.py: ArchitectureGroup(s)
default
queued  # api/http/schemas.py: Health
sampler  # api/http/schemas.py: SweepSummary, SweepPublic
trial_states
trial_list
optuna_dashboard
unranked  # api/http/schemas.py: SweepPareto
train_images  # api/http/schemas.py: DatasetPublic
test_images
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

# distill.observe.Observer: the hooks a stage calls on the job's observer (api/runtime/worker.py).
_.exclusive
_.stage_reused

# Called from the command line (api/cli/main.py), outside the folders vulture is run on here.
serve  # api/runtime/serve.py
