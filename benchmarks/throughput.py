"""Sweep throughput, this working tree against another revision: trials finished per hour.

    python benchmarks/throughput.py [--base 33d1504] [--engine torch] [--rounds 3]
                                    [--sweep "kernel --subset 10000 --epochs 2 --seeds 2"]

Runs the real command, `lenet-lab <sweep> --engine E -q` with each revision's own
defaults (its --jobs among them), in a fresh folder on a fresh SQLite file, alternating
the two revisions round by round so that a busy machine slows both alike. The base
revision is checked out with `git worktree` into a temporary folder and run from there
(PYTHONPATH); both read the datasets from $LENET_LAB_DATA and use the user's cache
folder, warmed by one unmeasured run of each first (skip it with --no-warmup). Prints each run and the medians, and with
--json the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]


def run(source: Path, sweep: str, engine: str, cache: Path) -> tuple[float, int]:
    """(wall seconds, trials finished) of one sweep command run from `source`."""
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "PYTHONPATH": str(source), "XDG_CACHE_HOME": str(cache)}
        command = [sys.executable, "-m", "lenet_lab", "sweep", *shlex.split(sweep),
                   "--engine", engine, "-q"]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"{source}: the sweep failed:\n{done.stderr}")
        db = sa.create_engine(f"sqlite:///{folder}/studies.db")
        with db.connect() as conn:
            trials = conn.execute(sa.text(
                "SELECT count(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED', 'FAIL')")).scalar()
        db.dispose()
    return wall, trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="33d1504", help="the revision to compare with")
    parser.add_argument("--engine", default="torch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sweep", default="kernel --subset 10000 --epochs 2 --seeds 2")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="skip the unmeasured first run of each (caches already warm)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base),
                        args.base], check=True, capture_output=True)
        try:
            sources = {args.base: base, "working tree": ROOT}
            cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
            for source in sources.values() if args.warmup else ():  # caches filled
                run(source, args.sweep, args.engine, cache)
            timings: dict[str, list[float]] = {name: [] for name in sources}
            for round_ in range(args.rounds):
                for name, source in sources.items():
                    wall, trials = run(source, args.sweep, args.engine, cache)
                    timings[name].append(trials / wall * 3600)
                    if not args.json:
                        print(f"round {round_}: {name}: {trials} trials in {wall:.1f} s, "
                              f"{trials / wall * 3600:,.0f} trials/hour", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                           capture_output=True)
    medians = {name: statistics.median(values) for name, values in timings.items()}
    ratio = medians["working tree"] / medians[args.base]
    figures = {"sweep": args.sweep, "engine": args.engine, "rounds": args.rounds,
               "trials_per_hour": timings, "medians": medians, "ratio": ratio,
               "cpus": len(os.sched_getaffinity(0))}
    if args.json:
        print(json.dumps(figures))
        return
    print(f"`lenet-lab sweep {args.sweep} --engine {args.engine}`, median of {args.rounds}: "
          f"{medians[args.base]:,.0f} trials/hour at {args.base}, "
          f"{medians['working tree']:,.0f} in the working tree: {ratio:.2f}x")


if __name__ == "__main__":
    main()
