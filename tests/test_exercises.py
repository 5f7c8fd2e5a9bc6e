"""`lenet-lab sweep all`: every exercise in the book's order, planned and timed first, then
exercise 10's maps and the report; the same command again continues and trains nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lenet_lab.sweep_file import load_sweeps
from tests.conftest import lenet_lab, results

EXERCISES = [s for s in load_sweeps()[0] if s.exercise]  # the book's order: 1, 2, ..., 9
# 600 images (500 after validation): enough for a search's confirmed arm to learn in one epoch,
# so that exercise 9 takes what exercise 2 found
TINY = ["--subset", "600", "--epochs", "1", "--seeds", "2", "--trials", "3", "--confirm", "1",
        "--engine", "torch"]


def test_the_plan_lists_every_exercise_with_its_trials_and_time(tmp_path: Path) -> None:
    done = lenet_lab("sweep", "all", "--plan", "--budget", "quick", "--engine", "torch",
                     cwd=tmp_path, COLUMNS="80")
    assert done.returncode == 0, done.stderr
    rows = re.findall(r"^\s+(\d)\s+(\S+)\s+(\S+)\s+(\d+)\s+0\s+(\d+ (?:h \d+ )?min)\s*$",
                      done.stdout, re.M)
    assert [(int(n), sweep) for n, sweep, *_ in rows] == [(s.exercise, s.name) for s in EXERCISES]
    quick = {s.name: s.with_budget("quick") for s in EXERCISES}
    assert {sweep: int(trials) for _, sweep, _, trials, _ in rows} == {
        name: s.expected_trials() for name, s in quick.items()}
    assert all(study.endswith("-quick") for _, _, study, *_ in rows)
    total = re.search(r"total: (\d+) trials, about (\d+) (?:h (\d+) )?min more with (\d) worker",
                      done.stdout)
    assert total and int(total[1]) == sum(s.expected_trials() for s in quick.values())
    assert "a probe of this machine: the book's network at" in done.stdout
    assert not (tmp_path / "studies.db").exists()  # --plan writes nothing


def test_sweep_all_refuses_a_study_name(tmp_path: Path) -> None:
    done = lenet_lab("sweep", "all", "--study", "mine", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("Error: --study names one study")
    assert not (tmp_path / "studies.db").exists()


@pytest.mark.slow
def test_sweep_all_answers_every_exercise_and_a_rerun_trains_nothing(tmp_path: Path) -> None:
    done = lenet_lab("sweep", "all", *TINY, "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    frame = results(tmp_path)
    assert sorted(frame.sweep.unique()) == sorted(s.name for s in EXERCISES)
    for sweep in EXERCISES:  # each exercise's line, in the book's order
        assert re.search(rf"^{sweep.exercise}\. {sweep.name}: ", done.stdout, re.M), sweep.name
    index = (tmp_path / "reports" / "index.html").read_text()
    assert "not run yet" not in index
    maps = (tmp_path / "reports" / "activations.html").read_text()
    assert "book: the book&#39;s network" in maps and "the best other arm" in maps
    assert 'href="activations.html"' in index
    mnist = frame[(frame.sweep == "mnist") & (frame.arm == "improved")]
    confirmed = frame[(frame.sweep == "improve") & (frame.stage == "confirm")]
    assert set(mnist.lr) <= set(confirmed.lr)  # exercise 9 ran exercise 2's best
    again = lenet_lab("sweep", "all", *TINY, "-q", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    after = results(tmp_path)
    assert len(after) == len(frame) and after.started_at.tolist() == frame.started_at.tolist()


def test_a_larger_network_is_planned_at_the_higher_rate_it_reaches() -> None:
    from lenet_lab.spec import LeNetSpec, TrainConfig
    from lenet_lab.sweep.estimate import SIZE_EXPONENT, Rate, trial_seconds

    rate, sizes = Rate(30e9, "given"), (50_000, 10_000, 10_000)
    book, wide = LeNetSpec(), LeNetSpec(conv_channels=(24, 64))
    assert rate.at(book.train_flops_per_example) == pytest.approx(30e9)
    costs = wide.train_flops_per_example / book.train_flops_per_example  # about 11 times
    took = trial_seconds(wide, TrainConfig(), sizes, rate) / trial_seconds(book, TrainConfig(),
                                                                           sizes, rate)
    assert 1 < took < costs and took == pytest.approx(costs ** (1 - SIZE_EXPONENT), rel=0.05)
