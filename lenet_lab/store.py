"""Our tables in the study database, beside Optuna's, and the `lab_results` view.

Optuna owns its tables (`studies`, `trials`, ...). Ours are prefixed `lab_` and only
lenet-lab writes them:

- `lab_studies`: one row per study: sweep name, the sweep file and its SHA-256, engine
  and framework version, device, sampler and its settings, run settings, package
  versions, the command, creation time (UTC).
- `lab_trials`: one row per trial: arm, seed, every spec and training field, status,
  reason, final metrics, worker host/pid and heartbeat.
- `lab_epochs`: per-epoch metrics, written as each epoch ends.
- `lab_weights`: each completed trial's final weights (npz), for the activations view.

`lab_results` joins them with Optuna's trials: one row per trial, documented in README.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import socket
from contextlib import contextmanager
from dataclasses import fields
from datetime import datetime, timezone
from typing import Any, Iterator

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lenet_lab.errors import LabError
from lenet_lab.spec import LeNetSpec, TrainConfig

__all__ = ["DEFAULT_STORAGE", "HYPERPARAMETERS", "RESULT_COLUMNS", "connect", "ensure_schema",
           "read_results", "storage_url"]

DEFAULT_STORAGE = "sqlite:///studies.db"
ADVISORY_KEY = 0x1E7E7  # lenet-lab's PostgreSQL advisory lock
HYPERPARAMETERS = [f.name for f in fields(LeNetSpec)] + [f.name for f in fields(TrainConfig)]
SQLITE_TIMEOUT_S = 60  # writers wait this long for the lock before failing

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

_hyperparameter_columns = [
    sa.Column(name, sa.Text if name in ("conv_channels", "dense_units") else
              sa.Boolean if name == "batch_norm" else
              sa.Float if name in ("lr", "dropout", "weight_decay") else
              sa.Integer if name in ("kernel_size", "num_classes", "epochs", "batch_size", "seed")
              else sa.String(32))
    for name in HYPERPARAMETERS
]

def _metric_columns() -> list[sa.Column]:
    # seconds is training time only, evaluation excluded, as examples_per_sec.
    return [sa.Column(name, sa.Float) for name in
            ("train_loss", "train_acc", "test_acc", "examples_per_sec", "seconds")]


lab_trials = sa.Table(
    "lab_trials", metadata,
    sa.Column("trial_id", sa.Integer, primary_key=True),  # Optuna's trials.trial_id
    sa.Column("study_name", sa.String(512), nullable=False, index=True),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("arm", sa.Text, nullable=False),
    sa.Column("is_control", sa.Boolean, nullable=False),
    sa.Column("engine", sa.String(32), nullable=False),
    sa.Column("engine_version", sa.String(64)),
    sa.Column("device", sa.String(32)),
    sa.Column("device_name", sa.String(256)),
    sa.Column("subset", sa.Integer),
    *_hyperparameter_columns,
    sa.Column("param_count", sa.Integer),
    sa.Column("spec_json", sa.Text, nullable=False),
    sa.Column("config_json", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # running|complete|pruned|diverged|infeasible|failed
    sa.Column("reason", sa.Text),
    *_metric_columns(),  # of the last epoch; seconds and examples/sec over all epochs
    sa.Column("epochs_done", sa.Integer),
    sa.Column("host", sa.String(256)),
    sa.Column("pid", sa.Integer),
    sa.Column("heartbeat_at", sa.DateTime),
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
_STATE = """CASE WHEN CAST(t.state AS VARCHAR(16)) = 'FAIL' THEN
    CASE WHEN lt.status IN ('diverged', 'infeasible') THEN lt.status ELSE 'failed' END
    ELSE lower(CAST(t.state AS VARCHAR(16))) END"""  # PostgreSQL stores an enum: cast it
_VIEW_COLUMNS = [
    ("s.study_name", "study"), ("ls.sweep", "sweep"), ("t.number", "trial"), (_STATE, "state"),
    *((f"lt.{name}", name) for name in (
        "arm", "is_control", "engine", "engine_version", "device", "device_name", "subset",
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


def storage_url(url: str | None = None) -> str:
    """--storage, else $LENET_LAB_STORAGE, else sqlite:///studies.db."""
    return url or os.environ.get("LENET_LAB_STORAGE") or DEFAULT_STORAGE


def sqlite_path(url: str) -> str | None:
    """The file behind a SQLite URL (None for other databases or in-memory)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return parsed.database


def connect(url: str) -> Engine:
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise LabError(f"--storage {url!r} is not a database URL: use e.g. sqlite:///studies.db") from None
    connect_args = {"timeout": SQLITE_TIMEOUT_S} if parsed.get_backend_name() == "sqlite" else {}
    try:
        # pre_ping replaces connections that died with a database restart.
        return sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        hint = ' (pip install "lenet-lab[postgres]")' if parsed.get_backend_name() == "postgresql" else ""
        raise LabError(f"--storage {safe_url(url)} needs a database driver that is not "
                       f"installed{hint}: {exc}") from None


def safe_url(url: str) -> str:
    """The URL with any password masked, for everything that is printed or stored."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url


def redact(text: str, url: str) -> str:
    """`text` with the password of `url` masked wherever it appears."""
    password = sa.engine.make_url(url).password
    return text.replace(url, safe_url(url)).replace(password, "***") if password else text


@contextmanager
def creation_lock(url: str) -> Iterator[None]:
    """One process at a time creates tables, studies and queued trials in a database.

    Optuna's schema creation races on a fresh database, and two machines enqueueing the
    same grid at once would queue each arm x seed twice. PostgreSQL: an advisory lock;
    SQLite: an exclusive flock on `<database>-lock` beside the database file. Never on
    the database file itself: closing any descriptor of it would drop the POSIX locks
    SQLite holds in this process.
    """
    backend = sa.engine.make_url(url).get_backend_name()
    path = sqlite_path(url)
    if backend == "postgresql":
        engine = connect(url)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f"SELECT pg_advisory_lock({ADVISORY_KEY})")
                try:
                    yield
                finally:
                    conn.exec_driver_sql(f"SELECT pg_advisory_unlock({ADVISORY_KEY})")
        finally:
            engine.dispose()
    elif path:
        with open(f"{path}-lock", "ab") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    else:
        yield


def ensure_schema(engine: Engine) -> None:
    """Create our tables and the view (idempotent). Optuna's tables must exist first."""
    if engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            # WAL lets readers (progress, reports) run beside writers; it sticks to the file.
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    metadata.create_all(engine)
    with engine.begin() as conn:
        if not sa.inspect(conn).has_table("lab_results") and "lab_results" not in \
                sa.inspect(conn).get_view_names():
            conn.exec_driver_sql(RESULTS_VIEW)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _field_values(spec: LeNetSpec, config: TrainConfig) -> dict[str, Any]:
    values = {**spec.to_dict(), **config.to_dict()}
    for name in ("conv_channels", "dense_units"):
        values[name] = ",".join(map(str, values[name])) or "none"
    return values


def record_study(engine: Engine, row: dict[str, Any]) -> None:
    with engine.begin() as conn:
        conn.execute(lab_studies.insert().values(created_at=utcnow(), **row))


def study_row(engine: Engine, study_name: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(lab_studies).where(lab_studies.c.study_name == study_name)).first()
    return dict(row._mapping) if row else None


def start_trial(engine: Engine, *, trial_id: int, study_name: str, number: int, arm: str,
                is_control: bool, spec_values: dict[str, Any], run: dict[str, Any]) -> None:
    """Record a trial as running before its spec is built (it may turn out infeasible)."""
    with engine.begin() as conn:  # delete first: a retried write after a lost ack is harmless
        conn.execute(lab_trials.delete().where(lab_trials.c.trial_id == trial_id))
        conn.execute(lab_trials.insert().values(
            trial_id=trial_id, study_name=study_name, number=number, arm=arm, is_control=is_control,
            spec_json=json.dumps(spec_values["spec"], sort_keys=True),
            config_json=json.dumps(spec_values["config"], sort_keys=True),
            status="running", host=socket.gethostname(), pid=os.getpid(), heartbeat_at=utcnow(),
            **run, **spec_values["columns"]))


def trial_columns(spec: LeNetSpec, config: TrainConfig) -> dict[str, Any]:
    return {"spec": spec.to_dict(), "config": config.to_dict(),
            "columns": {**_field_values(spec, config), "param_count": spec.param_count}}


def raw_columns(values: dict[str, Any]) -> dict[str, Any]:
    """For a spec that cannot be built: its fields as given, for the record."""
    columns = {name: values.get(name) for name in HYPERPARAMETERS}
    for name in ("conv_channels", "dense_units"):
        if isinstance(columns[name], (list, tuple)):
            columns[name] = ",".join(map(str, columns[name])) or "none"
    spec = {k: v for k, v in values.items() if k in {f.name for f in fields(LeNetSpec)}}
    config = {k: v for k, v in values.items() if k in {f.name for f in fields(TrainConfig)}}
    return {"spec": spec, "config": config, "columns": columns}


def update_trial(engine: Engine, trial_id: int, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(lab_trials.update().where(lab_trials.c.trial_id == trial_id).values(**values))


def add_epoch(engine: Engine, trial_id: int, **metrics: Any) -> None:
    with engine.begin() as conn:  # idempotent, like start_trial
        conn.execute(lab_epochs.delete().where(lab_epochs.c.trial_id == trial_id,
                                               lab_epochs.c.epoch == metrics["epoch"]))
        conn.execute(lab_epochs.insert().values(trial_id=trial_id, **metrics))
        conn.execute(lab_trials.update().where(lab_trials.c.trial_id == trial_id)
                     .values(heartbeat_at=utcnow()))


def save_weights(engine: Engine, trial_id: int, weights: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **weights)
    with engine.begin() as conn:  # idempotent, like start_trial
        conn.execute(lab_weights.delete().where(lab_weights.c.trial_id == trial_id))
        conn.execute(lab_weights.insert().values(trial_id=trial_id, npz=buffer.getvalue()))


def load_weights(engine: Engine, trial_id: int) -> dict[str, np.ndarray] | None:
    with engine.connect() as conn:
        blob = conn.execute(sa.select(lab_weights.c.npz)
                            .where(lab_weights.c.trial_id == trial_id)).scalar()
    if blob is None:
        return None
    with np.load(io.BytesIO(blob)) as archive:
        return {name: archive[name] for name in archive.files}


def trial_rows(engine: Engine, trial_ids: list[int]) -> dict[int, dict[str, Any]]:
    if not trial_ids:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(sa.select(lab_trials).where(lab_trials.c.trial_id.in_(trial_ids)))
        return {row.trial_id: dict(row._mapping) for row in rows}


def _states_and_best(conn: sa.Connection, study: str) -> tuple[dict[str, int], float | None]:
    states = dict(conn.execute(sa.text(
        "SELECT state, count(*) FROM lab_results WHERE study = :s GROUP BY state"),
        {"s": study}).all())
    best = conn.execute(sa.text(
        "SELECT max(test_acc) FROM lab_results WHERE study = :s AND state = 'complete'"),
        {"s": study}).scalar()
    return states, best


def progress(engine: Engine, study: str) -> dict[str, Any]:
    """Counts by state, best test accuracy and the running trials' epochs, for a live display."""
    with engine.connect() as conn:
        states, best = _states_and_best(conn, study)
        running = conn.execute(
            sa.select(lab_trials.c.number, sa.func.max(lab_epochs.c.epoch))
            .select_from(lab_trials.outerjoin(lab_epochs, lab_epochs.c.trial_id == lab_trials.c.trial_id))
            .where(lab_trials.c.study_name == study, lab_trials.c.status == "running")
            .group_by(lab_trials.c.number)).all()
    return {"states": states, "best": best, "running": [(n, e or 0) for n, e in running]}


def list_studies(storage: str | None = None) -> list[dict[str, Any]]:
    """One entry per study: sweep, engine, trials by state, best test accuracy."""
    url = storage_url(storage)
    path = sqlite_path(url)
    if path and not os.path.exists(path):
        return []  # reading must not leave an empty database file behind
    engine = connect(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("studies"):
                return []
            rows = conn.execute(sa.text(
                "SELECT s.study_name, ls.sweep, ls.engine, ls.title FROM studies s "
                "LEFT JOIN lab_studies ls ON ls.study_name = s.study_name ORDER BY s.study_name")
                if sa.inspect(conn).has_table("lab_studies") else sa.text(
                "SELECT study_name, NULL, NULL, NULL FROM studies ORDER BY study_name")).all()
            has_view = "lab_results" in sa.inspect(conn).get_view_names()
            studies = []
            for name, sweep, engine_name, title in rows:
                states, best = _states_and_best(conn, name) if has_view else ({}, None)
                studies.append({"study": name, "sweep": sweep, "engine": engine_name,
                                "title": title, "states": states, "best_test_acc": best})
            return studies
    finally:
        engine.dispose()


def copy_study(source: str, target: str, study: str, target_name: str | None = None) -> int:
    """Copy a study, Optuna's part and ours, between storages (SQLite <-> PostgreSQL).

    Returns the number of trials copied. Trial ids differ between databases, so our rows
    are matched to the copies by trial number, which optuna.copy_study keeps.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    name = target_name or study
    with creation_lock(target):
        try:
            optuna.copy_study(from_study_name=study, from_storage=source, to_storage=target,
                              to_study_name=name)
        except optuna.exceptions.DuplicatedStudyError:
            raise LabError(f"{safe_url(target)} already has a study {name!r}: pass --as NEW_NAME") from None
        except KeyError:
            raise LabError(f"no study {study!r} in {safe_url(source)} (`lenet-lab studies`)") from None
        src, dst = connect(source), connect(target)
        try:
            ensure_schema(dst)
            new_ids = {t.number: t._trial_id
                       for t in optuna.load_study(study_name=name, storage=target).get_trials(deepcopy=False)}
            with src.connect() as read:
                if not sa.inspect(read).has_table("lab_trials"):
                    return len(new_ids)
                trials = [dict(r._mapping) for r in read.execute(
                    sa.select(lab_trials).where(lab_trials.c.study_name == study))]
                ids = {row["trial_id"]: new_ids[row["number"]] for row in trials}
                epochs = [dict(r._mapping) for r in read.execute(
                    sa.select(lab_epochs).where(lab_epochs.c.trial_id.in_(list(ids))))]
                weights = [dict(r._mapping) for r in read.execute(
                    sa.select(lab_weights).where(lab_weights.c.trial_id.in_(list(ids))))]
                meta = read.execute(sa.select(lab_studies).where(lab_studies.c.study_name == study)).first()
            with dst.begin() as write:
                if meta is not None:
                    write.execute(lab_studies.insert().values({**dict(meta._mapping), "study_name": name}))
                for rows, table in ((trials, lab_trials), (epochs, lab_epochs), (weights, lab_weights)):
                    if rows:
                        write.execute(table.insert(), [
                            {**row, "trial_id": ids[row["trial_id"]],
                             **({"study_name": name} if table is lab_trials else {})} for row in rows])
        finally:
            src.dispose()
            dst.dispose()
    return len(new_ids)


def read_results(storage: str | None = None, study: str | None = None):
    """`lab_results` as a pandas DataFrame (optionally one study's rows)."""
    import pandas as pd

    engine = connect(storage_url(storage))
    query = "SELECT * FROM lab_results" + (" WHERE study = :study" if study else "") + \
        " ORDER BY study, trial"
    with engine.connect() as conn:
        return pd.read_sql(sa.text(query), conn, params={"study": study} if study else None)
