"""Harness cost of a sweep: time per trial outside training, and time to the first trial.

    python benchmarks/overhead.py [--trials 20] [--subset 200] [--engine torch] [--jobs 1]

Runs the real command, `lenet-lab sweep pooling --seeds N/2 --subset S --epochs 1`, in a
fresh process on a fresh SQLite file in a temporary folder, and reads Optuna's trial
timestamps from it:

- start-up: from launching the command to the first trial's start;
- per trial: (last trial's end - first trial's start - training) / trials, where
  training is the same networks trained one after another with `lenet_lab.train` in a
  fresh process, as the sweep's worker does (building on the device, epochs and
  evaluation count as training, and so does the framework's one-time start in the first
  trial, which is printed apart).

Prints one line per figure and `--json` prints them as JSON. The same script measured
the code before and after the architecture change (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa


def run_sweep(folder: Path, *, seeds: int, subset: int, engine: str, jobs: int) -> float:
    """Launch the command; returns the launch time as naive UTC seconds since the epoch."""
    command = [sys.executable, "-m", "lenet_lab", "sweep", "pooling", "--engine", engine,
               "--seeds", str(seeds), "--subset", str(subset), "--epochs", "1",
               "--jobs", str(jobs), "-q"]
    launched = time.time()
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        sys.exit(f"the sweep failed:\n{done.stderr}")
    return launched


def trial_times(url: str) -> tuple[float, float, int]:
    """(first start, last end, completed trials), as UTC seconds since the epoch."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        first, last, count = conn.execute(sa.text(
            "SELECT min(datetime_start), max(datetime_complete), count(*) FROM trials "
            "WHERE state = 'COMPLETE'")).one()
    engine.dispose()

    def seconds(value) -> float:
        stamp = value if isinstance(value, datetime) else datetime.fromisoformat(value)
        return stamp.replace(tzinfo=timezone.utc).timestamp()

    return seconds(first), seconds(last), count


TRAIN_COLD = """
import sys, time
from lenet_lab.data import load_dataset
from lenet_lab.spec import LeNetSpec, TrainConfig
from lenet_lab.train import train
seeds, subset, engine = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
from lenet_lab.engines import get_engine
data = load_dataset("fashion-mnist").subset(subset)
get_engine(engine)  # the framework is imported before the first trial, as in a sweep
start = time.perf_counter()
for pooling in ("avg", "max"):
    for seed in range(seeds):
        train(LeNetSpec(pooling=pooling), TrainConfig(epochs=1, seed=seed), engine=engine,
              data=data, keep_weights=True)
        if pooling == "avg" and seed == 0:
            first = time.perf_counter() - start
print(time.perf_counter() - start, first)
"""


def training_seconds(*, seeds: int, subset: int, engine: str) -> tuple[float, float]:
    """(all, first) seconds of the sweep's networks trained one after another in a fresh
    process, as the sweep's worker trains them: the first pays the framework's one-time
    start (torch builds its first optimizer through torch._dynamo, about 1 s)."""
    done = subprocess.run([sys.executable, "-c", TRAIN_COLD, str(seeds), str(subset), engine],
                          capture_output=True, text=True, check=True, timeout=1800)
    total, first = map(float, done.stdout.split())
    return total, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="an even number: 2 arms x seeds")
    parser.add_argument("--subset", type=int, default=200)
    parser.add_argument("--engine", default="torch")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    seeds = max(1, args.trials // 2)
    with tempfile.TemporaryDirectory() as folder:
        launched = run_sweep(Path(folder), seeds=seeds, subset=args.subset, engine=args.engine,
                             jobs=args.jobs)
        first, last, count = trial_times(f"sqlite:///{folder}/studies.db")
    training, first_training = training_seconds(seeds=seeds, subset=args.subset, engine=args.engine)
    figures = {
        "trials": count,
        "startup_s": round(first - launched, 3),
        "span_s": round(last - first, 3),
        "training_s": round(training, 3),
        "first_training_s": round(first_training, 3),
        "per_trial_outside_training_ms": round(1000 * (last - first - training) / count, 1),
        "python": sys.version.split()[0],
        "cpus": len(os.sched_getaffinity(0)),
    }
    if args.json:
        print(json.dumps(figures))
        return
    print(f"{count} trials ({args.engine}, --subset {args.subset}, 1 epoch, SQLite, "
          f"{args.jobs} worker(s)) on {figures['cpus']} CPU(s)")
    print(f"command to first trial: {figures['startup_s']:.2f} s")
    print(f"first start to last end: {figures['span_s']:.2f} s, of which training "
          f"{figures['training_s']:.2f} s (the first trial {figures['first_training_s']:.2f} s)")
    print(f"per trial outside training: {figures['per_trial_outside_training_ms']:.0f} ms")


if __name__ == "__main__":
    main()
