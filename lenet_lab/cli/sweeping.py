"""`lenet-lab sweep` and `sweeps`: run an exercise's sweep file (or all of them, `sweep
all`), list the sweep files."""

from __future__ import annotations

import contextlib
import sys
import textwrap
import time
from typing import Annotated, Any, Iterator, Literal, Optional

import typer
from rich.progress import BarColumn, TextColumn

from lenet_lab.cli.app import app
from lenet_lab.cli.console import bar, err, interrupted, out, print_table, visible
from lenet_lab.cli.options import UNTIL_DECIDED, DataDir, DeviceOpt, StorageOpt, Subset, opt
from lenet_lab.engines import ENGINES
from lenet_lab.launch import LAUNCHERS
from lenet_lab.sweep_file import BUDGETS, load_sweeps

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
    trials: Annotated[Optional[int], opt("how many trials a search runs", min=1)] = None,
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
    launched: Annotated[Optional[int], typer.Option(
        "--workers", min=1, help="--launch: how many workers to submit [default: 1]",
        rich_help_panel="Cluster", show_default=False)] = None,
    sbatch: Annotated[Optional[list[str]], opt(
        "--launch slurm: an sbatch option as KEY=VALUE, repeatable: partition=gpu, time=120 "
        "(minutes), gpus=1, cpus=8, account=lab, mem=16G, or any other sbatch option",
        rich_help_panel="Cluster")] = None,
) -> None:
    """Run a sweep file as an Optuna study in the database; rerun to continue it.

    `lenet-lab sweep all` runs every exercise's sweep in the book's order, then writes
    exercise 10's activation maps and the report. With --launch, the study is opened here
    and its workers are submitted to the scheduler; the command returns at once."""
    from lenet_lab import runner
    from lenet_lab.errors import SweepError
    from lenet_lab.store import Database

    if not launch and (launched is not None or sbatch):
        given, launcher = ("--workers", "slurm (or local)") if launched is not None else \
            ("--sbatch", "slurm")
        raise SweepError(f"{given} is for --launch: add --launch {launcher}, or leave it out to "
                         f"run the sweep here (--jobs sets how many workers)")
    request = runner.Request(
        sweep=name, budget=budget, study=study, jobs=jobs, fuse=fuse, device=device,
        data_dir=data_dir, out=out_dir, command=" ".join(["lenet-lab", *sys.argv[1:]]),
        overrides={"engine": engine, "epochs": epochs, "seeds": seeds, "trials": trials,
                   "subset": subset, "confirm": confirm, "until_decided": until_decided,
                   "margin": margin})
    with Database(storage) as db:
        if launch:
            return _launch(db, request, launch=launch, workers=launched or 1,
                           sbatch=sbatch or [])
        planned = runner.plan(db, request)
        if plan_only or not quiet:
            _show_plan(db, request, planned)
        if plan_only:
            return
        display = _TerminalDisplay(planned, every=request.every_exercise,
                                   enabled=not quiet and err.is_terminal)
        what = "every exercise" if request.every_exercise else \
            f"study {planned.steps[0].plan.study_name!r}"
        with _interrupted(db, what), display:
            outcome = runner.run(db, request, display, planned=planned)
    if request.every_exercise:
        out.print(f"wrote {outcome.index} (open it in a browser; the folder works offline)")
        if planned.seconds >= 60:  # the plan against what it took, so its error is known
            out.print(f"took {_duration(outcome.seconds)}; the plan said about "
                      f"{_duration(planned.seconds)} "
                      f"({100 * (outcome.seconds - planned.seconds) / planned.seconds:+.0f}%)")
        return
    *table, legend, answer, query = outcome.summary
    print_table(*table, left=("arm", "outcome", "other"))
    for line in legend:  # what each key stands for, wrapped under itself
        out.print(textwrap.fill(visible(line, newlines=False), width=out.width,
                                subsequent_indent=" " * 6, break_on_hyphens=False))
    out.print("\n" + "\n".join(visible(line, newlines=False) for line in answer))
    out.print(query)


def _show_plan(db, request, planned) -> None:
    """What will run: one sweep's study and trials, or every exercise's, with estimates."""
    if not request.every_exercise:
        step = planned.steps[0]
        out.print(f"{visible(step.sweep.title, newlines=False)}\nstudy "
                  f"{step.plan.study_name!r} in {db.safe}: "
                  f"{visible(step.plan.describe(planned.workers))}")
        return
    steps, jobs = planned.steps, planned.workers
    print_table(["ex", "sweep", "study", "trials", "done", "estimate"], [
        [str(s.sweep.exercise), s.sweep.name, s.plan.study_name, str(s.trials), str(s.done),
         _duration(s.seconds / jobs)] for s in steps], whole=("sweep", "study"),
        left=("sweep", "study"))
    out.print(f"total: {sum(s.trials for s in steps)} trials, about "
              f"{_duration(planned.seconds)} more with {jobs} worker(s) ({request.budget} "
              f"budget; time from {planned.rate.source}, {planned.rate.gflops:.1f} GFLOP/s)")


class _TerminalDisplay:
    """A run as the terminal shows it (runner.Display): one progress bar (trials done of
    all, the ETA the runner computes, each running trial's arm and epoch), and for `sweep
    all` each exercise's answer line as its sweep ends."""

    def __init__(self, planned, *, every: bool, enabled: bool) -> None:
        self.every = every
        self.bar = bar(BarColumn(bar_width=20), TextColumn("{task.fields[trials]} trials"),
                       TextColumn("ETA {task.fields[eta]}"),
                       TextColumn("{task.fields[detail]}", markup=False))
        self.bar.disable = not enabled
        self.task = self.bar.add_task("run", total=sum(s.trials for s in planned.steps) or 1,
                                      trials="", eta="-:--:--", detail="")

    def __enter__(self) -> _TerminalDisplay:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def progress(self, done: int, total: int, eta_s: float | None, detail: str) -> None:
        eta = "-:--:--" if eta_s is None else time.strftime("%H:%M:%S", time.gmtime(eta_s))
        self.bar.update(self.task, completed=done, total=total or 1, trials=f"{done}/{total}",
                        eta=eta, detail=visible(detail, newlines=False))

    def answered(self, step, line: str) -> None:
        out.print(f"{step.sweep.exercise}. {step.sweep.name}: {visible(line, newlines=False)}")


def _launch(db, request, *, launch: str, workers: int, sbatch: list[str]) -> None:
    """Open the study here, submit its workers, say how to watch them, return."""
    from lenet_lab import runner

    planned, launched, argv = runner.launch(db, request, launcher=launch, workers=workers,
                                            sbatch=sbatch)
    step = planned.steps[0]
    out.print(f"{visible(step.sweep.title, newlines=False)}\nstudy {step.plan.study_name!r} "
              f"in {db.safe}")
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
        interrupted(f"Interrupted: finished trials are kept in {db.safe}; run the same "
                    f"command again to continue {what}")
        raise typer.Exit(130) from None


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


@app.command("sweeps")
def sweeps_() -> None:
    """List the sweep files that ship with lenet-lab, with the exercise each answers."""
    found, broken = load_sweeps()
    print_table(["name", "exercise", "sampler", "trials", "title"],
                [[s.name, str(s.exercise or ""), s.run.sampler, str(s.expected_trials()), s.title]
                 for s in found], whole=("name",))
    for problem in broken:
        err.print(f"skipped {visible(problem, newlines=False)}")
