"""A sweep file run as an Optuna study: plan, queue, one trial, workers.

- plan: `SweepPlan` and `plan_sweep`, every check made before the database is touched;
- queue: creating the study, the arm x seed queue, the atomic claim, dead workers;
- trial: one trial in small steps (values -> spec -> train -> record);
- worker: the `Worker` loop and the pool of worker processes.

Running the same command again continues the study: finished arm x seed pairs are
skipped, and trials left RUNNING by a dead worker are marked failed and queued again.
"""

from __future__ import annotations

from lenet_lab.sweep.plan import SweepPlan, default_study_name, plan_sweep
from lenet_lab.sweep.worker import Worker, run_sweep, run_workers, stop_on_signals, summary, watch

__all__ = ["SweepPlan", "Worker", "default_study_name", "plan_sweep", "run_sweep", "run_workers",
           "stop_on_signals", "summary", "watch"]
