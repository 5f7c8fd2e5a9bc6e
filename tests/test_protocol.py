"""The method on real data: every choice is made on the validation split, the test set
only measures (issue 25). Real Fashion-MNIST subsets, real torch training, a real SQLite
file and Optuna's real storage."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from lenet_lab.results import best_network, load_study, study_answer
from lenet_lab.store import Database
from lenet_lab.sweep import plan_sweep, run_sweep
from lenet_lab import data as datasets
from lenet_lab.data import load_cached
from lenet_lab.sweep_file import load_sweep
from tests.conftest import lenet_lab, results

pytestmark = pytest.mark.slow

# A search that learns in seconds (ReLU and Adam), long enough to be pruned (epoch 3 of
# 4, after 5 complete trials), with a winner to confirm and, since it searches the batch
# size, a compute-matched control.
SEARCH = """title = "a search that chooses"
[run]
engine = "torch"
sampler = "tpe"
trials = 12
seeds = 2
confirm = 2
prune = true
subset = 3000
[fixed]
activation = "relu"
optimizer = "adam"
lr = 0.003
epochs = 4
[space]
dropout = { low = 0.0, high = 0.6 }
batch_size = [128, 256]
pooling = ["avg", "max"]
"""


def _choices(tmp_path: Path, name: str) -> dict:
    """Everything the search chose, read back from its database."""
    db = Database(f"sqlite:///{tmp_path}/{name}.db", read_only=True)
    study = optuna.load_study(study_name="chooses", storage=db.url)
    data = load_study(db, "chooses")
    found = study_answer(data)
    frame = data.results.sort_values("trial")
    choices = {
        "asked": [(t.number, sorted(t.params.items())) for t in study.trials
                  if "arm" not in t.user_attrs],
        "pruned": sorted(frame[frame.state == "pruned"].trial),
        "stages": sorted(zip(frame.stage, frame.arm, frame.seed)),
        "leader": found.leader.arm.arm, "networks": best_network(data),
        "test": list(frame.test_acc), "objective": [t.values for t in study.trials],
    }
    db.close()
    return choices


def test_no_choice_reads_the_test_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same search with the test labels shuffled samples, prunes, confirms and names
    the same trials: nothing it chose read the test set."""
    (tmp_path / "chooses.toml").write_text(SEARCH)
    sweep = load_sweep(str(tmp_path / "chooses.toml"))
    for name in ("real", "shuffled"):
        if name == "shuffled":
            real = load_cached("fashion-mnist", None)
            labels = np.random.default_rng(1).permutation(real.test_labels)
            monkeypatch.setitem(datasets._loaded, ("fashion-mnist", None),
                                dataclasses.replace(real, test_labels=labels))
        plan = plan_sweep(sweep, Database(f"sqlite:///{tmp_path}/{name}.db"), study="chooses",
                          device="cpu")
        run_sweep(plan, jobs=1)
        plan.db.close()
    real, shuffled = _choices(tmp_path, "real"), _choices(tmp_path, "shuffled")
    assert len(real["asked"]) == 12 and real["pruned"], "the search must prune to prove it"
    assert {stage for stage, _, _ in real["stages"]} == {"control", "search", "confirm",
                                                         "matched"}
    for key in ("asked", "pruned", "stages", "leader", "networks", "objective"):
        assert real[key] == shuffled[key], key
    # ... while what the test set measures changed: the shuffle reached the trials
    assert np.nanmean(shuffled["test"]) < 0.2 < 0.6 < np.nanmean(real["test"])


def test_a_search_through_the_cli_records_validation_as_its_objective(tmp_path: Path) -> None:
    """Optuna's values and intermediate values are the validation accuracies, stored per
    epoch beside the test accuracies; nothing is pruned before its third epoch."""
    (tmp_path / "chooses.toml").write_text(SEARCH.replace("trials = 12", "trials = 8")
                                           .replace("confirm = 2", "confirm = 1"))
    done = lenet_lab("sweep", "chooses.toml", "--study", "chooses", "--jobs", "1", "-q",
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    url = f"sqlite:///{tmp_path}/studies.db"
    frame = results(tmp_path).set_index("trial")
    epochs = pd.read_sql("SELECT lt.number AS trial, e.* FROM lab_epochs e JOIN lab_trials lt "
                         "USING (trial_id)", url)
    assert epochs.valid_acc.notna().all()
    # the test set is measured once, after a trial's last epoch (nothing reads it before)
    last = epochs.groupby("trial").epoch.transform("max") == epochs.epoch
    ended = last & (epochs.epoch == epochs.epoch.max())  # trials that ran every epoch
    assert epochs.test_acc[ended].notna().all() and epochs.test_acc[~last].isna().all()
    assert (epochs.valid_acc[ended] != epochs.test_acc[ended]).any()
    study = optuna.load_study(study_name="chooses", storage=url)
    searched = [t for t in study.trials if "arm" not in t.user_attrs]
    assert len(searched) == 8
    for trial in study.trials:
        row = frame.loc[trial.number]
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert trial.values == [pytest.approx(row.valid_acc)]
        mine = epochs[epochs.trial == trial.number].set_index("epoch")
        for epoch, value in trial.intermediate_values.items():
            assert value == pytest.approx(mine.loc[epoch].valid_acc)
    pruned = frame[frame.state == "pruned"]
    assert (pruned.epochs_done >= 3).all()
    assert set(frame.validation) == {500} and set(frame.subset) == {3000}  # 3,000 keep 1/6 out
    settings = json.loads(pd.read_sql("SELECT settings FROM lab_studies", url).settings[0])
    assert settings["validation"] == 10_000 and settings["split_seed"] == 0
    assert "validation accuracy" in done.stdout or "paired by seed" in done.stdout
