"""`lenet-lab sweep` and `sweeps`: run an exercise's sweep file (or all of them, `sweep
all`), list the sweep files."""

from __future__ import annotations

import contextlib
import sys
import textwrap
import time
from typing import Annotated, Any, Iterator, Literal, Optional

import typer
from rich.progress import BarColumn, TextColumn, TimeRemainingColumn

from lenet_lab.cli.app import app
from lenet_lab.cli.console import bar, err, out, print_table, trials_bar, visible
from lenet_lab.cli.options import UNTIL_DECIDED, DataDir, DeviceOpt, StorageOpt, Subset, opt
from lenet_lab.engines import ENGINES
from lenet_lab.errors import SweepError
from lenet_lab.launch import LAUNCHERS
from lenet_lab.sweep_file import BUDGETS, load_sweep, load_sweeps

ALL = "all"


@app.command()
def sweep(
    name: Annotated[str, typer.Argument(help="a sweep name (see `lenet-lab sweeps`), a .toml "
                                              "path, or all: every exercise in the book's order")],
    budget: Annotated[Literal[BUDGETS], typer.Option(  # type: ignore[valid-type]
        help=r"full: the file's \[run]; quick: its \[quick] table (a first look)")] = "full",
    plan_only: Annotated[bool, typer.Option("--plan", help="print each sweep's trials and "
                                                           "estimated time, then exit")] = False,
    engine: Annotated[Optional[Literal[ENGINES]], opt("override the file's engine")] = None,
    device: DeviceOpt = "auto",
    epochs: Annotated[Optional[int], opt("override the file's epochs", min=1)] = None,
    seeds: Annotated[Optional[int], opt("repeats of every arm", min=1)] = None,
    trials: Annotated[Optional[int], opt("a search's budget of trials", min=1)] = None,
    confirm: Annotated[Optional[int], opt("a search's best K configurations rerun with the "
                                          "seeds [default: 3; 0: off]", min=0)] = None,
    until_decided: Annotated[Optional[int], UNTIL_DECIDED] = None,
    margin: Annotated[Optional[float], opt("--until-decided: differences inside ±margin count "
                                           "as none [default: 0.005]")] = None,
    subset: Subset = None,
    storage: StorageOpt = None,
    study: Annotated[Optional[str], opt("study name [default: <sweep>-<engine>, plus -quick, "
                                        "-e<epochs> and -n<subset> when overridden]")] = None,
    jobs: Annotated[str, typer.Option(help="worker processes sharing the study: auto (one "
                                           "per core with one thread each, or one per GPU) "
                                           "or N")] = "auto",
    fuse: Annotated[str, typer.Option(help="train up to N queued trials of one network shape "
                                           "as one model (torch): auto (on GPUs), off or N")]
        = "auto",
    data_dir: DataDir = None,
    out_dir: Annotated[str, typer.Option("--out", help="sweep all: folder for the report")]
        = "reports",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress, only the summary")] = False,
    launch: Annotated[Optional[Literal[LAUNCHERS]], opt(  # type: ignore[valid-type]
        "submit the workers to a scheduler instead of running them here: slurm, or local "
        "(processes of this machine); needs PostgreSQL storage (docs/cluster.md)",
        rich_help_panel="Cluster")] = None,
    launched: Annotated[int, typer.Option("--workers", min=1,
                                          help="--launch: how many workers to submit",
                                          rich_help_panel="Cluster")] = 1,
    sbatch: Annotated[Optional[list[str]], opt(
        "--launch slurm: an sbatch option as KEY=VALUE, repeatable: partition=gpu, time=120 "
        "(minutes), gpus=1, cpus=8, account=lab, mem=16G, or any other sbatch option",
        rich_help_panel="Cluster")] = None,
) -> None:
    """Run a sweep file as an Optuna study in the database; rerun to continue it.

    `lenet-lab sweep all` runs every exercise's sweep in the book's order, then writes
    exercise 10's activation maps and the report. With --launch, the study is opened here
    and its workers are submitted to the scheduler; the command returns at once."""
    from lenet_lab.store import Database

    overrides = {"engine": engine, "epochs": epochs, "seeds": seeds, "trials": trials,
                 "subset": subset, "confirm": confirm, "until_decided": until_decided,
                 "margin": margin}
    command = " ".join(["lenet-lab", *sys.argv[1:]])
    options = {"device": device, "data_dir": data_dir, "command": command, "fuse": fuse}
    from lenet_lab.files import check_output_folder
    from lenet_lab.sweep import parse_jobs
    from lenet_lab.sweep.plan import check_fuse

    parse_jobs(jobs)  # options that need nothing loaded are checked before anything is
    check_fuse(fuse)
    if name == ALL:
        check_output_folder(out_dir)
        if launch:
            raise SweepError("--launch submits one sweep's workers: launch each sweep (see "
                             "`lenet-lab sweeps`), or run `sweep all` on one machine")
        if study is not None:
            raise SweepError("--study names one study: `sweep all` names each study after its "
                             "sweep (see --plan); drop --study")
        with Database(storage) as db:
            _run_all(db, budget, overrides, options, jobs=jobs, out_dir=out_dir,
                     plan_only=plan_only, quiet=quiet)
        return
    loaded = load_sweep(name).with_budget(budget).with_run(**overrides)
    with Database(storage) as db:
        if launch:  # refused before the database is touched
            from lenet_lab.launch import check_launch

            check_launch(launcher=launch, workers=launched, storage_url=db.url,
                         sbatch=sbatch or [])
        from lenet_lab.sweep import (plan_sweep, run_sweep, stop_on_signals, summary, watch,
                                     workers_for)

        plan = plan_sweep(loaded, db, study=study, **options,
                          name_overrides={"epochs": epochs, "subset": subset})
        workers = workers_for(jobs, plan)
        if plan_only or not quiet:
            out.print(f"{visible(loaded.title, newlines=False)}\nstudy {plan.study_name!r} in "
                      f"{db.safe}: {visible(plan.describe(workers))}")
        if plan_only:
            return
        if launch:
            from lenet_lab.launch import worker_argv

            argv = worker_argv(name, study=plan.study_name, budget=budget,
                               overrides=overrides, jobs=jobs, fuse=fuse, device=device,
                               data_dir=data_dir)
            return _launch(db, plan, launch=launch, workers=launched, sbatch=sbatch or [],
                           argv=argv)
        with _interrupted(db, f"study {plan.study_name!r}"), stop_on_signals(), \
                trials_bar(loaded.expected_trials()) as update, \
                watch(plan, update, enabled=not quiet and err.is_terminal):
            run_sweep(plan, jobs=workers, data_dir=data_dir, on_queue=lambda done, of: (
                update(None, f"queueing {done:,} of {of:,} trials")))
        *table, legend, answer, query = summary(plan)
    print_table(*table, left=("arm", "outcome", "other"))
    for line in legend:  # what each key stands for, wrapped under itself
        out.print(textwrap.fill(visible(line, newlines=False), width=out.width,
                                subsequent_indent=" " * 6, break_on_hyphens=False))
    out.print("\n" + "\n".join(visible(line, newlines=False) for line in answer))
    out.print(query)


def _launch(db, plan, *, launch: str, workers: int, sbatch: list[str],
            argv: list[str]) -> None:
    """Open the study here, submit its workers, say how to watch them, return."""
    from lenet_lab.launch import launch_workers
    from lenet_lab.sweep.queue import open_study

    open_study(plan)
    launched = launch_workers(launcher=launch, workers=workers, argv=argv, storage_url=db.url,
                              study=plan.study_name, sbatch=sbatch)
    out.print(f"submitted {len(launched.job_ids)} worker(s) to {launch}: job "
              f"{', '.join(launched.job_ids)} (files and logs in {launched.folder}/), each "
              f"running: lenet-lab sweep {' '.join(argv)}")
    out.print("watch them: lenet-lab studies (trials by state), lenet-lab dashboard (live), "
              "lenet-lab report when they are done"
              + ("; squeue --me (the queue)" if launch == "slurm" else ""))


@contextlib.contextmanager
def _interrupted(db, what: str) -> Iterator[None]:
    """Ctrl-C (or SIGTERM, see stop_on_signals): one line, exit 130, everything kept."""
    try:
        yield
    except KeyboardInterrupt:
        err.print(f"Interrupted: finished trials are kept in {db.safe}; run the same "
                  f"command again to continue {what}")
        raise typer.Exit(130) from None


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def _run_all(db, budget: str, overrides: dict[str, Any], options: dict[str, Any], *,
             jobs: str, out_dir: str, plan_only: bool, quiet: bool) -> None:
    from lenet_lab.exercises import answer_all
    from lenet_lab.results import load_study, study_answer
    from lenet_lab.store import FINISHED
    from lenet_lab.sweep import plan_book, stop_on_signals, watch

    steps, rate, jobs = plan_book(db, budget=budget, overrides=overrides, jobs=jobs, **options)
    total = sum(step.seconds for step in steps) / jobs
    if plan_only or not quiet:
        print_table(["ex", "sweep", "study", "trials", "done", "estimate"], [
            [str(s.sweep.exercise), s.sweep.name, s.plan.study_name, str(s.trials), str(s.done),
             _duration(s.seconds / jobs)] for s in steps], whole=("sweep", "study"),
            left=("sweep", "study"))
        out.print(f"total: {sum(s.trials for s in steps)} trials, about {_duration(total)} "
                  f"more with {jobs} worker(s) ({budget} budget; time from "
                  f"{rate.source}, {rate.gflops:.1f} GFLOP/s)")
    if plan_only:
        return
    progress = bar(BarColumn(bar_width=20), TextColumn("{task.fields[trials]} trials  ETA"),
                   TimeRemainingColumn(), TextColumn("{task.fields[detail]}", markup=False))
    expected = sum(s.trials for s in steps)
    task = progress.add_task("all", total=total or 1, detail="",
                             trials=f"{sum(s.done for s in steps)}/{expected}")
    finished = {s.plan.study_name: s.done for s in steps}  # trials with a result, by study
    answered: set[str] = set()

    def answer(step) -> None:
        if step.plan.study_name not in answered:
            answered.add(step.plan.study_name)
            line = study_answer(load_study(db, step.plan.study_name)).one_line()
            out.print(f"{step.sweep.exercise}. {step.sweep.name}: "
                      f"{visible(line, newlines=False)}")

    @contextlib.contextmanager
    def around(phase) -> Iterator[None]:
        by_study = {step.plan.study_name: step for step in phase}

        def update(done: int, detail: str) -> None:
            seconds = sum(s.seconds / jobs * min(1.0, (finished[s.plan.study_name] - s.done) /
                                                  max(s.trials - s.done, 1)) for s in steps)
            progress.update(task, completed=seconds, detail=detail,
                            trials=f"{sum(finished.values())}/{expected}")

        def study(plan, states: dict[str, int]) -> None:
            step = by_study[plan.study_name]
            finished[plan.study_name] = sum(n for state, n in states.items()
                                            if state in FINISHED)
            idle = not states.get("running") and not states.get("waiting")
            if idle and finished[plan.study_name] >= step.trials:
                answer(step)  # as each sweep ends

        with watch([step.plan for step in phase], update, on_study=study,
                   enabled=not quiet and err.is_terminal):
            yield
        for step in phase:
            answer(step)

    start = time.monotonic()
    with _interrupted(db, "every exercise"), stop_on_signals(), progress:
        index = answer_all(db, steps, jobs=jobs, data_dir=options["data_dir"], out=out_dir,
                           around=around)
    took = time.monotonic() - start
    out.print(f"wrote {index} (open it in a browser; the folder works offline)")
    if total >= 60:  # the plan against what it took, so its error is known
        out.print(f"took {_duration(took)}; the plan said about {_duration(total)} "
                  f"({100 * (took - total) / total:+.0f}%)")


@app.command("sweeps")
def sweeps_() -> None:
    """List the sweep files that ship with lenet-lab, with the exercise each answers."""
    found, broken = load_sweeps()
    print_table(["name", "exercise", "sampler", "trials", "title"],
                [[s.name, str(s.exercise or ""), s.run.sampler, str(s.expected_trials()), s.title]
                 for s in found], whole=("name",))
    for problem in broken:
        err.print(f"skipped {visible(problem, newlines=False)}")
