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


@pytest.mark.slow  # the plan times this machine with a probe: a few seconds of training
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


def test_the_runner_plans_every_exercise_once_in_the_books_order(tmp_path: Path) -> None:
    """runner.plan, with the machine's rate given (no probe): every sweep that answers an
    exercise, in the book's order, planned and timed, nothing written."""
    from lenet_lab import runner
    from lenet_lab.store import Database
    from lenet_lab.sweep.estimate import Rate

    request = runner.Request("all", budget="quick", overrides={"engine": "torch"})
    with Database(f"sqlite:///{tmp_path}/studies.db") as db:
        planned = runner.plan(db, request, rate=Rate(30e9, "given"))
    assert [(s.sweep.exercise, s.sweep.name) for s in planned.steps] == [
        (s.exercise, s.name) for s in EXERCISES]
    assert [s.trials for s in planned.steps] == [
        s.with_budget("quick").expected_trials() for s in EXERCISES]
    assert all(s.seconds > 0 and s.done == 0 for s in planned.steps)
    assert planned.seconds == pytest.approx(sum(s.seconds for s in planned.steps) /
                                            planned.workers)
    assert not (tmp_path / "studies.db").exists()  # planning writes nothing


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


class Quiet:
    """A runner display that shows nothing."""

    def progress(self, *_) -> None:
        pass

    def answered(self, *_) -> None:
        pass


def _stand_in_book(tmp_path: Path, budget: str = "quick"):
    from lenet_lab import runner
    from lenet_lab.store import Database
    from lenet_lab.sweep.estimate import Rate

    db = Database(f"sqlite:///{tmp_path}/studies.db")
    request = runner.Request("all", budget=budget, overrides={"engine": "torch", "subset": 200},
                             jobs=1, device="cpu", out=str(tmp_path / "reports"))
    return db, request, runner.plan(db, request, rate=Rate(30e9, "given"))


def test_a_run_runs_the_sweep_files_it_planned(tmp_path: Path, stand_in,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep file added to ./sweeps while `sweep all` runs is not grafted onto the plan:
    every study records, and ran, the file it was planned from."""
    from lenet_lab import runner

    monkeypatch.chdir(tmp_path)
    db, request, planned_run = _stand_in_book(tmp_path)
    planned = {step.sweep.name: step.sweep.text for step in planned_run.steps}
    (tmp_path / "sweeps").mkdir()  # a user's mnist.toml, now: another dataset, another arm
    (tmp_path / "sweeps" / "mnist.toml").write_text(
        'title = "mine"\nexercise = 9\n[space]\npooling = ["avg", "max"]\n')
    stand_in()  # trains nothing, so there are no weights to draw: no maps and no report
    monkeypatch.setattr(runner, "exercise_page", lambda *_: None)
    monkeypatch.setattr(runner, "build_report", lambda *_, **__: None)
    runner.run(db, request, Quiet(), planned=planned_run)
    with db.transaction() as conn:
        recorded = dict(conn.exec_driver_sql("SELECT sweep, sweep_file FROM lab_studies").all())
    assert recorded == planned
    frame = results(tmp_path)
    assert set(frame[frame.sweep == "mnist"].dataset) == {"mnist"}
    assert set(frame[frame.sweep == "mnist"].arm) == {"book", "improved"}
    db.close()


def test_best_of_takes_a_study_of_the_same_budget_and_keeps_what_it_started_with(
        tmp_path: Path, stand_in) -> None:
    from lenet_lab.results import load_study
    from lenet_lab.sweep import plan_sweep, run_sweep
    from lenet_lab.sweep_file import load_sweep
    from tests.conftest import plan_for

    stand_in()
    quick = plan_for(tmp_path, "improve", epochs=1, seeds=2)  # a confirmed improve study
    quick = plan_sweep(quick.sweep.with_budget("quick").with_run(subset=200), quick.db,
                       device="cpu")
    run_sweep(quick)
    mnist = load_sweep("mnist").with_run(engine="torch", epochs=1, seeds=1, subset=200)
    full = plan_sweep(mnist, quick.db, device="cpu")  # the full budget: no such study
    assert full.arm_sources["improved"].startswith(
        "the fixed recipe in mnist.toml: this database holds no 'improve' study of the full "
        "budget on torch with --subset 200")
    assert "`lenet-lab sweep improve --engine torch --subset 200` makes one" in \
        full.arm_sources["improved"]
    taken = plan_sweep(mnist.with_budget("quick").with_run(epochs=1, subset=200), quick.db,
                       device="cpu")
    assert taken.arm_sources["improved"].startswith(
        f"the best configuration that study {quick.study_name!r} confirmed")
    run_sweep(taken)
    values = dict(next(a for a in taken.sweep.arms if a.name == "improved").values)
    # another improve study of the same budget, confirmed with a better network since:
    # the mnist study goes on with the network it started with
    other = plan_sweep(quick.sweep.with_run(sampler_seed=7), quick.db, study="improve-2",
                       device="cpu")
    run_sweep(other)
    again = plan_sweep(mnist.with_budget("quick").with_run(epochs=1, subset=200), quick.db,
                       device="cpu")
    assert dict(next(a for a in again.sweep.arms if a.name == "improved").values) == values
    assert again.arm_sources == taken.arm_sources
    run_sweep(again)  # continues without refusal
    assert len(load_study(quick.db, again.study_name).results) == 4  # 2 arms x 2 seeds, once
    quick.db.close()
