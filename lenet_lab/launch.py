"""Workers launched on a cluster scheduler: `lenet-lab sweep NAME --launch slurm --workers N`.

The study is opened here first (its settings checked, its queue filled), then N jobs are
submitted through submitit (the library Hydra's Slurm launcher uses; `--launch local`
runs them as processes of this machine, through submitit's local executor). Each job runs
the same command a user would type on a worker machine, `lenet-lab sweep NAME ...` with
the same options (worker_argv), and joins the study as one more worker: it claims queued
trials until none is left. Never a scheduler of our own: submitting, queueing, timeouts and
accounting are Slurm's.

The storage URL reaches the jobs through their environment ($LENET_LAB_STORAGE; sbatch
exports the submitting shell's), never through their command line or the job files that
submitit pickles, which other users of a shared machine may read. SQLite is refused: a
file cannot be shared safely by processes on several machines.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lenet_lab.errors import LabError, SweepError

__all__ = ["LAUNCHERS", "Launched", "check_launch", "launch_workers", "parse_sbatch",
           "worker_argv"]

LAUNCHERS = ("slurm", "local")
JOBS_FOLDER = "lenet-lab-jobs"  # submitit's job files and logs, under the working folder
MAX_WORKERS = 1000
# sbatch options by their usual names -> submitit's parameters; any other KEY=VALUE passes
# through to sbatch as --KEY=VALUE (slurm_additional_parameters)
SBATCH = {"partition": "slurm_partition", "time": "timeout_min", "gpus": "gpus_per_node",
          "cpus": "cpus_per_task", "account": "slurm_account", "mem": "slurm_mem",
          "qos": "slurm_qos", "constraint": "slurm_constraint"}


@dataclass(frozen=True)
class Launched:
    launcher: str
    study: str
    job_ids: list[str]
    folder: Path  # submitit's job files and logs


def parse_sbatch(items: list[str]) -> dict[str, Any]:
    """`--sbatch KEY=VALUE` items -> submitit parameters (see SBATCH)."""
    found: dict[str, Any] = {}
    extra: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key or not value.strip():
            raise SweepError(f"--sbatch takes KEY=VALUE, such as partition=gpu or time=120 "
                             f"(minutes), not {item!r}")
        value = value.strip()
        if key in ("time", "gpus", "cpus"):
            if not (value.isascii() and value.isdigit()):
                raise SweepError(f"--sbatch {key}={value}: give a whole number"
                                 + (" of minutes" if key == "time" else ""))
            found[SBATCH[key]] = int(value)
        elif key in SBATCH:
            found[SBATCH[key]] = value
        else:
            extra[key] = value
    if extra:
        found["slurm_additional_parameters"] = extra
    return found


def worker_argv(sweep: str, *, study: str, budget: str = "full",
                overrides: dict[str, Any] | None = None, jobs: str = "auto",
                fuse: str = "auto", device: str = "auto",
                data_dir: str | None = None) -> list[str]:
    """`lenet-lab sweep ...` as every launched worker runs it: the sweep, its budget and
    overrides, the study by name (so that every worker joins the same one), and no
    storage (it is in the environment)."""
    argv = [sweep, "--study", study, "--budget", budget]
    for key, value in sorted((overrides or {}).items()):
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    argv += ["--jobs", str(jobs), "--fuse", str(fuse), "--device", device]
    return argv + (["--data-dir", str(data_dir)] if data_dir else []) + ["-q"]


def check_launch(*, launcher: str, workers: int, storage_url: str, sbatch: list[str]) -> None:
    """Everything about a launch that can be refused before the study is opened."""
    if launcher not in LAUNCHERS:
        raise SweepError(f"--launch takes {' or '.join(LAUNCHERS)}, not {launcher!r}")
    if not 1 <= workers <= MAX_WORKERS:
        raise SweepError(f"--workers takes 1 to {MAX_WORKERS} launched workers, not {workers}")
    if not storage_url.startswith("postgresql"):
        raise SweepError("launched workers share a study through PostgreSQL, not a SQLite "
                         "file (which processes on several machines cannot share safely): set "
                         "LENET_LAB_STORAGE=postgresql+psycopg://USER@HOST/DB (docs/cluster.md)")
    if launcher == "local" and sbatch:
        raise SweepError("--sbatch options are for --launch slurm")
    parse_sbatch(sbatch)
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise LabError('--launch needs submitit, which is not installed: '
                       'pip install "lenet-lab[cluster]"') from None


def launch_workers(*, launcher: str, workers: int, argv: list[str], storage_url: str,
                   study: str, sbatch: list[str], folder: str | Path = ".") -> Launched:
    """Submit `workers` jobs that each run `lenet-lab sweep <argv>` (worker_argv); returns
    at once with their ids. The study must have been opened (its queue filled) already."""
    check_launch(launcher=launcher, workers=workers, storage_url=storage_url, sbatch=sbatch)
    import submitit

    jobs_folder = Path(folder) / JOBS_FOLDER
    executor = submitit.AutoExecutor(folder=jobs_folder / "%j", cluster=launcher)
    executor.update_parameters(name=f"lenet-lab-{study}"[:64], **parse_sbatch(sbatch))
    # each job runs the command itself, in the Python that submitted it
    command = submitit.helpers.CommandFunction([sys.executable, "-m", "lenet_lab", "sweep",
                                                *argv])
    previous = os.environ.get("LENET_LAB_STORAGE")
    os.environ["LENET_LAB_STORAGE"] = storage_url  # the jobs' environment, never their files
    try:
        with executor.batch():
            jobs = [executor.submit(command) for _ in range(workers)]
    finally:
        if previous is None:
            os.environ.pop("LENET_LAB_STORAGE", None)
        else:
            os.environ["LENET_LAB_STORAGE"] = previous
    return Launched(launcher, study, [str(job.job_id) for job in jobs], jobs_folder)
