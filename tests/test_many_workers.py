"""Many workers on one study: a real PostgreSQL server on 127.0.0.1, and SQLite on one machine."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from tests import postgres
from tests.conftest import POOLING, arm_seeds, lenet_lab

pytestmark = pytest.mark.slow

ALL = sorted(POOLING + [("pooling=avg", 2), ("pooling=max", 2)])


def storage_for(kind: str, pg_server, tmp_path: Path, name: str) -> str:
    if kind == "postgres":
        return pg_server.new_database(name)
    return f"sqlite:///{tmp_path}/studies.db"


def results(url: str) -> pd.DataFrame:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return pd.read_sql(sa.text("SELECT * FROM lab_results ORDER BY trial"), conn)
    finally:
        engine.dispose()


def start_workers(count: int, url: str, cwd: Path, *extra: str) -> list[subprocess.Popen]:
    args = ["sweep", "pooling", "--engine", "torch", "--seeds", "3", "--storage", url, "-q", *extra]
    return [lenet_lab(*args, cwd=cwd, wait=False) for _ in range(count)]


def finish(workers: list[subprocess.Popen]) -> list[tuple[int, str]]:
    return [(w.wait(timeout=600), w.communicate()[1]) for w in workers]


@pytest.fixture(params=[("postgres", 3), ("sqlite", 4)], ids=["postgres-3", "sqlite-4"])
def setup(request, tmp_path: Path):
    kind, workers = request.param
    pg_server = request.getfixturevalue("pg") if kind == "postgres" else None
    return kind, workers, pg_server


def test_workers_started_together_run_each_arm_seed_once(setup, tmp_path: Path) -> None:
    kind, count, pg_server = setup
    url = storage_for(kind, pg_server, tmp_path, "together")
    outcomes = finish(start_workers(count, url, tmp_path, "--subset", "500", "--epochs", "1"))
    assert all(code == 0 for code, _ in outcomes), outcomes
    frame = results(url)
    assert len(frame) == 6 and arm_seeds(frame) == ALL  # every arm x seed exactly once


def test_a_killed_worker_loses_no_arm_seed(setup, tmp_path: Path) -> None:
    kind, count, pg_server = setup
    url = storage_for(kind, pg_server, tmp_path, "killed")
    workers = start_workers(count, url, tmp_path, "--subset", "3000", "--epochs", "3")
    engine = sa.create_engine(url)
    victim = None
    deadline = time.time() + 180
    while victim is None and time.time() < deadline:  # a worker mid-trial: an epoch stored
        time.sleep(0.3)
        try:
            with engine.connect() as conn:
                row = conn.execute(sa.text(
                    "SELECT t.pid FROM lab_trials t JOIN lab_epochs e ON e.trial_id = t.trial_id "
                    "WHERE t.status = 'running' LIMIT 1")).first()
        except sa.exc.DBAPIError:
            continue
        victim = next((w for w in workers if row and w.pid == row.pid), None)
    engine.dispose()
    assert victim is not None, "no worker got to the middle of a trial"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    outcomes = finish([w for w in workers if w is not victim])
    assert all(code == 0 for code, _ in outcomes), outcomes
    frame = results(url)
    assert arm_seeds(frame) == ALL
    killed = frame[frame.state == "failed"]
    assert len(killed) == 1 and killed.reason.iloc[0].startswith("worker stopped (pid ")


def test_database_restart_mid_sweep_loses_nothing(pg, tmp_path: Path) -> None:
    url = pg.new_database("restart")
    workers = start_workers(2, url, tmp_path, "--subset", "3000", "--epochs", "3")
    engine = sa.create_engine(url)
    deadline = time.time() + 180
    epochs_before = 0
    while epochs_before == 0 and time.time() < deadline:
        time.sleep(0.3)
        try:
            with engine.connect() as conn:
                epochs_before = conn.execute(sa.text("SELECT count(*) FROM lab_epochs")).scalar()
        except sa.exc.DBAPIError:
            continue
    engine.dispose()
    assert epochs_before > 0, "no epoch was recorded before the restart"
    pg.stop()
    try:
        time.sleep(4)
    finally:
        pg.start()
    outcomes = finish(workers)
    assert all(code == 0 for code, _ in outcomes), outcomes
    frame = results(url)
    assert arm_seeds(frame) == ALL
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM lab_epochs")).scalar() >= 6 * 3
    engine.dispose()


def test_a_worker_gives_up_clearly_when_the_database_stays_away(pg, tmp_path: Path) -> None:
    url = pg.new_database("gone")
    worker = lenet_lab("sweep", "pooling", "--engine", "torch", "--subset", "3000", "--epochs", "3",
                       "--seeds", "1", "--storage", url, "-q", cwd=tmp_path, wait=False,
                       LENET_LAB_DB_WAIT_S="3")
    engine = sa.create_engine(url)
    deadline = time.time() + 180
    while time.time() < deadline:
        time.sleep(0.3)
        try:
            with engine.connect() as conn:
                if conn.execute(sa.text("SELECT count(*) FROM lab_epochs")).scalar():
                    break
        except sa.exc.DBAPIError:
            continue
    engine.dispose()
    pg.stop()
    try:
        _, stderr = worker.communicate(timeout=120)
    finally:
        pg.start()
    assert worker.returncode == 1
    assert stderr.startswith("Error: lost the database for ") and stderr.count("\n") == 1
    assert "run the same command again to continue" in stderr and postgres.PASSWORD not in stderr
    assert len(results(url)[lambda f: f.state == "running"]) == 1  # kept, for the rerun to fail


def test_commands_work_on_postgres_and_studies_copy_both_ways(pg, tmp_path: Path) -> None:
    url = pg.new_database("commands")
    done = lenet_lab("sweep", "pooling", "--engine", "torch", "--subset", "500", "--epochs", "1",
                     "--seeds", "2", "--storage", url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    outputs = [done.stdout + done.stderr]
    for args in (["studies", "--storage", url],
                 ["export", "pooling-torch-e1-n500", "--storage", url, "--out", str(tmp_path)],
                 ["report", "--storage", url, "--out", str(tmp_path / "reports")],
                 ["copy", "pooling-torch-e1-n500", "--storage", url, "--to",
                  f"sqlite:///{tmp_path}/copy.db"]):
        step = lenet_lab(*args, cwd=tmp_path)
        assert step.returncode == 0, step.stderr
        outputs.append(step.stdout + step.stderr)
    assert "pooling-torch-e1-n500" in outputs[1] and "4 complete" in outputs[1]
    back = pg.new_database("back")
    step = lenet_lab("copy", "pooling-torch-e1-n500", "--storage", f"sqlite:///{tmp_path}/copy.db",
                     "--to", back, "--as", "round-trip", cwd=tmp_path)
    assert step.returncode == 0, step.stderr
    outputs.append(step.stdout + step.stderr)
    original, copied = results(url), results(back)
    columns = ["trial", "arm", "seed", "state", "test_acc", "train_loss", "examples_per_sec"]
    pd.testing.assert_frame_equal(original[columns], copied[columns])
    assert set(copied.study) == {"round-trip"}
    engine = sa.create_engine(back)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM lab_weights")).scalar() == 4
        assert conn.execute(sa.text("SELECT count(*) FROM lab_epochs")).scalar() == 4
    engine.dispose()
    # The password shows nowhere: not in output, not in the database, not in the report.
    assert all(postgres.PASSWORD not in text for text in outputs)
    assert postgres.PASSWORD not in pg.sql("SELECT string_agg(command, ' ') FROM lab_studies", "commands")
    assert "lab:***@127.0.0.1" in pg.sql("SELECT command FROM lab_studies", "commands")
    for path in list((tmp_path / "reports").glob("*.html")) + [tmp_path / "pooling-torch-e1-n500.csv"]:
        assert postgres.PASSWORD not in path.read_text()
    with sqlite3.connect(tmp_path / "copy.db") as db:
        assert postgres.PASSWORD not in "".join(str(r) for r in db.execute("SELECT * FROM lab_studies"))


def test_a_wrong_password_is_one_line_without_the_password(pg, tmp_path: Path) -> None:
    url = pg.new_database("wrong").replace(postgres.PASSWORD, "not-the-password-42")
    done = lenet_lab("studies", "--storage", url, cwd=tmp_path)
    assert done.returncode != 0 and done.stderr.startswith("Error: ")
    assert done.stderr.count("\n") == 1 and "not-the-password-42" not in done.stderr
