"""A worker: the loop that claims and runs trials, of one plan or several (earlier plans
first, never idle while any has work); watching studies' progress; a sweep's summary."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import optuna

from lenet_lab import store
from lenet_lab.data import Dataset
from lenet_lab.engines import Device
from lenet_lab.results import arm_keys, load_study, study_answer
from lenet_lab.results.arms import SUMMARY_HEADER, arm_legend, summary_rows
from lenet_lab.status import Status
from lenet_lab.store import Database
from lenet_lab.sweep import queue
from lenet_lab.data import load_cached
from lenet_lab.sweep.plan import SweepPlan
from lenet_lab.sweep.trial import fuse_key_of, run_group

__all__ = ["IDLE_POLL_S", "Worker", "next_trials", "summary", "watch", "work"]

# A worker with nothing queued checks whether others finished or died: soon at first (the
# last trials often end together), then less and less often, up to every 2 s.
IDLE_POLL_S = (0.2, 2.0)


class Worker:
    """Holds the plan (and through it the database), the study, the device and the data."""

    def __init__(self, plan: SweepPlan, *, index: int = 0, data_dir: str | None = None) -> None:
        self.plan, self.data_dir = plan, data_dir
        self.study = optuna.load_study(
            study_name=plan.study_name, storage=plan.db.optuna(on_stale=queue.on_stale(plan.db)),
            sampler=plan.sampler(), pruner=plan.pruner())
        self.device = plan.device
        if plan.device.kind == "gpu" and plan.gpu_count > 1:
            self.device = Device("gpu", index % plan.gpu_count)  # spread workers over GPUs
        self.datasets: dict[str, Dataset] = {}

    def dataset(self, name: str) -> Dataset:
        """The study's data: its subset, with its validation split held out."""
        if name not in self.datasets:
            data = load_cached(name, self.data_dir)
            run = self.plan.sweep.run
            data = data.subset(run.subset) if run.subset else data
            self.datasets[name] = data.hold_out(run.held_out(len(load_cached(
                name, self.data_dir).train_labels)))
        return self.datasets[name]

    def tell(self, trial, status: Status, values: list[float] | None = None) -> None:
        # skip_if_finished: a tell retried after a lost acknowledgement is not an error.
        self.study.tell(trial, values, skip_if_finished=True,
                        state=None if values else queue.OPTUNA_STATE[status])

    def take(self, *, reconcile: bool = False) -> list:
        """Queued trials (a fused group, or one), else a new one from a search's sampler,
        else []. With `reconcile`, first fail the trials of dead workers and queue what
        is missing (their arm x seed again, a search's confirmation once it is due)."""
        plan = self.plan
        if reconcile:
            queue.reconcile(plan, self.study)
        key = (lambda t: fuse_key_of(plan, t)) if plan.fuse > 1 else None
        return queue.claim(plan, self.study, key) or queue.ask(plan, self.study)

    def busy(self) -> bool:
        """Whether trials of this study are running (here or in other workers)."""
        return bool(store.running_workers(self.plan.db, self.plan.study_name))

    def next_trials(self) -> list:
        """The next trials to run (take), waiting while others still run; [] when all
        is done."""
        return next_trials([self])[1]

    def run(self) -> int:
        """Run trials until the queue (and a search's budget) is exhausted; returns how many."""
        return work([self])


def next_trials(workers: list[Worker]) -> tuple[Worker | None, list]:
    """The first worker (its plan: earlier sweeps first) with trials to run, and those
    trials; when none has any, each plan is reconciled (another worker may have died
    mid-trial, or a search's confirmation is due), and while trials of any plan still run
    elsewhere this waits; (None, []) when all is done."""
    pause = IDLE_POLL_S[0]
    while True:
        for reconcile in (False, True):
            for worker in workers:
                if trials := worker.take(reconcile=reconcile):
                    return worker, trials
        if not any(worker.busy() for worker in workers):
            return None, []
        time.sleep(pause)
        pause = min(2 * pause, IDLE_POLL_S[1])


def work(workers: list[Worker]) -> int:
    """Run the trials of several plans until every one is done, never idle while any has
    work: a worker whose sweep has nothing left to start helps with the next one instead
    of waiting for the last trials of its own. Returns how many trials it ran."""
    count = 0
    while True:
        worker, trials = next_trials(workers)
        if worker is None:
            return count
        run_group(worker, trials)
        count += len(trials)


@contextmanager
def watch(plans: SweepPlan | list[SweepPlan], on_update: Callable[[int, str], None], *,
          on_study: Callable[[SweepPlan, dict[str, int]], None] | None = None) -> Iterator[None]:
    """Poll the studies once a second from a thread: `on_update(finished trials of all,
    detail)`, the detail naming each running trial's arm and epoch (with its sweep when
    there are several); `on_study(plan, states)` after each poll, for each study.

    Works for any number of workers and machines, since it reads the database.
    """
    plans = plans if isinstance(plans, list) else [plans]
    stop = threading.Event()

    def running(plan: SweepPlan, now: dict[str, Any]) -> list[str]:
        epochs = "" if "epochs" in plan.sweep.space else f"/{plan.sweep.control()['epochs']}"
        keys = arm_keys(now["arms"])  # the report's keys: book, A1, ...
        where = f"{plan.sweep.name} " if len(plans) > 1 else ""
        return [f"{where}{keys.get(arm, '#' + str(n))} epoch {e + 1}{epochs}"
                for n, arm, e in now["running"]]

    def poll() -> None:
        db = None
        while not stop.wait(1.0):
            try:  # connect anew until the database has its tables: a reader opened
                # before the file existed would read an empty one for ever
                db = db or Database(plans[0].db.where, read_only=True)
                found = [(plan, store.progress(db, plan.study_name)) for plan in plans]
            except Exception:  # tables not created yet, or a busy database: try again
                if db is not None:
                    db.close()
                db = None
                continue
            for plan, now in found if on_study else ():
                on_study(plan, now["states"])
            done = sum(n for _, now in found for state, n in now["states"].items()
                       if state not in (Status.RUNNING, Status.WAITING))
            detail = ", ".join(text for plan, now in found for text in running(plan, now))
            best = found[0][1]["best"] if len(found) == 1 else None
            on_update(done, f"{detail}  {f'best trial {best:.3f}' if best else ''}".strip())
        if db is not None:
            db.close()

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def summary(plan: SweepPlan) -> tuple[list[str], list[list[str]], str, list[str], list[str],
                                      str]:
    """The end-of-sweep table (header, rows, title), what each arm's key stands for, the
    answer's lines (the report's headline and each arm's verdict, from the same code) and
    how to query the results: a line of Python to paste, whatever the study's name."""
    found = study_answer(load_study(plan.db, plan.study_name))
    literal = "'" + plan.study_name.replace("'", "''") + "'"  # SQL's own quoting
    query = (f"query: pandas.read_sql({'SELECT * FROM lab_results WHERE study = ' + literal!r}, "
             f"{plan.db.safe!r})")
    return (SUMMARY_HEADER, summary_rows(found.arms),
            f"{plan.study_name}: test accuracy after the last epoch", arm_legend(found.arms),
            [found.headline, *(f"- {line}" for line in found.verdicts)], query)
