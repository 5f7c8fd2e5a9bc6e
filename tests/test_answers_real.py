"""Answers from real small runs: at chance, diverged, a confirmed search, seeds until decided.

Each runs the real command on Fashion-MNIST subsets (torch, CPU) into a real SQLite file
and reads the answer that `lenet-lab sweep` prints, which the report shows too.
"""

from __future__ import annotations

import html
from dataclasses import replace
from pathlib import Path

import pytest

from lenet_lab.results import Decision, load_study, study_answer
from lenet_lab.store import Database
from tests.conftest import QUICK, lenet_lab, results

pytestmark = pytest.mark.slow

# ReLU and Adam learn within one epoch of a subset; the book's sigmoid at lr 0.9 does not.
LEARNS = '[fixed]\nactivation = "relu"\noptimizer = "adam"\nlr = 0.002\nbatch_size = 32\n'


def test_a_study_at_chance_says_so_in_the_sweep_and_the_report(tmp_path: Path) -> None:
    done = lenet_lab("sweep", "pooling", *QUICK, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    headline = next(line for line in done.stdout.splitlines() if line.startswith("Nothing"))
    assert headline.startswith("Nothing learned with this much training. The book's network did not "
                               "learn: it stays at chance in every seed (test accuracy 0.100) "
                               "after 1 epoch of 417 examples (83 more held out for validation)")
    assert headline.endswith("Trained: 1 epoch of 417 examples (83 more held out for validation), "
                             "2 seeds per arm, torch on cpu.")
    assert "noise" not in done.stdout and "-0.000" not in done.stdout
    report = lenet_lab("report", "--no-activations", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    page = html.unescape((tmp_path / "reports/study-pooling-torch-e1-n500.html").read_text())
    assert headline in page  # the page and the sweep give one answer, from one code path
    assert ("the book's network did not learn: it stays at chance in every seed (test accuracy "
            "0.100) (1 epoch of 417 examples (83 more held out for validation), 2 seeds per arm, "
            "torch on cpu)"
            in html.unescape((tmp_path / "reports/index.html").read_text()))


def test_a_diverging_arm_gets_the_diverged_answer(tmp_path: Path) -> None:
    (tmp_path / "blowup.toml").write_text('title = "a learning rate that blows up"\n'
                                          '[[arms]]\nlr = 1e9\n' + LEARNS)
    done = lenet_lab("sweep", "blowup.toml", *QUICK, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "- A1 (lr=1e+09) diverged in every seed: its training loss blew up (NaN, or over twice a uniform guess's)" in done.stdout
    # [fixed] made the control ReLU with Adam: the answer names it as it is
    assert ("No other arm learned with this much training; the book's network with activation=relu, "
            "batch_size=32, lr=0.002, optimizer=adam: 0.") in done.stdout
    assert "1 arm did not learn with this much training" in done.stdout
    assert set(results(tmp_path).groupby("arm").state.first()) == {"complete", "diverged"}


def test_a_search_ends_with_its_best_configurations_confirmed(tmp_path: Path) -> None:
    (tmp_path / "search.toml").write_text(
        'title = "a small search"\n[run]\nsampler = "tpe"\ntrials = 6\nprune = true\n'
        '[space]\npooling = ["avg", "max"]\nkernel_size = [3, 5]\n'
        'dropout = { low = 0.0, high = 0.5 }\n' + LEARNS)
    done = lenet_lab("sweep", "search.toml", "--trials", "6", "--confirm", "2", "--seeds", "2",
                     "--subset", "500", "--epochs", "2", "--engine", "torch", "-q",
                     "--jobs", "1", cwd=tmp_path)  # one worker: its draws, reproducibly
    assert done.returncode == 0, done.stderr
    frame = results(tmp_path)
    assert frame.stage.value_counts().to_dict() == {"control": 2, "search": 6, "confirm": 4}
    searched = frame[(frame.stage == "search") & (frame.state == "complete")]
    best_two = searched.sort_values(["test_acc", "trial"], ascending=[False, True]).arm
    confirm = frame[frame.stage == "confirm"]
    assert list(dict.fromkeys(best_two))[:2] == list(dict.fromkeys(confirm.arm))
    assert confirm.groupby("arm").seed.apply(sorted).tolist() == [[1, 2], [1, 2]]
    assert (confirm.state == "complete").all()  # confirmations are never pruned
    assert "Best of 6 configurations searched, confirmed with 2 seeds each" in done.stdout
    import optuna

    study = optuna.load_study(study_name="search-torch-e2-n500",
                              storage=f"sqlite:///{tmp_path}/studies.db")
    assert all(set(t.params) == {"pooling", "kernel_size", "dropout"} for t in study.trials)


def test_until_decided_stops_by_the_rule_and_says_why(tmp_path: Path) -> None:
    pooling = Path(__file__).parent.parent / "sweeps" / "pooling.toml"
    (tmp_path / "pooling.toml").write_text(pooling.read_text() + LEARNS)
    done = lenet_lab("sweep", "pooling.toml", "--subset", "1000", "--epochs", "1", "--seeds",
                     "2", "--engine", "torch", "--until-decided", "6", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    frame = results(tmp_path)
    seeds = frame.groupby("arm").seed.max() + 1
    assert seeds.min() == seeds.max() <= 6, seeds  # the two arms grew together
    n = int(seeds.max())
    with Database(f"sqlite:///{tmp_path}/studies.db", read_only=True) as db:
        data = load_study(db, "pooling-torch-e1-n1000")

    def decision(upto: int) -> Decision:
        rows = data.results[data.results.seed < upto]
        return study_answer(replace(data, results=rows)).leader.decision

    if n < 6:  # stopped by the rule: decided now, undecided one look earlier
        assert decision(n).decided and (n == 2 or not decision(n - 1).decided)
        assert f"Until decided: stopped at {n} seeds because" in done.stdout
    else:
        assert "Until decided: reached the maximum of 6 seeds" in done.stdout \
            or "stopped at 6 seeds because" in done.stdout
    assert data.attrs["until_decided"] == {"max_seeds": 6, "start_seeds": 2, "margin": 0.005}


def test_exercise_9_runs_what_exercise_2_confirmed(tmp_path: Path) -> None:
    quick = ["--subset", "300", "--epochs", "1", "--seeds", "2", "--engine", "torch", "-q"]
    alone = lenet_lab("sweep", "mnist", *quick, "--study", "alone", cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    assert "improved is the fixed recipe in mnist.toml: this database holds no 'improve' study " \
           "of the full budget on torch with --subset 300 whose confirmed best learned " \
           "(`lenet-lab sweep improve --engine torch --subset 300` makes one)" \
        in " ".join(alone.stdout.split())
    (tmp_path / "sweeps").mkdir()  # ./sweeps/improve.toml comes before the bundled one
    (tmp_path / "sweeps/improve.toml").write_text(
        'title = "a small improve"\n[run]\nsampler = "random"\ntrials = 3\n[space]\n'
        'pooling = ["avg", "max"]\nkernel_size = [3, 5]\n' + LEARNS)
    search = lenet_lab("sweep", "improve", *quick, "--trials", "3", "--confirm", "1",
                       cwd=tmp_path)
    assert search.returncode == 0, search.stderr
    after = lenet_lab("sweep", "mnist", *quick, "--study", "after", cwd=tmp_path)
    assert after.returncode == 0, after.stderr
    assert "improved is the best configuration that study 'improve-torch-e1-n300' confirmed (" \
        in after.stdout
    frame = results(tmp_path)
    confirmed = frame[frame.stage == "confirm"].iloc[0]
    improved = frame[(frame.study == "after") & (frame.arm == "improved")].iloc[0]
    fields = ["conv_channels", "kernel_size", "pooling", "activation", "dense_units",
              "batch_norm", "dropout", "lr", "optimizer", "batch_size"]
    assert improved[fields].tolist() == confirmed[fields].tolist()
    assert improved.dataset == "mnist" and confirmed.dataset == "fashion-mnist"
