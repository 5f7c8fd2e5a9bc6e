"""A sweep file run as an Optuna study: plan, queue, one trial, workers; and every
exercise's sweep in the book's order (book), timed before it runs (estimate).

- plan: `SweepPlan` and `plan_sweep`, every check made before the database is touched;
- queue: creating the study, the arm x seed queue, the atomic claim, dead workers;
- trial: one trial in small steps (values -> spec -> train -> record);
- worker: the `Worker` loop and the pool of worker processes;
- book and estimate: `lenet-lab sweep all`, its plan and its time.

Running the same command again continues the study: finished arm x seed pairs are
skipped, and trials left RUNNING by a dead worker are marked failed and queued again.
"""

from __future__ import annotations

from lenet_lab.sweep.book import Step, plan_book, run_book
from lenet_lab.sweep.plan import SweepPlan, default_study_name, plan_sweep
from lenet_lab.sweep.pool import (WorkerPool, check_jobs, parse_jobs, run_sweep, run_sweeps,
                                  run_workers, stop_on_signals, workers_for)
from lenet_lab.sweep.worker import Worker, summary, watch

__all__ = ["Step", "SweepPlan", "Worker", "check_jobs", "default_study_name", "parse_jobs",
           "plan_book",
           "plan_sweep", "run_book", "run_sweep", "run_sweeps", "run_workers", "stop_on_signals",
           "summary", "watch", "WorkerPool", "workers_for"]
