"""Sweeps on real Fashion-MNIST subsets, through the real command, into a real SQLite file."""

from __future__ import annotations

import hashlib
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import pandas as pd
import pytest

from lenet_lab.store import RESULT_COLUMNS, Database, load_weights
from tests.conftest import POOLING, QUICK, arm_seeds, lenet_lab, results

pytestmark = pytest.mark.slow

def test_pooling_sweep_acceptance_run_and_rerun(tmp_path: Path) -> None:
    # The command, on the default engine (MXNet) and the default storage.
    done = lenet_lab("sweep", "pooling", "--subset", "2000", "--epochs", "2", "--seeds", "2",
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    frame = results(tmp_path)
    assert list(frame.columns) == RESULT_COLUMNS
    assert len(frame) == 4 and arm_seeds(frame) == POOLING
    assert set(frame.study) == {"pooling-mxnet-e2-n2000"} and set(frame.engine) == {"mxnet"}
    assert frame.test_acc.between(0, 1).all() and (frame.examples_per_sec > 0).all()
    assert (frame.epochs_done == 2).all() and frame.is_control.sum() == 2
    assert "A1    pooling=max" in done.stdout and "query: pandas.read_sql" in done.stdout
    # Per-epoch metrics and weights were stored for every trial.
    epochs = pd.read_sql("SELECT * FROM lab_epochs", f"sqlite:///{tmp_path}/studies.db")
    assert len(epochs) == 8
    with Database(f"sqlite:///{tmp_path}/studies.db", read_only=True) as db:
        weights = load_weights(db, 1)
    assert weights["conv0.weight"].shape == (6, 1, 5, 5)
    # The study records where its numbers came from.
    with sqlite3.connect(tmp_path / "studies.db") as db:
        sweep, sha, sampler, packages, version, device = db.execute(
            "SELECT sweep, sweep_sha256, sampler, packages, engine_version, device_name "
            "FROM lab_studies").fetchone()
    assert sweep == "pooling" and len(sha) == 64 and '"grid"' in sampler and '"mxnet"' in packages
    assert version == "1.9.1" and device and device == frame.device_name.iloc[0]
    # Rerunning the same command adds no trial.
    again = lenet_lab("sweep", "pooling", "--subset", "2000", "--epochs", "2", "--seeds", "2",
                      cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(results(tmp_path)) == 4


@pytest.mark.parametrize("fuse, running", [("off", 1), ("2", 2)])  # fused: a group at once
def test_killed_run_resumes_to_the_full_set_without_duplicates(tmp_path: Path, fuse: str,
                                                               running: int) -> None:
    args = ["sweep", "pooling", "--subset", "3000", "--epochs", "3", "--seeds", "2",
            "--engine", "torch", "--fuse", fuse, "-q"]
    process = lenet_lab(*args, cwd=tmp_path, wait=False)
    db = tmp_path / "studies.db"
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until a trial is mid-way (an epoch stored)
        time.sleep(0.2)
        try:
            with sqlite3.connect(db) as conn:
                if conn.execute("SELECT count(*) FROM lab_epochs").fetchone()[0] >= 1:
                    break
        except sqlite3.Error:
            continue
    process.send_signal(signal.SIGKILL)
    process.wait()
    frame = results(tmp_path)  # still running, or failed already by an idle helper that saw
    assert {"running", "failed"} & set(frame.state)  # its parent's pid gone
    done = lenet_lab(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    frame = results(tmp_path)
    assert arm_seeds(frame) == POOLING  # complete, each arm x seed once
    killed = frame[frame.state == "failed"]
    # the killed process's trials were found dead; its helper, stopped by the kernel when
    # its parent died, recorded its own as interrupted
    dead = killed.reason.str.contains("worker stopped")
    assert dead.sum() == running and (killed.reason[~dead] == "interrupted").all()


def test_two_jobs_give_the_same_set(tmp_path: Path) -> None:
    done = lenet_lab("sweep", "pooling", *QUICK, "--jobs", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    frame = results(tmp_path)
    assert len(frame) == 4 and arm_seeds(frame) == POOLING


def test_infeasible_and_diverged_trials_are_recorded_and_not_rerun(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text(
        'title = "Three convs, and a learning rate that blows up"\n'
        '[space]\nconv_channels = [[6, 16], [6, 16, 32]]\nlr = [0.9, 1e9]\n'
        '[fixed]\nactivation = "relu"\n')
    done = lenet_lab("sweep", "mine.toml", *QUICK, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    frame = results(tmp_path)
    assert len(frame) == 8 and set(frame.sweep) == {"mine"}
    infeasible = frame[frame.state == "infeasible"]
    assert len(infeasible) == 4 and infeasible.reason.str.contains("pool2 gets a 1x1 feature map").all()
    diverged = frame[frame.state == "diverged"]
    assert len(diverged) == 2 and diverged.reason.str.startswith("diverged at epoch 1").all()
    assert lenet_lab("sweep", "mine.toml", *QUICK, cwd=tmp_path).returncode == 0
    assert len(results(tmp_path)) == 8


def test_studies_and_export(tmp_path: Path, quick_study: Path) -> None:
    shutil.copy(quick_study, tmp_path / "studies.db")
    listing = lenet_lab("studies", cwd=tmp_path)
    assert listing.returncode == 0 and "pooling-torch-e1-n500" in listing.stdout
    assert "4 complete" in listing.stdout
    for fmt in ("csv", "parquet"):
        done = lenet_lab("export", "pooling-torch-e1-n500", "--format", fmt, "--out", str(tmp_path),
                         cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    csv = pd.read_csv(tmp_path / "pooling-torch-e1-n500.csv")
    parquet = pd.read_parquet(tmp_path / "pooling-torch-e1-n500.parquet")
    assert len(csv) == len(parquet) == 4 and list(parquet.columns) == RESULT_COLUMNS


def test_terminal_tables_fit_80_columns_without_cutting_names(tmp_path: Path,
                                                               quick_study: Path) -> None:
    shutil.copy(quick_study, tmp_path / "studies.db")
    long = "pooling-torch-e1-n500-a-long-name-for-a-narrow-terminal"
    assert lenet_lab("copy", "pooling-torch-e1-n500", "--to", "sqlite:///studies.db",
                     "--as", long, cwd=tmp_path).returncode == 0
    narrow = {"COLUMNS": "80"}
    summary = lenet_lab("sweep", "pooling", *QUICK, cwd=tmp_path, **narrow)  # all done: prints
    table = summary.stdout.splitlines()[:6]  # title, header, two arms, what the keys mean
    assert summary.returncode == 0 and table[1].split()[:4] == ["arm", "seeds", "valid", "test"]
    assert [line.split()[0] for line in table[2:]] == ["book", "A1", "book", "A1"]
    assert table[5] == "A1    pooling=max"
    for args in (["studies"], ["sweeps"]):
        done = lenet_lab(*args, cwd=tmp_path, **narrow)
        assert done.returncode == 0, done.stderr
        assert max(len(line) for line in done.stdout.splitlines()) <= 80, done.stdout
    listing = lenet_lab("studies", cwd=tmp_path, **narrow).stdout
    assert all(any(line.startswith(f" {name} ") for line in listing.splitlines())
               for name in (long, "pooling-torch-e1-n500"))  # whole, on one line
    names = lenet_lab("sweeps", cwd=tmp_path, **narrow).stdout
    assert all(f" {name} " in names for name in ("conv-layers", "dense-layers", "training"))
    assert max(len(line) for line in table) <= 80


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished small pooling study (checkpointed into one file) to copy into tests."""
    folder = tmp_path_factory.mktemp("quick")
    assert lenet_lab("sweep", "pooling", *QUICK, cwd=folder).returncode == 0
    with sqlite3.connect(folder / "studies.db") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return folder / "studies.db"


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


@pytest.mark.parametrize("args, message", [
    (["sweep", "pooling", "--seeds", "0"], "Invalid value for '--seeds'"),
    (["sweep", "pooling", "--trials", "5"], "trials is for searches"),
    (["sweep", "nope"], "no sweep named 'nope'"),
    (["sweep", "pooling", "--device", "gpu:3"], "sees no GPU"),
    (["sweep", "pooling", "--storage", "sqlite:///missing/dir/x.db"], "folder missing/dir does not exist"),
    (["sweep", "pooling", "--study", "pooling-torch-e1-n500", "--engine", "torch", "--epochs", "2"],
     "was run with other settings (epochs 1 -> 2; subset 500 -> None)"),
    (["export", "nope"], "no study 'nope'"),
])
def test_rejected_commands_leave_the_database_unchanged(tmp_path: Path, args: list[str],
                                                        message: str, quick_study: Path) -> None:
    shutil.copy(quick_study, tmp_path / "studies.db")
    before = _digest(tmp_path / "studies.db")
    done = lenet_lab(*args, cwd=tmp_path)
    assert done.returncode != 0
    assert done.stderr.startswith("Error: ") and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr
    assert _digest(tmp_path / "studies.db") == before


def test_a_rejected_first_command_creates_no_database(tmp_path: Path) -> None:
    done = lenet_lab("sweep", "pooling", "--epochs", "0", cwd=tmp_path)
    assert done.returncode == 2 and not (tmp_path / "studies.db").exists()


def test_ctrl_c_stops_cleanly_and_the_rerun_finishes(tmp_path: Path) -> None:
    args = ["sweep", "pooling", "--subset", "3000", "--epochs", "3", "--seeds", "1",
            "--engine", "torch", "-q"]
    process = lenet_lab(*args, cwd=tmp_path, wait=False)
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.2)
        try:
            with sqlite3.connect(tmp_path / "studies.db") as conn:
                if conn.execute("SELECT count(*) FROM lab_epochs").fetchone()[0] >= 1:
                    break
        except sqlite3.Error:
            continue
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and stderr.startswith("Interrupted: finished trials are kept")
    with sqlite3.connect(tmp_path / "studies.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    frame = results(tmp_path)
    assert (frame.reason == "interrupted").sum() == 1
    assert lenet_lab(*args, cwd=tmp_path).returncode == 0
    assert arm_seeds(results(tmp_path)) == [("pooling=avg", 0), ("pooling=max", 0)]


def test_progress_names_the_running_arm_and_epoch_from_a_fresh_database(tmp_path: Path) -> None:
    from lenet_lab.sweep import plan_sweep, run_sweep, watch
    from lenet_lab.sweep_file import load_sweep

    sweep = load_sweep("pooling").with_run(engine="torch", epochs=2, seeds=1, subset=20000)
    plan = plan_sweep(sweep, Database(f"sqlite:///{tmp_path}/studies.db"), device="cpu")
    seen: list[tuple[int, str]] = []
    with watch(plan, lambda done, detail: seen.append((done, detail))):  # before the file exists
        run_sweep(plan)
    details = [detail for _, detail in seen]
    assert any(d.startswith("book epoch ") and d.split()[2] in ("1/2", "2/2") for d in details)
    assert any(d.startswith("A1 epoch ") for d in details), details
    assert seen[-1][0] <= 2 and all(a <= b for (a, _), (b, _) in zip(seen, seen[1:]))
