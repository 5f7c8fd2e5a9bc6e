"""Running sweeps: one sweep, or all ten exercises, planned once, step by step, reporting
to a display. The one driver of every way a sweep runs: `lenet-lab sweep` (cli.sweeping),
`lenet_lab.run_sweep` (api) and `sweep all` build a Request and choose a Display; nothing
else plans or runs a sweep (tests/test_architecture.py).

`sweep all` is the book's exercises in its order: every sweep that takes no other's
result runs at once (earlier exercises first, and no worker waits for the last trials of
one sweep while another has work), then exercise 9 (mnist), whose improved arm is the
network exercise 2 confirmed, planned at its turn from the sweep file read at the start;
then exercise 10's activation maps and the report. The same overrides apply to every
sweep where they mean something: `--trials` and `--confirm` to searches, `--epochs` to
sweeps that do not vary epochs themselves. Running the same request again continues
every study.

Progress has one owner: the runner polls the studies (sweep.watch), computes trials done
and the ETA from each step's estimate, and tells the display; displays only draw.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from lenet_lab import store
from lenet_lab.data import load_cached
from lenet_lab.engines import use_threads
from lenet_lab.errors import SweepError
from lenet_lab.files import check_output_folder, output_folder
from lenet_lab.report import build_report
from lenet_lab.report.activations import exercise_page
from lenet_lab.results import load_study, study_answer
from lenet_lab.store import Database
from lenet_lab.launch import Launched, check_launch, launch_workers, worker_argv
from lenet_lab.sweep import (WorkerPool, parse_jobs, plan_sweep, run_sweeps, stop_on_signals,
                             summary, watch, workers_for)
from lenet_lab.sweep.queue import open_study
from lenet_lab.sweep.estimate import (Rate, database_rate, probe_rate, rough_seconds,
                                      sweep_seconds)
from lenet_lab.sweep.plan import SweepPlan, check_fuse
from lenet_lab.sweep_file import Sweep, load_sweep, load_sweeps

__all__ = ["ALL", "BEST_NETWORK_EXERCISE", "Display", "Outcome", "Plan", "Request", "Step",
           "launch", "plan", "run"]

ALL = "all"
BEST_NETWORK_EXERCISE = 2  # "a better network": its best is exercise 10's second network


@dataclass(frozen=True)
class Request:
    """What to run: a sweep (a name, a .toml path, or `all`), its budget, the command
    line's overrides of its [run] (None: the file's), and how."""

    sweep: str
    budget: str = "full"
    overrides: dict[str, Any] = field(default_factory=dict)  # engine, epochs, seeds, ...
    study: str | None = None  # one sweep's study name (default: <sweep>-<engine>...)
    jobs: str | int = "auto"
    fuse: str | int = "auto"
    device: str = "auto"
    data_dir: str | None = None
    out: str = "reports"  # `all`: the report's folder
    command: str = ""  # as recorded with each study

    @property
    def every_exercise(self) -> bool:
        return self.sweep == ALL


@dataclass(frozen=True)
class Step:
    """One sweep of a run: its plan, how much is done, how long the rest should take."""

    plan: SweepPlan
    trials: int  # expected
    done: int  # finished in the database already
    seconds: float  # estimated for the trials not yet done, on one worker
    source: Sweep  # as read at the start, before best_of: what it is planned again from
    options: dict[str, Any]  # plan_sweep's keyword arguments, to plan it again at its turn

    @property
    def sweep(self) -> Sweep:
        return self.plan.sweep

    @property
    def waits_for(self) -> list[str]:
        """The sweeps whose best network this one takes (best_of)."""
        return [arm.best_of for arm in self.sweep.arms if arm.best_of]


@dataclass(frozen=True)
class Plan:
    steps: list[Step]
    workers: int
    rate: Rate | None  # how the estimates were made (`all`); None for one sweep

    @property
    def seconds(self) -> float:
        """The estimated wall time with every worker."""
        return sum(step.seconds for step in self.steps) / self.workers


@dataclass
class Outcome:
    plan: Plan
    seconds: float = 0.0  # what it took
    index: Path | None = None  # `all`: the report's index
    summary: Any = None  # one sweep: sweep.summary's table, legend, answer and query


class Display(Protocol):
    """What the runner tells whoever shows a run (the CLI's terminal, a notebook)."""

    def progress(self, done: int, total: int, eta_s: float | None, detail: str) -> None:
        """Trials with a result of all expected, the seconds left, the running trials."""

    def answered(self, step: Step, line: str) -> None:
        """A sweep of `all` has ended: its answer in one line."""


def _applicable(sweep: Sweep, overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides of `all` that mean something for this sweep (see the docstring)."""
    search = sweep.run.sampler != "grid"
    drop = {"trials", "confirm"} if not search else set()
    if "epochs" in sweep.space:
        drop.add("epochs")
    if search and not (overrides.get("confirm") if overrides.get("confirm") is not None
                       else sweep.run.confirmations):
        drop.add("seeds")
    return {k: v for k, v in overrides.items() if k not in drop and v is not None}


def _sweeps(request: Request) -> list[tuple[Sweep, dict[str, Any]]]:
    """The request's sweeps, each read once, with its budget and the overrides that
    apply to it: every exercise's in the book's order, or the one named."""
    if not request.every_exercise:
        applied = {k: v for k, v in request.overrides.items() if v is not None}
        return [(load_sweep(request.sweep).with_budget(request.budget).with_run(**applied),
                 applied)]
    found, broken = load_sweeps()
    if broken:
        raise SweepError(broken[0])
    chosen = []
    for sweep in (s for s in found if s.exercise):
        applied = _applicable(sweep, request.overrides)
        chosen.append((sweep.with_budget(request.budget).with_run(**applied), applied))
    return chosen


def plan(db: Database, request: Request, *, rate: Rate | None = None) -> Plan:
    """Every check that can be made before anything is written, each sweep planned and
    timed: `all` by a probe of this machine (or the database's trials, or `rate`), one
    sweep roughly (sweep.estimate.rough_seconds)."""
    parse_jobs(request.jobs)  # what needs nothing loaded is checked before anything is
    check_fuse(request.fuse)
    if request.every_exercise:
        if request.study is not None:
            raise SweepError("--study names one study: `sweep all` names each study after its "
                             "sweep (see --plan); drop --study")
        check_output_folder(request.out)
    options = {"device": request.device, "data_dir": request.data_dir,
               "command": request.command, "fuse": request.fuse}
    planned = []
    for sweep, applied in _sweeps(request):
        names = {"epochs": applied.get("epochs"), "subset": applied.get("subset")}
        each = {**options, "name_overrides": names, "study": request.study}
        planned.append((plan_sweep(sweep, db, **each), sweep, each))
    workers = workers_for(request.jobs, planned[0][0])
    if request.every_exercise:
        first = planned[0][0]
        with use_threads(max(1, len(os.sched_getaffinity(0)) // workers)):
            rate = rate or database_rate(db, first.sweep.run.engine, first.device_name) or \
                probe_rate(first.sweep.run.engine, str(first.device),
                           load_cached("fashion-mnist", request.data_dir))
    steps = []
    for sweep_plan, source, each in planned:
        done = store.finished_trials(db, sweep_plan.study_name)
        seconds = sweep_seconds(sweep_plan.sweep, rate, done=done) if rate else rough_seconds(
            sweep_plan.sweep, db, device_name=sweep_plan.device_name, done=done)
        steps.append(Step(sweep_plan, sweep_plan.sweep.expected_trials(), done, seconds,
                          source, each))
    return Plan(steps, workers, rate)


def run(db: Database, request: Request, display: Display, *,
        planned: Plan | None = None) -> Outcome:
    """Run the request (planned first, unless `planned` is given) with one pool of
    workers, which start once and only for work worth their start-up: every step that
    takes no other's result at once, then the steps that take another's best network
    (best_of), planned again at their turn from the sweep read at the start, so they see
    it (a file changed or added since is never grafted on). `all` then writes exercise
    10's maps and the report."""
    planned = planned or plan(db, request)
    outcome, start = Outcome(planned), time.monotonic()
    progress = _Progress(db, planned, display)

    def queueing(done: int, of: int) -> None:
        display.progress(0, progress.total, None, f"queueing {done:,} of {of:,} trials")

    with stop_on_signals(), WorkerPool(planned.workers, data_dir=request.data_dir) as pool:
        for phase in ([s for s in planned.steps if not s.waits_for],
                      [s for s in planned.steps if s.waits_for]):
            if request.every_exercise:
                phase = [_planned_again(db, s) if s.waits_for else s for s in phase]
            if not phase:
                continue
            with watch([step.plan for step in phase], progress.update, on_study=progress.study):
                run_sweeps([step.plan for step in phase], jobs=planned.workers,
                           data_dir=request.data_dir, pool=pool, on_queue=queueing,
                           work_s=sum(step.seconds for step in phase))
            if request.every_exercise:
                for step in phase:
                    progress.answer(step)
    if request.every_exercise:
        folder = output_folder(request.out, create=True)
        best = next((s for s in planned.steps if s.sweep.exercise == BEST_NETWORK_EXERCISE),
                    None)
        if best is not None:
            exercise_page(db, best.plan.study_name, folder, request.data_dir)
        outcome.index = build_report(db, out=folder, data_dir=request.data_dir)
    else:
        outcome.summary = summary(planned.steps[0].plan)
    outcome.seconds = time.monotonic() - start
    return outcome


def _planned_again(db: Database, step: Step) -> Step:
    return replace(step, plan=plan_sweep(step.source, db, **step.options))


def launch(db: Database, request: Request, *, launcher: str, workers: int,
           sbatch: list[str]) -> tuple[Plan, Launched, list[str]]:
    """One sweep's study opened here, its workers submitted to a scheduler (launch.py):
    (the plan, what was launched, the command every worker runs)."""
    if request.every_exercise:
        raise SweepError("--launch submits one sweep's workers: launch each sweep (see "
                         "`lenet-lab sweeps`), or run `sweep all` on one machine")
    check_launch(launcher=launcher, workers=workers, storage_url=db.url, sbatch=sbatch)
    planned = plan(db, request)
    sweep_plan = planned.steps[0].plan
    argv = worker_argv(request.sweep, study=sweep_plan.study_name, budget=request.budget,
                       overrides=request.overrides, jobs=str(request.jobs),
                       fuse=str(request.fuse), device=request.device,
                       data_dir=request.data_dir)
    open_study(sweep_plan)
    launched = launch_workers(launcher=launcher, workers=workers, argv=argv,
                              storage_url=db.url, study=sweep_plan.study_name, sbatch=sbatch)
    return planned, launched, argv


class _Progress:
    """The one account of a run's progress: trials with a result by study (from the
    watch's polls), the time left, each sweep's answer once it ends. The time left is the
    plan's estimate of the work not yet done, scaled by how the work done so far compared
    with its estimate (so a machine slower than its probe is caught up with)."""

    def __init__(self, db: Database, planned: Plan, display: Display) -> None:
        self.db, self.planned, self.display = db, planned, display
        self.finished = {s.plan.study_name: s.done for s in planned.steps}
        self.total = sum(s.trials for s in planned.steps)
        self.answered: set[str] = set()
        self.start = time.monotonic()

    def eta(self) -> float | None:
        estimated = left = 0.0
        for s in self.planned.steps:
            share = min(1.0, (self.finished[s.plan.study_name] - s.done) /
                        max(s.trials - s.done, 1))
            estimated += s.seconds * share
            left += s.seconds * (1 - share)
        elapsed = time.monotonic() - self.start
        if not math.isfinite(left):
            return None
        if estimated <= 0:
            return left / self.planned.workers
        return left * elapsed / estimated

    def update(self, _done: int, detail: str) -> None:
        self.display.progress(sum(self.finished.values()), self.total, self.eta(), detail)

    def study(self, sweep_plan: SweepPlan, states: dict[str, int]) -> None:
        name = sweep_plan.study_name
        self.finished[name] = sum(n for state, n in states.items() if state in store.FINISHED)
        step = next(s for s in self.planned.steps if s.plan.study_name == name)
        idle = not states.get("running") and not states.get("waiting")
        if len(self.planned.steps) > 1 and idle and self.finished[name] >= step.trials:
            self.answer(step)  # as each sweep of `all` ends

    def answer(self, step: Step) -> None:
        if step.plan.study_name not in self.answered:
            self.answered.add(step.plan.study_name)
            self.display.answered(step, study_answer(load_study(
                self.db, step.plan.study_name)).one_line())
