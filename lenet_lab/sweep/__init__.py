"""A sweep file run as an Optuna study: plan, queue, one trial, workers, and estimates.

- plan: `SweepPlan` and `plan_sweep`, every check made before the database is touched;
- queue: creating the study, the arm x seed queue, the atomic claim, dead workers;
- trial: one trial in small steps (values -> spec -> train -> record);
- worker: the `Worker` loop over the trials of one plan or several, watching progress;
- pool: the worker processes, how many, and the signals that stop them;
- estimate: how long a sweep will take on this machine.

What runs when (one sweep, or the book's ten) is lenet_lab.runner's; this package runs
what it is given. Running the same command again continues the study: finished arm x
seed pairs are skipped, and trials left RUNNING by a dead worker are failed and queued
again.
"""

from __future__ import annotations

from lenet_lab.sweep.plan import SweepPlan, default_study_name, plan_sweep
from lenet_lab.sweep.pool import (WorkerPool, check_jobs, parse_jobs, run_sweep, run_sweeps,
                                  run_workers, stop_on_signals, workers_for)
from lenet_lab.sweep.worker import Worker, summary, watch

__all__ = ["SweepPlan", "Worker", "WorkerPool", "check_jobs", "default_study_name",
           "parse_jobs", "plan_sweep", "run_sweep", "run_sweeps", "run_workers",
           "stop_on_signals", "summary", "watch", "workers_for"]
