"""`lenet-lab rerun` and Study.rerun: a recorded trial retrained from its record gives the
same numbers to the last digit (torch and MXNet, on the CPU), and a tampered record is
named as not matching. Real training on Fashion-MNIST subsets, a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import lenet_lab
from tests.conftest import ENGINES, lenet_lab as command

pytestmark = pytest.mark.slow

LEARNS = ['--subset', '2400', '--epochs', '2', '--seeds', '1', '-q']


@pytest.mark.parametrize("engine", ENGINES)
def test_a_recorded_trial_reruns_to_the_last_digit(tmp_path: Path, engine: str) -> None:
    done = command("sweep", "pooling", "--engine", engine, "--jobs", "2", *LEARNS, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    study = f"pooling-{engine}-e2-n2400"
    again = command("rerun", study, "1", cwd=tmp_path, COLUMNS="80")
    assert again.returncode == 0, again.stderr + again.stdout
    assert "the same setting as recorded, so every number must be equal" in again.stdout
    assert again.stdout.rstrip().endswith("is equal to the last digit")
    assert again.stdout.count(" = ") >= 7  # 2 epochs x (loss, acc, valid) + the test acc
    found = lenet_lab.load_study(study, storage=f"sqlite:///{tmp_path}/studies.db").rerun(
        arm="pooling=avg", seed=0)
    assert found.matches and found.exact and found.trial == 0 and len(found.rows) == 7


def test_a_tampered_record_is_named(tmp_path: Path) -> None:
    done = command("sweep", "pooling", "--engine", "torch", "--jobs", "1", *LEARNS, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(tmp_path / "studies.db") as conn:  # one digit of one number changed
        conn.execute("UPDATE lab_epochs SET valid_acc = valid_acc + 0.0001 WHERE epoch = 2 AND "
                     "trial_id = (SELECT trial_id FROM lab_trials WHERE number = 1)")
    again = command("rerun", "pooling-torch-e2-n2400", "1", cwd=tmp_path)
    assert again.returncode == 1
    assert "MISMATCH: 1 of 7 numbers differ beyond none; first at epoch 2: valid_acc" \
        in again.stdout
    found = lenet_lab.load_study("pooling-torch-e2-n2400",
                                 storage=f"sqlite:///{tmp_path}/studies.db").rerun(1)
    assert not found.matches and [r["metric"] for r in found.mismatches] == ["valid_acc"]


def test_rerun_refuses_what_it_cannot_find_in_one_line(tmp_path: Path) -> None:
    done = command("sweep", "pooling", "--engine", "torch", "--jobs", "1", *LEARNS, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for args, says in ((["pooling-torch-e2-n2400", "9"], "has no recorded trial 9"),
                       (["pooling-torch-e2-n2400"], "name the trial"),
                       (["pooling-torch-e2-n2400", "--arm", "x", "--seed", "0"],
                        "no completed trial of arm 'x' with seed 0"),
                       (["nope", "1"], "nope")):
        bad = command("rerun", *args, cwd=tmp_path)
        assert bad.returncode != 0 and bad.stderr.startswith("Error: ") and says in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
