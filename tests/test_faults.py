"""Faults a long sweep meets: Ctrl-C or SIGTERM to the parent of --jobs N, and a full disk."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import POOLING, arm_seeds, lenet_lab, privileged, results

pytestmark = pytest.mark.slow


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        found |= {int(child) for child in text.split()}
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_for(condition, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.3)


def _count(db: Path, query: str) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute(query).fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=["sigint", "sigterm", "sighup"])
def test_a_signal_to_the_parent_stops_every_worker(tmp_path: Path, stop: signal.Signals) -> None:
    args = ["sweep", "pooling", "--engine", "torch", "--subset", "3000", "--epochs", "3",
            "--seeds", "2", "--jobs", "2", "-q"]
    parent = lenet_lab(*args, cwd=tmp_path, wait=False)
    db = tmp_path / "studies.db"
    # both workers mid-trial: two running trials, and an epoch stored
    _wait_for(lambda: _count(db, "SELECT count(*) FROM lab_trials WHERE status = 'running'") == 2
              and _count(db, "SELECT count(*) FROM lab_epochs") >= 1)
    workers = _children(parent.pid)
    assert len(workers) >= 2
    parent.send_signal(stop)
    signalled = time.time()
    _, stderr = parent.communicate(timeout=60)
    _wait_for(lambda: not any(_alive(pid) for pid in workers), seconds=10)
    assert time.time() - signalled < 10
    assert parent.returncode == 130 and stderr.startswith("Interrupted: finished trials are kept")
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    frame = results(tmp_path)
    assert (frame.reason == "interrupted").sum() == 2 and "running" not in set(frame.state)
    again = lenet_lab(*args[:-3], "-q", cwd=tmp_path)  # one worker finishes the study
    assert again.returncode == 0, again.stderr
    frame = results(tmp_path)
    assert arm_seeds(frame) == POOLING  # every arm x seed once, none twice


def test_helpers_stop_when_their_parent_is_killed(tmp_path: Path) -> None:
    """A sweep killed outright (no terminal, no handler: SIGKILL) leaves no helper
    claiming and training trials: the kernel stops each (PR_SET_PDEATHSIG), and it
    records its trial as interrupted."""
    args = ["sweep", "pooling", "--engine", "torch", "--subset", "3000", "--epochs", "3",
            "--seeds", "3", "--jobs", "2", "-q"]
    parent = lenet_lab(*args, cwd=tmp_path, wait=False)
    db = tmp_path / "studies.db"
    _wait_for(lambda: _count(db, "SELECT count(*) FROM lab_trials WHERE status = 'running'") == 2
              and _count(db, "SELECT count(*) FROM lab_epochs") >= 1)
    helpers = _children(parent.pid)
    parent.kill()
    parent.communicate(timeout=30)
    _wait_for(lambda: not any(_alive(pid) for pid in helpers), seconds=15)
    started = _count(db, "SELECT count(*) FROM lab_trials")
    time.sleep(3)
    assert _count(db, "SELECT count(*) FROM lab_trials") == started  # nothing new claimed
    assert _count(db, "SELECT count(*) FROM lab_trials WHERE reason = 'interrupted'") == 1


def test_ctrl_c_while_the_helpers_start_stops_them_too(tmp_path: Path) -> None:
    """Ctrl-C (to the whole process group, as a terminal sends it) before the helpers have
    imported their framework: every process ends within seconds and no trial is left
    running."""
    args = ["sweep", "pooling", "--engine", "torch", "--subset", "3000", "--epochs", "3",
            "--seeds", "3", "--jobs", "2", "-q"]
    parent = subprocess.Popen([sys.executable, "-m", "lenet_lab", *args], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    _wait_for(lambda: len(_children(parent.pid)) >= 1, seconds=30)  # a helper is starting
    helpers = _children(parent.pid)
    os.killpg(parent.pid, signal.SIGINT)
    signalled = time.time()
    parent.communicate(timeout=60)
    _wait_for(lambda: not any(_alive(pid) for pid in helpers), seconds=15)
    assert time.time() - signalled < 15 and parent.returncode in (130, 0)
    assert _count(tmp_path / "studies.db",
                  "SELECT count(*) FROM lab_trials WHERE status = 'running'") == 0


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A real 8 MB file system (tmpfs), so that the disk really fills up."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    privileged(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)], "the full-disk test")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}


def test_a_full_disk_stops_the_sweep_at_once_and_keeps_what_was_written(tiny_disk: Path) -> None:
    quick = ["--engine", "torch", "--subset", "200", "--epochs", "1", "-q"]
    assert lenet_lab("sweep", "pooling", *quick, "--seeds", "1", cwd=tiny_disk).returncode == 0
    kept = tiny_disk / "kept"
    kept.mkdir()
    for args in (["export", "pooling-torch-e1-n200", "--out", "kept"],
                 ["report", "--out", "kept/reports", "--no-activations"]):
        done = lenet_lab(*args, cwd=tiny_disk)
        assert done.returncode == 0, done.stderr
    before = _digests(kept)
    free = os.statvfs(tiny_disk).f_bavail * os.statvfs(tiny_disk).f_frsize
    (tiny_disk / "filler").write_bytes(b"\0" * max(0, free - 400_000))  # 400 kB left
    started = time.time()
    full = lenet_lab("sweep", "pooling", *quick, "--seeds", "20", cwd=tiny_disk)
    assert time.time() - started < 60
    assert full.returncode == 1, full.stderr
    assert full.stderr.startswith("Error: the disk holding the database is full")
    assert full.stderr.count("\n") == 1 and "Traceback" not in full.stderr
    # A report now cannot be written either; the earlier one is left whole.
    again = lenet_lab("report", "--out", "kept/reports", "--no-activations", cwd=tiny_disk)
    assert again.returncode != 0 and again.stderr.startswith("Error: ")
    assert again.stderr.count("\n") == 1 and "Traceback" not in again.stderr
    assert _digests(kept) == before
    with sqlite3.connect(tiny_disk / "studies.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
