"""Our tables in the study database, beside Optuna's, and the `lab_results` view.

Optuna owns its tables (`studies`, `trials`, `trial_heartbeats`, ...). Ours are prefixed
`lab_` and only lenet-lab writes them:

- `lab_studies`: one row per study: sweep name, the sweep file and its SHA-256, engine
  and framework version, device, sampler and its settings, run settings, package
  versions, the command, creation time (UTC).
- `lab_trials`: one row per trial: arm, seed, every spec and training field, status,
  reason, final metrics (validation accuracy beside test accuracy), how many training
  images were held out for validation, and the worker's host and pid.
- `lab_epochs`: per-epoch metrics, written as each epoch ends.
- `lab_weights`: each completed trial's final weights (npz), for the activations view;
- `lab_schema`: the version of these tables; older databases are upgraded step by step
  (MIGRATIONS) by the next command that writes.

`lab_results` joins them with Optuna's trials: one row per trial, documented in README.
Hyperparameter columns are typed from the spec's fields (`spec.field_kind`).
"""

from __future__ import annotations

from typing import Callable

import sqlalchemy as sa

from lenet_lab.errors import StorageError
from lenet_lab.spec import SPEC_FIELDS
from lenet_lab.fields import field_kind
from lenet_lab.status import Status
from lenet_lab.store.database import Database

__all__ = ["HYPERPARAMETERS", "MIGRATIONS", "RESULT_COLUMNS", "SCHEMA_VERSION", "ensure_schema",
           "lab_epochs", "lab_schema", "lab_studies", "lab_trials", "lab_weights", "metadata",
           "schema_version"]

HYPERPARAMETERS = list(SPEC_FIELDS)
METRICS = ("train_loss", "train_acc", "valid_acc", "test_acc", "examples_per_sec", "seconds")
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
    sa.Column("created_at", sa.DateTime, nullable=False),  # naive UTC, the database clock
    # JSON: what a rerun needs beyond the above: each dataset's files (SHA-256 of their
    # content) and validation split (seed, size, SHA-256 of its indices), the framework's
    # determinism settings, the platform
    sa.Column("record", sa.Text),
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
    sa.Column("validation", sa.Integer),  # training images held out for validation
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
    # how its speed was measured: the most trials training at once on its host (itself
    # included), its framework threads, and the host's mean 1-minute load over its epochs
    sa.Column("workers", sa.Integer),
    sa.Column("threads", sa.Integer),
    sa.Column("cpu_load", sa.Float),
    sa.Column("fused", sa.Integer),  # trained as one model with this many trials (1: alone)
)

lab_epochs = sa.Table(
    "lab_epochs", metadata,
    sa.Column("trial_id", sa.Integer, primary_key=True),
    sa.Column("epoch", sa.Integer, primary_key=True),
    *_metric_columns(),
)

lab_schema = sa.Table(
    "lab_schema", metadata,
    sa.Column("version", sa.Integer, nullable=False),  # see MIGRATIONS
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
        "validation", *HYPERPARAMETERS, "param_count", "train_loss", "train_acc", "valid_acc",
        "test_acc",
        "examples_per_sec", "epochs_done", "seconds", "workers", "threads", "cpu_load",
        "fused", "reason")),
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


SCHEMA_VERSION = 5  # the last of MIGRATIONS


def _add_columns(conn: sa.Connection, *columns: str, table: str = "lab_trials") -> None:
    """ALTER TABLE ... ADD COLUMN, for each column the table does not have yet."""
    have = {c["name"] for c in sa.inspect(conn).get_columns(table)}
    for column in columns:
        if column.split()[0] not in have:
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column}")


def _add_stage(conn: sa.Connection) -> None:
    _add_columns(conn, "stage VARCHAR(16)")


def _version_table(conn: sa.Connection) -> None:
    lab_schema.create(conn, checkfirst=True)


def _speed_conditions(conn: sa.Connection) -> None:
    _add_columns(conn, "workers INTEGER", "threads INTEGER", "cpu_load FLOAT")


def _validation(conn: sa.Connection) -> None:
    _add_columns(conn, "validation INTEGER", "valid_acc FLOAT", "fused INTEGER")
    _add_columns(conn, "valid_acc FLOAT", table="lab_epochs")
    _add_columns(conn, "record TEXT", table="lab_studies")


# Numbered steps, each from the version before it: version -> step. Version 1 is
# lenet-lab 0.1's tables (no `stage`); a database made before `lab_schema` existed is
# dated by its columns (schema_version). The view is rebuilt after any step.
MIGRATIONS: dict[int, Callable[[sa.Connection], None]] = {
    2: _add_stage,  # a trial's stage: grid, or a search's control, search, confirm
    3: _version_table,  # lab_schema records the version
    4: _speed_conditions,  # how each trial's speed was measured: workers, threads, load
    5: _validation,  # the validation split's size and accuracy (every choice reads it), and
    # what a rerun needs: the study's record, each trial's fused group size
}


def schema_version(conn: sa.Connection) -> int | None:
    """The version of our tables in a database; None when it has none of them."""
    inspector = sa.inspect(conn)
    tables = set(inspector.get_table_names())
    if "lab_schema" in tables:
        version = conn.execute(sa.select(sa.func.max(lab_schema.c.version))).scalar()
        if version is not None:
            return version  # else emptied by hand: dated by the columns, as before it existed
    if "lab_trials" not in tables:
        return None
    return 2 if "stage" in {c["name"] for c in inspector.get_columns("lab_trials")} else 1


def ensure_schema(db: Database) -> int:
    """Create our tables and the view, or bring older ones up to SCHEMA_VERSION, step by
    step (MIGRATIONS). Returns the version found before. Optuna's tables must exist."""
    if db.where.backend == "sqlite":
        with db.transaction() as conn:
            # WAL lets readers (progress, reports) run beside writers; the last writer to
            # close the file turns it off again (Database.close).
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    with db.transaction() as conn:
        found = schema_version(conn)
        inspector = sa.inspect(conn)
        whole = set(metadata.tables) <= set(inspector.get_table_names()) and \
            "lab_results" in inspector.get_view_names()
        if found == SCHEMA_VERSION and whole:
            return found
        if found is not None and found > SCHEMA_VERSION:
            raise StorageError(f"{db.safe} was written by a newer lenet-lab (schema version "
                               f"{found}, this one knows {SCHEMA_VERSION}): upgrade lenet-lab")
        conn.exec_driver_sql("DROP VIEW IF EXISTS lab_results")
        for version in range(found + 1, SCHEMA_VERSION + 1) if found is not None else ():
            MIGRATIONS[version](conn)
        metadata.create_all(conn)  # new tables, or ones dropped by hand
        conn.execute(lab_schema.delete())
        conn.execute(lab_schema.insert().values(version=SCHEMA_VERSION))
        conn.exec_driver_sql(RESULTS_VIEW)
    return found or 0
