"""Workers launched on a scheduler (`sweep --launch`), through submitit's local executor
(real processes, submitit's real submit and poll path) onto a real PostgreSQL study; and
the docs' Slurm array script and Kubernetes manifest run the command the launcher runs."""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from lenet_lab.launch import parse_sbatch, worker_argv
from tests import postgres
from tests.conftest import POOLING, arm_seeds, lenet_lab

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cluster"
ALL = sorted(POOLING + [("pooling=avg", 2), ("pooling=max", 2)])


def _results(url: str) -> pd.DataFrame:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return pd.read_sql(sa.text("SELECT * FROM lab_results ORDER BY trial"), conn)
    finally:
        engine.dispose()


@pytest.mark.slow
def test_three_launched_workers_finish_a_grid_with_every_arm_seed_once(pg, tmp_path: Path
                                                                       ) -> None:
    url = pg.new_database("launched")
    done = lenet_lab("sweep", "pooling", "--engine", "torch", "--seeds", "3", "--subset",
                     "500", "--epochs", "1", "--jobs", "1", "--launch", "local", "--workers",
                     "3", cwd=tmp_path, LENET_LAB_STORAGE=url)
    assert done.returncode == 0, done.stderr
    jobs = re.search(r"submitted 3 worker\(s\) to local: job (\S+), (\S+), (\S+) ", done.stdout)
    assert jobs, done.stdout
    assert postgres.PASSWORD not in done.stdout + done.stderr
    for pickled in (tmp_path / "lenet-lab-jobs").rglob("*.pkl"):  # the job files: no secret
        assert postgres.PASSWORD.encode() not in pickled.read_bytes()
    deadline = time.time() + 300
    while time.time() < deadline:
        frame = _results(url)
        if (frame.state == "complete").sum() == 6:
            break
        time.sleep(1)
    assert len(frame) == 6 and arm_seeds(frame) == ALL  # every arm x seed exactly once
    engine = sa.create_engine(url)
    with engine.connect() as conn:  # the work was shared by the launched workers
        pids = conn.execute(sa.text("SELECT count(DISTINCT pid) FROM lab_trials")).scalar()
    engine.dispose()
    assert pids >= 2


def test_a_launcher_refuses_sqlite_and_bad_options_in_one_line(tmp_path: Path) -> None:
    for extra, says in ((["--launch", "local"], "launched workers share a study through "
                         "PostgreSQL, not a SQLite file"),
                        (["--launch", "slurm", "--sbatch", "partition"], "--sbatch takes "
                         "KEY=VALUE"),
                        (["--launch", "slurm", "--sbatch", "time=2h"], "give a whole number "
                         "of minutes"),
                        (["--launch", "local", "--sbatch", "partition=gpu"], "--sbatch options "
                         "are for --launch slurm")):
        storage = [] if "local" in extra and "--sbatch" not in extra else \
            ["--storage", "postgresql+psycopg://u@127.0.0.1:1/x"]
        done = lenet_lab("sweep", "pooling", "--engine", "torch", *storage, *extra, cwd=tmp_path)
        assert done.returncode == 2 and done.stderr.startswith("Error: "), done.stderr
        assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "studies.db").exists()  # refused before anything is written


def test_sbatch_options_reach_submitit_by_name_or_pass_through() -> None:
    assert parse_sbatch(["partition=gpu", "time=120", "gpus=1", "cpus=8", "account=lab",
                         "mem=16G", "reservation=course"]) == {
        "slurm_partition": "gpu", "timeout_min": 120, "gpus_per_node": 1, "cpus_per_task": 8,
        "slurm_account": "lab", "slurm_mem": "16G",
        "slurm_additional_parameters": {"reservation": "course"}}


def _commands(text: str) -> list[list[str]]:
    """Every `lenet-lab sweep ...` command a script or manifest runs (comments aside), as
    its words."""
    lines = [line for line in text.splitlines() if not line.strip().startswith("#")]
    return [shlex.split(found) for line in lines
            for found in re.findall(r"lenet-lab sweep [^\"']*", line)]


@pytest.mark.parametrize("name", ["slurm-array.sh", "k8s-workers.yaml"])
def test_the_docs_scripts_run_the_launchers_command(name: str) -> None:
    """docs/cluster/*: the command each worker runs is worker_argv's, word for word, for
    the example they show (the improve sweep, torch, one worker per GPU)."""
    expected = ["lenet-lab", "sweep", *worker_argv("improve", study="improve-torch",
                                                    overrides={"engine": "torch"})]
    commands = _commands((DOCS / name).read_text())
    assert commands and all(command == expected for command in commands), commands
    assert "postgresql" not in " ".join(commands[0])  # the storage is in the environment
