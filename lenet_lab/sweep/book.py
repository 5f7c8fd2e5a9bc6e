"""`lenet-lab sweep all`: every exercise sweep of the book, in the book's order, planned
and timed before anything trains.

Every sweep runs at once but exercise 9 (mnist), which comes after all of them, so that
its improved arm is the network that exercise 2 confirmed: it is planned anew just before
it runs, so it sees what exercise 2 found. The same overrides apply to every sweep, where they
mean something: `--trials` and `--confirm` to searches, `--epochs` to sweeps that do not
vary epochs themselves. Running the same command again continues every study.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from typing import Any, Callable, ContextManager

from lenet_lab import store
from lenet_lab.engines import use_threads
from lenet_lab.errors import SweepError
from lenet_lab.store import Database
from lenet_lab.sweep.estimate import Rate, database_rate, probe_rate, sweep_seconds
from lenet_lab.sweep.plan import SweepPlan, load_cached, plan_sweep
from lenet_lab.sweep.pool import WorkerPool, run_sweeps, workers_for
from lenet_lab.sweep_file import Sweep, load_sweeps

__all__ = ["Step", "book_sweeps", "plan_book", "run_book"]

@dataclass(frozen=True)
class Step:
    """One exercise's sweep: its plan, how much is done, how long the rest should take."""

    plan: SweepPlan
    trials: int  # expected
    done: int  # finished in the database already
    seconds: float  # estimated for the trials not yet done
    options: dict[str, Any]  # plan_sweep's keyword arguments, to plan it again at its turn
    overrides: dict[str, Any]  # the command line's, as they apply to this sweep
    source: Sweep  # as read at the start, before best_of: what it is planned again from

    @property
    def sweep(self) -> Sweep:
        return self.plan.sweep

    @property
    def waits_for(self) -> list[str]:
        """The sweeps whose best network this one takes (best_of)."""
        return [arm.best_of for arm in self.sweep.arms if arm.best_of]


def _applicable(sweep: Sweep, overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides that mean something for this sweep (see the module's docstring)."""
    search = sweep.run.sampler != "grid"
    drop = {"trials", "confirm"} if not search else set()
    if "epochs" in sweep.space:
        drop.add("epochs")
    if search and not (overrides.get("confirm") if overrides.get("confirm") is not None
                       else sweep.run.confirmations):
        drop.add("seeds")
    return {k: v for k, v in overrides.items() if k not in drop and v is not None}


def book_sweeps(*, budget: str = "full", overrides: dict[str, Any] | None = None
                ) -> list[tuple[Sweep, dict[str, Any]]]:
    """Every sweep that answers an exercise, in the book's order, with the budget and the
    overrides that apply to it."""
    found, broken = load_sweeps()
    if broken:
        raise SweepError(broken[0])
    chosen = []
    for sweep in (s for s in found if s.exercise):
        applied = _applicable(sweep, overrides or {})
        chosen.append((sweep.with_budget(budget).with_run(**applied), applied))
    return chosen


def _done(db: Database, studies: list[str]) -> dict[str, int]:
    return {name: store.finished_trials(db, name) for name in studies}


def plan_book(db: Database, *, budget: str = "full", overrides: dict[str, Any] | None = None,
              jobs: str | int = "auto", device: str = "auto", data_dir: str | None = None,
              command: str = "", fuse: str | int = "auto",
              rate: Rate | None = None) -> tuple[list[Step], Rate, int]:
    """Each exercise's sweep planned (every check made, nothing written) and timed for
    `jobs` workers (sweep.workers_for); returns the steps, the rate of one worker and
    how many workers there are."""
    options = {"device": device, "data_dir": data_dir, "command": command, "fuse": fuse}
    planned = []
    for sweep, applied in book_sweeps(budget=budget, overrides=overrides):
        names = {"epochs": applied.get("epochs"), "subset": applied.get("subset")}
        planned.append((plan_sweep(sweep, db, name_overrides=names, **options), applied,
                        sweep))
    first = planned[0][0]
    workers = workers_for(jobs, first)
    with use_threads(max(1, len(os.sched_getaffinity(0)) // workers)):
        rate = rate or database_rate(db, first.sweep.run.engine, first.device_name) or \
            probe_rate(first.sweep.run.engine, str(first.device),
                       load_cached("fashion-mnist", data_dir))
    done = _done(db, [plan.study_name for plan, *_ in planned])
    steps = [Step(plan, plan.sweep.expected_trials(), done[plan.study_name],
                  sweep_seconds(plan.sweep, rate, done=done[plan.study_name]),
                  {**options, "name_overrides": {"epochs": applied.get("epochs"),
                                                 "subset": applied.get("subset")}}, applied,
                  source)
             for plan, applied, source in planned]
    return steps, rate, workers


def run_book(db: Database, steps: list[Step], *, jobs: int = 1, data_dir: str | None = None,
             around: Callable[[list[Step]], ContextManager[Any]] | None = None) -> list[Step]:
    """Run every step's sweep with one pool of workers, which start once and only for
    work worth their start-up, in two phases: first every step that takes no other's
    result, all at once (sweep.run_sweeps: earlier exercises first, and no worker waits
    for the last trials of one sweep while another has work); then the steps that take
    another's best network (best_of), planned again at their turn so they see it.
    `around(steps)` wraps each phase, as a progress display does. Returns the steps as
    they ran, in the book's order."""
    ran = []
    with WorkerPool(jobs, data_dir=data_dir) as pool:
        for phase in ([s for s in steps if not s.waits_for], [s for s in steps if s.waits_for]):
            phase = [_planned_again(db, step) if step.waits_for else step for step in phase]
            if not phase:
                continue
            with around(phase) if around else contextlib.nullcontext():
                run_sweeps([step.plan for step in phase], jobs=jobs, data_dir=data_dir,
                           pool=pool, work_s=sum(step.seconds for step in phase))
            ran += phase
    return sorted(ran, key=lambda step: step.sweep.exercise or 99)


def _planned_again(db: Database, step: Step) -> Step:
    """The step planned again from the sweep as it was read at the start (never the file
    again: a file changed or added since is not grafted onto the run)."""
    return replace(step, plan=plan_sweep(step.source, db, **step.options))
