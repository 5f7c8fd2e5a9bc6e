"""Every read: plain rows, dicts and DataFrames for the sweep, the CLI and the report."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import sqlalchemy as sa

from lenet_lab.errors import StorageError
from lenet_lab.status import Status
from lenet_lab.store.database import Database, operation
from lenet_lab.store.schema import lab_epochs, lab_trials, lab_weights

__all__ = ["FINISHED", "finished_trials", "has_results", "has_studies", "list_studies",
           "load_weights", "progress", "read_results", "running_workers", "study_attrs",
           "study_frames",
           "study_row", "trial_record", "trial_epochs", "trial_statuses",
           "trials_training_on", "waiting_trial_ids"]


def has_studies(db: Database) -> bool:
    """Whether a database exists and holds Optuna's tables (checking creates nothing).

    A database holding tables of another application is refused (StorageError), so
    that nothing of lenet-lab's or Optuna's is ever written beside them.
    """
    if not db.exists():
        return False
    with db.transaction() as conn:
        tables = sa.inspect(conn).get_table_names()
    foreign = [t for t in tables if t not in _optuna_tables() and not t.startswith("lab_")]
    if foreign:
        raise StorageError(f"{db.sqlite_path or db.safe} holds tables of another application "
                           f"({', '.join(sorted(foreign)[:5])}): give lenet-lab a database of its "
                           f"own, e.g. --storage sqlite:///studies.db")
    return "studies" in tables


def has_results(db: Database) -> bool:
    """Whether a database holds lenet-lab's results: Optuna's tables and the `lab_results`
    view, which ensure_schema makes last. A command creating a fresh database makes
    Optuna's tables a moment before ours: until then, a reader finds no results."""
    if not has_studies(db):
        return False
    with db.transaction() as conn:
        return "lab_results" in sa.inspect(conn).get_view_names()


def _optuna_tables() -> set[str]:
    from optuna.storages._rdb import (
        models,  # Optuna's schema, as its storage creates it
    )

    return set(models.BaseModel.metadata.tables) | {"alembic_version"}


@operation
def study_row(db: Database, study_name: str) -> dict[str, Any] | None:
    with db.transaction() as conn:
        if not sa.inspect(conn).has_table("lab_studies"):
            return None
        row = conn.execute(sa.text("SELECT * FROM lab_studies WHERE study_name = :s"),
                           {"s": study_name}).first()  # the columns the database has
    if row is None:
        return None
    found = dict(row._mapping)
    if isinstance(found.get("created_at"), str):  # SQLite's text, read without the table
        from datetime import datetime

        found["created_at"] = datetime.fromisoformat(found["created_at"])
    return found


@operation
def waiting_trial_ids(db: Database, study_name: str, *, limit: int | None = None) -> list[int]:
    """Optuna's WAITING trials of a study, oldest first (candidates for a claim): the
    first `limit` of them, or all."""
    with db.transaction() as conn:
        return list(conn.execute(sa.text(
            "SELECT t.trial_id FROM trials t JOIN studies s ON s.study_id = t.study_id "
            "WHERE s.study_name = :s AND CAST(t.state AS VARCHAR(16)) = 'WAITING' "
            "ORDER BY t.number" + (" LIMIT :n" if limit else "")),
            {"s": study_name, "n": limit}).scalars())


@operation
def running_workers(db: Database, study_name: str) -> dict[int, tuple[str | None, int | None]]:
    """trial_id -> (host, pid) of every trial Optuna holds as RUNNING (see running_trials)."""
    return {row["trial_id"]: (row["host"], row["pid"]) for row in running_trials(db, study_name)}


# The Optuna trial attribute a worker sets as it takes a trial: [host, pid]
WORKER_ATTR = "lab_worker"


@operation
def running_trials(db: Database, study_name: str) -> list[dict[str, Any]]:
    """Every trial Optuna holds as RUNNING: trial_id, number, the worker's host and pid
    (from lab_trials, or from WORKER_ATTR before the worker recorded the trial there;
    None for a trial taken by an older version), and `silent_s`, the seconds since its
    last heartbeat by the database's clock (None before its first)."""
    # Optuna stamps heartbeats with CURRENT_TIMESTAMP, which PostgreSQL stores in the
    # session's time zone in a column without one: LOCALTIMESTAMP reads it back alike.
    now = "LOCALTIMESTAMP" if db.where.backend == "postgresql" else "CURRENT_TIMESTAMP"
    with db.transaction() as conn:
        heartbeats = sa.inspect(conn).has_table("trial_heartbeats")
        rows = conn.execute(sa.text(
            "SELECT t.trial_id, t.number, lt.host, lt.pid, a.value_json, " +
            (f"h.heartbeat, {now} AS now " if heartbeats else "NULL, NULL ") +
            "FROM trials t JOIN studies s ON s.study_id = t.study_id "
            "LEFT JOIN lab_trials lt ON lt.trial_id = t.trial_id "
            "LEFT JOIN trial_system_attributes a ON a.trial_id = t.trial_id AND a.key = :k " +
            ("LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id " if heartbeats else "") +
            "WHERE s.study_name = :s AND CAST(t.state AS VARCHAR(16)) = 'RUNNING'"),
            {"s": study_name, "k": WORKER_ATTR}).all()
    found = []
    for trial_id, number, host, pid, taker, beat, now in rows:
        if host is None and taker is not None:
            host, pid = json.loads(taker)
        found.append({"trial_id": trial_id, "number": number, "host": host, "pid": pid,
                      "silent_s": _seconds_between(beat, now)})
    return found


def _seconds_between(start: Any, end: Any) -> float | None:
    from datetime import datetime

    if start is None or end is None:
        return None
    start, end = (value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
                  for value in (start, end))
    return (end.replace(tzinfo=None) - start.replace(tzinfo=None)).total_seconds()


@operation
def trial_statuses(db: Database, trial_ids: list[int]) -> dict[int, tuple[str, str | None]]:
    """trial_id -> (status, reason) from our record of each trial."""
    if not trial_ids:
        return {}
    with db.transaction() as conn:
        rows = conn.execute(sa.select(lab_trials.c.trial_id, lab_trials.c.status,
                                      lab_trials.c.reason)
                            .where(lab_trials.c.trial_id.in_(trial_ids))).all()
    return {trial_id: (status, reason) for trial_id, status, reason in rows}


def _states_and_best(conn: sa.Connection, study: str) -> tuple[dict[str, int], float | None]:
    """Trials by state, and the best one trial reached on what choices read: validation
    accuracy (test accuracy in studies from before validation splits). A display, not
    the answer's best arm (results.ranked)."""
    states = dict(conn.execute(sa.text(
        "SELECT state, count(*) FROM lab_results WHERE study = :s GROUP BY state"),
        {"s": study}).all())
    columns = {c["name"] for c in sa.inspect(conn).get_columns("lab_results")}
    measure = "coalesce(max(valid_acc), max(test_acc))" if "valid_acc" in columns else \
        "max(test_acc)"
    best = conn.execute(sa.text(
        f"SELECT {measure} FROM lab_results WHERE study = :s AND state = :done"),
        {"s": study, "done": Status.COMPLETE.value}).scalar()
    return states, best


FINISHED = (Status.COMPLETE.value, Status.PRUNED.value, Status.DIVERGED.value,
            Status.INFEASIBLE.value)  # results: never run again


@operation
def finished_trials(db: Database, study: str) -> int:
    """How many of a study's trials have a result (FINISHED); 0 for a study not there."""
    if not has_results(db):
        return 0
    with db.transaction() as conn:
        return conn.execute(sa.text(
            "SELECT count(*) FROM lab_results WHERE study = :s AND state IN :states")
            .bindparams(sa.bindparam("states", expanding=True)),
            {"s": study, "states": list(FINISHED)}).scalar()


@operation
def trials_training_on(db: Database, host: str) -> int:
    """How many trials of this database are training on `host` now (every study)."""
    with db.transaction() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(lab_trials).where(
            lab_trials.c.host == host, lab_trials.c.status == Status.RUNNING.value)).scalar()


def progress(db: Database, study: str) -> dict[str, Any]:
    """Counts by state, the best trial's accuracy (_states_and_best), every started
    trial's (number, arm, is control) and the running trials' epochs, for a live display."""
    with db.transaction() as conn:
        states, best = _states_and_best(conn, study)
        running = conn.execute(
            sa.select(lab_trials.c.number, lab_trials.c.arm, sa.func.max(lab_epochs.c.epoch))
            .select_from(lab_trials.outerjoin(lab_epochs,
                                              lab_epochs.c.trial_id == lab_trials.c.trial_id))
            .where(lab_trials.c.study_name == study,
                   lab_trials.c.status == Status.RUNNING.value)
            .group_by(lab_trials.c.number, lab_trials.c.arm)).all()
        arms = conn.execute(sa.select(lab_trials.c.number, lab_trials.c.arm,
                                      lab_trials.c.is_control)
                            .where(lab_trials.c.study_name == study)).all()
    return {"states": states, "best": best, "arms": [tuple(row) for row in arms],
            "running": [(number, arm, epoch or 0) for number, arm, epoch in running]}


@operation
def list_studies(db: Database) -> list[dict[str, Any]]:
    """One entry per study: sweep, engine, trials by state (as recorded: see
    results.study_list for trials whose worker died), the best trial's accuracy."""
    if not has_studies(db):
        return []  # reading must not leave an empty database file behind
    with db.transaction() as conn:
        inspector = sa.inspect(conn)
        rows = conn.execute(sa.text(
            "SELECT s.study_name, ls.sweep, ls.engine, ls.title FROM studies s "
            "LEFT JOIN lab_studies ls ON ls.study_name = s.study_name ORDER BY s.study_name")
            if inspector.has_table("lab_studies") else sa.text(
            "SELECT study_name, NULL, NULL, NULL FROM studies ORDER BY study_name")).all()
        has_view = "lab_results" in inspector.get_view_names()
        studies = []
        for name, sweep, engine, title in rows:
            states, best = _states_and_best(conn, name) if has_view else ({}, None)
            studies.append({"study": name, "sweep": sweep, "engine": engine,
                            "title": title, "states": states, "best_trial_acc": best})
        return studies


@operation
def read_results(db: Database, study: str | None = None):
    """`lab_results` as a pandas DataFrame (optionally one study's rows)."""
    import pandas as pd

    query = "SELECT * FROM lab_results" + (" WHERE study = :study" if study else "") + \
        " ORDER BY study, trial"
    with db.transaction() as conn:
        return pd.read_sql(sa.text(query), conn, params={"study": study} if study else None)


@operation
def study_frames(db: Database, name: str):
    """(lab_results rows, per-epoch rows with the trial number) of one study."""
    import pandas as pd

    with db.transaction() as conn:
        results = pd.read_sql(sa.text("SELECT * FROM lab_results WHERE study = :s ORDER BY trial"),
                              conn, params={"s": name})
        epochs = pd.read_sql(sa.text(
            "SELECT lt.number AS trial, e.* FROM lab_epochs e JOIN lab_trials lt "
            "ON lt.trial_id = e.trial_id WHERE lt.study_name = :s ORDER BY lt.number, e.epoch"),
            conn, params={"s": name})
        queued = conn.execute(sa.text(
            "SELECT t.number, a.key, a.value_json FROM trial_user_attributes a JOIN trials t "
            "ON t.trial_id = a.trial_id JOIN studies s ON s.study_id = t.study_id "
            "WHERE s.study_name = :s AND a.key IN ('arm', 'control', 'stage', 'values')"),
            {"s": name}).all()
    return _numbers(name, _with_queued_arms(results, queued)), _numbers(name, epochs)


_NUMBER_COLUMNS = {c.name for table in (lab_trials, lab_epochs) for c in table.columns
                   if isinstance(c.type, (sa.Integer, sa.Float))}


def _numbers(study: str, frame):
    """Numeric columns as numbers; text where a number belongs (a database changed by
    hand or by another program) is one StorageError naming the study, trial and column."""
    import pandas as pd

    for column in sorted(_NUMBER_COLUMNS & set(frame.columns)):
        if frame[column].dtype != object:
            continue
        numbers = pd.to_numeric(frame[column], errors="coerce")
        wrong = frame[column].notna() & numbers.isna()
        if wrong.any():
            row = frame[wrong].iloc[0]
            raise StorageError(f"study {study!r}: trial {row.get('trial')}'s {column} holds "
                               f"{row[column]!r} where a number belongs: the database was "
                               f"changed by hand or by another program")
        frame[column] = numbers
    return frame


def _with_queued_arms(results, queued):
    """Trials that no worker has started yet have no lab_trials row: their arm, control
    flag, stage and the arm's own field values come from what the queue gave Optuna, so
    no arm reads as missing."""
    import json

    import pandas as pd

    column = {"arm": "arm", "control": "is_control", "stage": "stage"}
    found = pd.DataFrame(
        [(n, column[k], json.loads(v)) for n, k, v in queued if k != "values"] +
        [(n, name, value) for n, k, v in queued if k == "values"  # the arm's own fields
         for name, value in json.loads(json.loads(v)).items()],
        columns=["trial", "column", "value"])
    for name, rows in found.groupby("column"):
        if name in results:
            values = results.trial.map(dict(zip(rows.trial, rows.value)))
            results[name] = results[name].astype(object).where(results[name].notna(), values)
    return results


@operation
def study_attrs(db: Database, study_name: str) -> dict[str, Any]:
    """The study's Optuna user attributes (until_decided, arm_sources, exercise, ...)."""
    import json

    with db.transaction() as conn:
        rows = conn.execute(sa.text(
            "SELECT a.key, a.value_json FROM study_user_attributes a JOIN studies s "
            "ON s.study_id = a.study_id WHERE s.study_name = :s"), {"s": study_name}).all()
    return {key: json.loads(value) for key, value in rows}


@operation
def trial_record(db: Database, study: str, number: int) -> dict[str, Any] | None:
    """Our row of one trial, found by study and trial number (with the columns the
    database has: a reader never upgrades an older one)."""
    with db.transaction() as conn:
        row = conn.execute(sa.text("SELECT * FROM lab_trials WHERE study_name = :s AND "
                                   "number = :n"), {"s": study, "n": number}).first()
    return dict(row._mapping) if row else None


@operation
def trial_epochs(db: Database, trial_id: int) -> list[dict[str, Any]]:
    """A trial's per-epoch rows (lab_epochs), in order, with the columns the database has."""
    with db.transaction() as conn:
        rows = conn.execute(sa.text("SELECT * FROM lab_epochs WHERE trial_id = :t ORDER BY "
                                    "epoch"), {"t": trial_id}).all()
    return [dict(row._mapping) for row in rows]


@operation
def load_weights(db: Database, trial_id: int) -> dict[str, np.ndarray] | None:
    with db.transaction() as conn:
        blob = conn.execute(sa.select(lab_weights.c.npz)
                            .where(lab_weights.c.trial_id == trial_id)).scalar()
    if blob is None:
        return None
    with np.load(io.BytesIO(blob)) as archive:
        return {name: archive[name] for name in archive.files}
