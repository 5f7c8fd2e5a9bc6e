"""Stopping what is decided, replayed on recorded studies: every trial of the answer sheet
of 2026-11-28 (docs/answers/2026-11-28.db: 300+ trials, every epoch, run before diverged
runs were stopped) that the diverged rule (train.blew_up) would have stopped is
replayed as if it had stopped there, and every answer reads the same."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from lenet_lab.results import StudyData, load_study, study_answer
from lenet_lab.store import Database, list_studies
from lenet_lab.train import blew_up

RECORDED = Path(__file__).resolve().parents[1] / "docs" / "answers" / "2026-11-28.db"


@pytest.fixture(scope="module")
def db():
    with Database(f"sqlite:///{RECORDED}", read_only=True) as handle:
        yield handle


def stopped(data: StudyData) -> tuple[StudyData, dict[int, int]]:
    """The study as if each trial had stopped at its first epoch whose loss diverged:
    (the replayed data, {trial: the epoch it stops at})."""
    epochs = data.epochs
    stops = [blew_up(loss, epoch, 10) for loss, epoch in zip(epochs.train_loss, epochs.epoch)]
    crossed = epochs[stops].groupby("trial").epoch.min().to_dict()
    results, kept = data.results.copy(), epochs
    for trial, epoch in crossed.items():
        row = results.trial == trial
        results.loc[row, ["state", "test_acc", "epochs_done"]] = ["diverged", math.nan, epoch]
        kept = kept[(kept.trial != trial) | (kept.epoch <= epoch)]
    return replace(data, results=results, epochs=kept), crossed


def test_every_run_the_rule_stops_ended_at_chance(db: Database) -> None:
    stops = 0
    for row in list_studies(db):
        data = load_study(db, row["study"])
        _, crossed = stopped(data)
        ends = data.results.set_index("trial").test_acc
        assert all(ends[t] == pytest.approx(0.1, abs=0.02) or math.isnan(ends[t])
                   for t in crossed), row["study"]
        stops += len(crossed)
    assert stops == 13  # tanh and ReLU at lr 0.9 and more, in the searches too


@pytest.mark.parametrize("study", ["activation-torch", "improve-torch", "training-torch",
                                   "activation-torch-quick", "improve-torch-quick",
                                   "training-torch-quick"])
def test_stopping_diverged_runs_changes_no_answer(db: Database, study: str) -> None:
    data = load_study(db, study)
    replayed, crossed = stopped(data)
    assert crossed, "each of these studies has runs the rule stops"
    before, after = study_answer(data), study_answer(replayed)
    assert after.headline == before.headline
    assert after.verdicts == before.verdicts
    saved = sum(int(data.results.set_index("trial").epochs_done[t]) - e
                for t, e in crossed.items())
    assert saved > 0  # epochs the rule does not train
