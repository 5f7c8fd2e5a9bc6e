"""The database handle: numbered migrations, the database's clock, one lock for every
path to a file, and reading a dead worker's trial as failed without writing."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from lenet_lab import store
from lenet_lab.errors import StorageError
from lenet_lab.results import load_study, study_answer
from lenet_lab.store import SCHEMA_VERSION, Database, ensure_schema
from lenet_lab.store.schema import schema_version
from lenet_lab.sweep import Worker, run_sweep
from lenet_lab.sweep.queue import claim, open_study, reconcile
from tests.conftest import plan_for

DATA = Path(__file__).parent / "data"


def _version(db: Database) -> int | None:
    with db.transaction() as conn:
        return schema_version(conn)


def test_a_new_database_gets_the_latest_schema(tmp_path: Path, stand_in) -> None:
    plan = plan_for(tmp_path)
    stand_in()
    run_sweep(plan)
    assert _version(plan.db) == SCHEMA_VERSION
    assert ensure_schema(plan.db) == SCHEMA_VERSION  # nothing left to do


def test_a_database_another_command_is_still_creating_reads_as_empty(tmp_path: Path) -> None:
    """Optuna's tables come a moment before ours: a command planning beside the one that
    creates the database then finds no results (it used to read `lab_results` and fail)."""
    from lenet_lab.sweep.estimate import database_rate
    from lenet_lab.sweep.plan import check_settings

    plan = plan_for(tmp_path)
    plan.db.optuna()  # Optuna's schema only, as between its creation and ensure_schema
    assert store.has_studies(plan.db) and not store.has_results(plan.db)
    assert database_rate(plan.db, "torch", "cpu") is None
    assert store.finished_trials(plan.db, plan.study_name) == 0
    check_settings(plan)  # nothing to compare with: no error
    ensure_schema(plan.db)
    assert store.has_results(plan.db)


def test_a_version_table_emptied_by_hand_is_dated_by_its_columns(tmp_path: Path) -> None:
    """An empty lab_schema (a hand edit) used to stop the upgrade half-way, the view dropped."""
    shutil.copy(DATA / "stored-studies.db", tmp_path / "old.db")
    with Database(f"sqlite:///{tmp_path}/old.db") as db:
        ensure_schema(db)
        with db.transaction() as conn:
            conn.exec_driver_sql("DELETE FROM lab_schema")
        assert _version(db) == 2  # what its columns say at least
        ensure_schema(db)
        assert _version(db) == SCHEMA_VERSION and store.has_results(db)
        assert len(store.read_results(db)) > 0


def test_a_database_of_schema_2_is_upgraded_and_answers_as_before(tmp_path: Path) -> None:
    """tests/data/stored-studies.db was written by lenet-lab 33d1504 (schema 2: no
    lab_schema table)."""
    shutil.copy(DATA / "stored-studies.db", tmp_path / "old.db")
    expected = json.loads((DATA / "stored-answers.json").read_text())["studies"]
    with Database(f"sqlite:///{tmp_path}/old.db") as db:
        assert _version(db) == 2
        assert ensure_schema(db) == 2 and _version(db) == SCHEMA_VERSION
        for name, answer in expected.items():
            assert study_answer(load_study(db, name)).headline == answer["headline"]


def test_a_database_of_schema_1_gets_every_step(tmp_path: Path) -> None:
    shutil.copy(DATA / "stored-studies.db", tmp_path / "old.db")
    with Database(f"sqlite:///{tmp_path}/old.db") as db:
        with db.transaction() as conn:  # as lenet-lab 0.1 left it: no stage
            conn.exec_driver_sql("DROP VIEW lab_results")
            conn.exec_driver_sql("ALTER TABLE lab_trials DROP COLUMN stage")
        assert _version(db) == 1
        assert ensure_schema(db) == 1 and _version(db) == SCHEMA_VERSION
        with db.transaction() as conn:
            columns = {c["name"] for c in sa.inspect(conn).get_columns("lab_results")}
        assert {"stage", "state", "test_acc"} <= columns


def test_a_database_from_a_newer_lenet_lab_is_refused(tmp_path: Path, stand_in) -> None:
    plan = plan_for(tmp_path)
    stand_in()
    run_sweep(plan)
    with plan.db.transaction() as conn:
        conn.exec_driver_sql(f"UPDATE lab_schema SET version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StorageError, match="written by a newer lenet-lab"):
        ensure_schema(plan.db)


def test_studies_are_dated_by_the_database_clock(tmp_path: Path, stand_in) -> None:
    plan = plan_for(tmp_path)
    stand_in()
    run_sweep(plan)
    with plan.db.transaction() as conn:
        now = conn.exec_driver_sql("SELECT datetime('now')").scalar()
    created = store.study_row(plan.db, plan.study_name)["created_at"]
    assert abs((datetime.fromisoformat(now) - created).total_seconds()) < 60  # naive UTC


def test_one_lock_for_a_file_and_a_symlink_to_it(tmp_path: Path) -> None:
    (tmp_path / "real.db").touch()
    (tmp_path / "link.db").symlink_to(tmp_path / "real.db")
    direct, linked = Database(f"sqlite:///{tmp_path}/real.db"), Database(f"sqlite:///{tmp_path}/link.db")
    taken = threading.Event()

    def other() -> None:
        with linked.lock():
            taken.set()

    with direct.lock():
        thread = threading.Thread(target=other)
        thread.start()
        assert not taken.wait(0.5)  # held off while the file's lock is held
    assert taken.wait(5)
    thread.join()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_dead_workers_trial_reads_as_failed_without_a_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LENET_LAB_GRACE_S", "30")
    plan = plan_for(tmp_path)
    open_study(plan)
    trial = claim(plan, Worker(plan).study)[0]
    store.start_trial(plan.db, trial_id=trial._trial_id, study_name=plan.study_name,
                      number=trial.number, arm=trial.user_attrs["arm"], is_control=True,
                      stage="grid", columns=store.trial_columns({"seed": 0}),
                      run={"engine": "torch"})
    with plan.db.transaction() as conn:  # another machine's worker, silent for 40 s
        conn.execute(sa.text("UPDATE lab_trials SET host = 'elsewhere' WHERE trial_id = :t"),
                     {"t": trial._trial_id})
        conn.execute(sa.text("UPDATE trial_heartbeats SET heartbeat = datetime('now', '-40 "
                             "seconds') WHERE trial_id = :t"), {"t": trial._trial_id})
    plan.db.close()
    with sqlite3.connect(tmp_path / "studies.db") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = _digest(tmp_path / "studies.db")
    with Database(f"sqlite:///{tmp_path}/studies.db", read_only=True) as reader:
        row = load_study(reader, plan.study_name).results.set_index("trial").loc[trial.number]
        assert row.state == "failed"
        assert row.reason.startswith("worker stopped (no heartbeat for over 30 s)")
        assert store.running_workers(reader, plan.study_name)  # Optuna still says running
    # every listing says the same: `lenet-lab studies`, `export`, lenet_lab.studies()
    import lenet_lab

    url = f"sqlite:///{tmp_path}/studies.db"
    listed = lenet_lab.studies(url).set_index("study").loc[plan.study_name]
    assert listed.failed == 1 and "running" not in listed.index
    shown = subprocess.run([sys.executable, "-m", "lenet_lab", "studies", "--storage", url],
                           capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert "1 failed" in shown.stdout and "running" not in shown.stdout, shown.stderr
    exported = subprocess.run([sys.executable, "-m", "lenet_lab", "export", plan.study_name,
                               "--storage", url, "--out", str(tmp_path)], capture_output=True,
                              text=True)
    assert exported.returncode == 0, exported.stderr
    rows = pd.read_csv(next(tmp_path.glob("*.csv")))
    assert set(rows.state) == {"failed", "waiting"}
    assert _digest(tmp_path / "studies.db") == before
    monkeypatch.setenv("LENET_LAB_GRACE_S", "60")  # within the grace period: still running
    with Database(f"sqlite:///{tmp_path}/studies.db", read_only=True) as reader:
        states = load_study(reader, plan.study_name).results.state
        assert (states == "running").sum() == 1


def test_a_trial_failed_before_its_worker_recorded_it_says_why(tmp_path: Path) -> None:
    from optuna.trial import TrialState

    plan = plan_for(tmp_path)
    open_study(plan)
    trial = claim(plan, Worker(plan).study)[0]  # taken from the queue; the worker dies here
    plan.db.optuna().set_trial_state_values(trial._trial_id, state=TrialState.FAIL)  # stale
    row = load_study(plan.db, plan.study_name).results.set_index("trial").loc[trial.number]
    assert row.state == "failed" and row.reason.startswith("worker stopped (as it took the trial)")
    plan.db.close()


def _claim_and_die(folder: str) -> None:
    plan = plan_for(Path(folder))
    claim(plan, Worker(plan).study)
    os._exit(0)  # gone holding the trial, before recording it in lab_trials


def test_a_worker_that_dies_as_it_takes_a_trial_is_seen_at_once(tmp_path: Path) -> None:
    import optuna
    from optuna.trial import TrialState

    plan = plan_for(tmp_path)
    open_study(plan)
    taker = multiprocessing.get_context("spawn").Process(target=_claim_and_die,
                                                          args=(str(tmp_path),))
    taker.start()
    taker.join()
    results = load_study(plan.db, plan.study_name).results  # well within the grace period
    taken = results[results.reason.fillna("").str.startswith("worker stopped")]
    assert len(taken) == 1 and (results.state == "running").sum() == 0
    assert taken.reason.iloc[0].startswith(f"worker stopped (pid {taker.pid} on ")
    study = Worker(plan).study
    reconcile(plan, study)  # fails it in Optuna and queues its arm x seed again
    trials = optuna.load_study(study_name=plan.study_name, storage=plan.db.optuna()).trials
    dead = next(t for t in trials if t.number == taken.trial.iloc[0])
    assert dead.state == TrialState.FAIL
    key = (dead.user_attrs["arm"], dead.user_attrs["seed"])
    again = [t for t in trials if (t.user_attrs["arm"], t.user_attrs["seed"]) == key]
    assert [t.state for t in again] == [TrialState.FAIL, TrialState.WAITING]
    plan.db.close()
