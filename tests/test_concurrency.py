"""Commands racing on one study: one budget per study, one lock per database file, and a
worker whose trial was taken over writes nothing. Real processes, a real SQLite file."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.conftest import lenet_lab, results

pytestmark = pytest.mark.slow

TINY = ["--engine", "torch", "--jobs", "1", "-q", "--study", "race"]
BUDGETS = (["--subset", "100", "--epochs", "1", "--seeds", "2"],
           ["--subset", "200", "--epochs", "2", "--seeds", "3"])


def test_two_budgets_started_together_give_one_study_of_one_budget(tmp_path: Path) -> None:
    for attempt in range(20):
        folder = tmp_path / str(attempt)
        folder.mkdir()
        racing = [lenet_lab("sweep", "pooling", *TINY, *budget, cwd=folder, wait=False)
                  for budget in BUDGETS]
        done = [(p.wait(timeout=300), p.communicate()) for p in racing]
        codes = sorted(code for code, _ in done)
        assert codes[0] == 0 and codes[1] != 0, (attempt, done)
        refused = next(err for code, (_, err) in done if code)
        assert refused.startswith("Error: study 'race' was run with other settings"), refused
        assert refused.count("\n") == 1 and "Traceback" not in refused
        frame = results(folder)
        assert frame.subset.nunique() == 1 and frame.epochs.nunique() == 1, attempt
        assert len(frame) == 2 * (2 if frame.subset.iloc[0] == 100 else 3)


def test_a_file_and_a_symlink_to_it_never_run_one_arm_seed_twice(tmp_path: Path) -> None:
    (tmp_path / "link.db").symlink_to(tmp_path / "studies.db")
    args = ["sweep", "pooling", *TINY, "--subset", "200", "--epochs", "1", "--seeds", "8"]
    racing = [lenet_lab(*args, "--storage", f"sqlite:///{name}", cwd=tmp_path, wait=False)
              for name in ("studies.db", "link.db")]
    for process in racing:
        assert process.wait(timeout=600) == 0, process.communicate()[1]
    frame = results(tmp_path)
    pairs = list(zip(frame.arm, frame.seed))
    assert len(pairs) == len(set(pairs)) == 16 and (frame.state == "complete").all()


def _running(folder: Path) -> list[tuple[int, int]]:
    try:
        with sqlite3.connect(folder / "studies.db", timeout=30) as conn:
            return conn.execute("SELECT trial_id, epochs_done FROM lab_trials "
                                "WHERE status = 'running'").fetchall()
    except sqlite3.OperationalError:  # no tables yet
        return []


def test_a_stopped_worker_whose_trial_was_taken_over_writes_nothing(tmp_path: Path) -> None:
    """A worker on another machine (its host rewritten) stops past the grace period; a
    second worker fails its trial and runs the arm x seed again; the first, continued,
    says its trial was taken over, exits non-zero and writes nothing more."""
    env = {"LENET_LAB_GRACE_S": "11"}
    args = ["sweep", "pooling", *TINY, "--subset", "3000", "--epochs", "4", "--seeds", "1"]
    first = lenet_lab(*args, cwd=tmp_path, wait=False, **env)
    deadline = time.monotonic() + 120
    while not (running := _running(tmp_path)) or running[0][1] is None:
        assert time.monotonic() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.2)  # until its first trial has recorded an epoch
    os.kill(first.pid, signal.SIGSTOP)
    taken, epochs = running[0]
    with sqlite3.connect(tmp_path / "studies.db", timeout=30) as conn:
        conn.execute("UPDATE lab_trials SET host = 'another-machine' WHERE trial_id = ?", (taken,))
        before = conn.execute("SELECT count(*) FROM lab_epochs WHERE trial_id = ?",
                              (taken,)).fetchone()
    time.sleep(13)  # past the grace period: its heartbeat is stale
    second = lenet_lab(*args, cwd=tmp_path, **env)
    assert second.returncode == 0, second.stderr
    os.kill(first.pid, signal.SIGCONT)
    code = first.wait(timeout=300)
    _, stderr = first.communicate()
    assert code != 0 and stderr.startswith("Error: trial ") and "was taken over" in stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    frame = results(tmp_path)
    done = frame[frame.state == "complete"]
    assert sorted(zip(done.arm, done.seed)) == [("pooling=avg", 0), ("pooling=max", 0)]
    with sqlite3.connect(tmp_path / "studies.db") as conn:
        status, reason = conn.execute("SELECT status, reason FROM lab_trials WHERE trial_id = ?",
                                      (taken,)).fetchone()
        after = conn.execute("SELECT count(*) FROM lab_epochs WHERE trial_id = ?",
                             (taken,)).fetchone()
        weights = conn.execute("SELECT count(*) FROM lab_weights WHERE trial_id = ?",
                               (taken,)).fetchone()
    assert status == "failed" and reason.startswith("worker stopped (no heartbeat for over 11 s)")
    assert after == before and weights == (0,) and epochs is not None
    assert frame[frame.state == "failed"].test_acc.isna().all()  # no result shown as failed


SEARCH = """title = "workers sharing a search"
[run]
engine = "torch"
sampler = "tpe"
trials = 12
seeds = 1
confirm = 0
[space]
lr = { low = 0.001, high = 1.0, log = true }
"""


@pytest.mark.parametrize("round_", range(3))
def test_workers_sharing_a_search_keep_its_budget_and_never_draw_alike(tmp_path: Path,
                                                                       round_: int) -> None:
    """Four workers ask one TPE search for trials as fast as they finish them: counting
    what is left, seeding the sampler and drawing happen under one lock, so the search runs
    its 12 trials and no two draw the same learning rate (a draw from one sampler state)."""
    (tmp_path / "search.toml").write_text(SEARCH)
    done = lenet_lab("sweep", "search.toml", "--jobs", "4", "--subset", "100", "--epochs", "1",
                     "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    searched = results(tmp_path).query("stage == 'search'")
    assert len(searched) == 12 and searched.lr.nunique() == 12
