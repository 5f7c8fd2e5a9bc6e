"""Our tables in the study database, beside Optuna's, and the `lab_results` view.

Optuna owns its tables (`studies`, `trials`, `trial_heartbeats`, ...). Ours are prefixed
`lab_` and only lenet-lab writes them:

- `lab_studies`: one row per study: sweep name, the sweep file and its SHA-256, engine
  and framework version, device, sampler and its settings, run settings, package
  versions, the command, creation time (UTC).
- `lab_trials`: one row per trial: arm, seed, every spec and training field, status,
  reason, final metrics, and the worker's host and pid.
- `lab_epochs`: per-epoch metrics, written as each epoch ends.
- `lab_weights`: each completed trial's final weights (npz), for the activations view.

`lab_results` joins them with Optuna's trials: one row per trial, documented in README.
Hyperparameter columns are typed from the spec's fields (`spec.field_kind`).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lenet_lab.spec import SPEC_FIELDS, Status, field_kind

__all__ = ["HYPERPARAMETERS", "RESULT_COLUMNS", "ensure_schema", "lab_epochs", "lab_studies",
           "lab_trials", "lab_weights", "metadata"]

HYPERPARAMETERS = list(SPEC_FIELDS)
METRICS = ("train_loss", "train_acc", "test_acc", "examples_per_sec", "seconds")
_SQL_TYPES = {"widths": sa.Text, "bool": sa.Boolean, "float": sa.Float, "int": sa.Integer}

metadata = sa.MetaData()

lab_studies = sa.Table(
    "lab_studies", metadata,
    sa.Column("study_name", sa.String(512), primary_key=True),
    sa.Column("sweep", sa.String(256), nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("exercise", sa.Integer),
    sa.Column("sweep_file", sa.Text, nullable=False),  # the file's text as run
    sa.Column("sweep_sha256", sa.String(64), nullable=False),
    sa.Column("engine", sa.String(32), nullable=False),
    sa.Column("engine_version", sa.String(64), nullable=False),
    sa.Column("device", sa.String(32), nullable=False),  # of the first run; trials say their own
    sa.Column("device_name", sa.String(256), nullable=False),
    sa.Column("sampler", sa.Text, nullable=False),  # JSON: class, seed and settings
    sa.Column("settings", sa.Text, nullable=False),  # JSON: epochs, seeds, subset, ...
    sa.Column("packages", sa.Text, nullable=False),  # JSON: name -> version
    sa.Column("command", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),  # naive UTC, like Optuna's
)


def _metric_columns() -> list[sa.Column]:
    # seconds is training time only, evaluation excluded, as examples_per_sec.
    return [sa.Column(name, sa.Float) for name in METRICS]


lab_trials = sa.Table(
    "lab_trials", metadata,
    sa.Column("trial_id", sa.Integer, primary_key=True),  # Optuna's trials.trial_id
    sa.Column("study_name", sa.String(512), nullable=False, index=True),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("arm", sa.Text, nullable=False),
    sa.Column("is_control", sa.Boolean, nullable=False),
    sa.Column("stage", sa.String(16)),  # grid, or a search's control, search, confirm
    sa.Column("engine", sa.String(32), nullable=False),
    sa.Column("engine_version", sa.String(64)),
    sa.Column("device", sa.String(32)),
    sa.Column("device_name", sa.String(256)),
    sa.Column("subset", sa.Integer),
    *(sa.Column(name, _SQL_TYPES.get(field_kind(name), sa.String(32)))
      for name in HYPERPARAMETERS),
    sa.Column("param_count", sa.Integer),
    sa.Column("spec_json", sa.Text, nullable=False),
    sa.Column("config_json", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # a spec.Status value
    sa.Column("reason", sa.Text),
    *_metric_columns(),  # of the last epoch; seconds and examples/sec over all epochs
    sa.Column("epochs_done", sa.Integer),
    sa.Column("host", sa.String(256)),  # the worker's (heartbeats are Optuna's)
    sa.Column("pid", sa.Integer),
)

lab_epochs = sa.Table(
    "lab_epochs", metadata,
    sa.Column("trial_id", sa.Integer, primary_key=True),
    sa.Column("epoch", sa.Integer, primary_key=True),
    *_metric_columns(),
)

lab_weights = sa.Table(
    "lab_weights", metadata,
    sa.Column("trial_id", sa.Integer, primary_key=True),
    sa.Column("npz", sa.LargeBinary, nullable=False),
)

# One row per trial. `state` is Optuna's, lower-cased, with its "fail" told apart:
# diverged, infeasible, or failed (crashed, killed, interrupted).
_KEPT = ", ".join(f"'{s}'" for s in (Status.DIVERGED, Status.INFEASIBLE))
_STATE = f"""CASE WHEN CAST(t.state AS VARCHAR(16)) = 'FAIL' THEN
    CASE WHEN lt.status IN ({_KEPT}) THEN lt.status ELSE '{Status.FAILED}' END
    ELSE lower(CAST(t.state AS VARCHAR(16))) END"""  # PostgreSQL stores an enum: cast it
_VIEW_COLUMNS = [
    ("s.study_name", "study"), ("ls.sweep", "sweep"), ("t.number", "trial"), (_STATE, "state"),
    *((f"lt.{name}", name) for name in (
        "arm", "is_control", "stage", "engine", "engine_version", "device", "device_name", "subset",
        *HYPERPARAMETERS, "param_count", "train_loss", "train_acc", "test_acc",
        "examples_per_sec", "epochs_done", "seconds", "reason")),
    ("t.datetime_start", "started_at"), ("t.datetime_complete", "finished_at"),
]
RESULT_COLUMNS = [alias for _, alias in _VIEW_COLUMNS]
RESULTS_VIEW = f"""
CREATE VIEW lab_results AS
SELECT {", ".join(f"{expression} AS {alias}" for expression, alias in _VIEW_COLUMNS)}
FROM trials t
JOIN studies s ON s.study_id = t.study_id
LEFT JOIN lab_trials lt ON lt.trial_id = t.trial_id
LEFT JOIN lab_studies ls ON ls.study_name = s.study_name
"""


def ensure_schema(db: Engine) -> None:
    """Create our tables and the view (idempotent). Optuna's tables must exist first."""
    if db.dialect.name == "sqlite":
        with db.begin() as conn:
            # WAL lets readers (progress, reports) run beside writers; it sticks to the file.
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    metadata.create_all(db)
    with db.begin() as conn:
        inspector = sa.inspect(conn)
        if "stage" not in {c["name"] for c in inspector.get_columns("lab_trials")}:
            # a database from lenet-lab 0.1: add the column, then the view that shows it
            conn.exec_driver_sql("ALTER TABLE lab_trials ADD COLUMN stage VARCHAR(16)")
            conn.exec_driver_sql("DROP VIEW IF EXISTS lab_results")
        elif "lab_results" in inspector.get_view_names():
            return
        conn.exec_driver_sql(RESULTS_VIEW)
