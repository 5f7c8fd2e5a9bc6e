"""`lenet-lab sweep` and `sweeps`: run an exercise's sweep file, list the sweep files."""

from __future__ import annotations

import sys
import textwrap
from typing import Annotated, Literal, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

from lenet_lab.cli.app import app
from lenet_lab.cli.console import bar, err, out, print_table
from lenet_lab.cli.options import UNTIL_DECIDED, DataDir, DeviceOpt, StorageOpt, Subset, opt
from lenet_lab.engines import ENGINES
from lenet_lab.sweep_file import load_sweep, load_sweeps


@app.command()
def sweep(
    name: Annotated[str, typer.Argument(help="a sweep name (see `lenet-lab sweeps`) or a .toml path")],
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
    study: Annotated[Optional[str], opt("study name [default: <sweep>-<engine>, plus "
                                        "-e<epochs> and -n<subset> when overridden]")] = None,
    jobs: Annotated[int, typer.Option(min=1, help="worker processes sharing the study")] = 1,
    fuse: Annotated[str, typer.Option(help="train up to N queued trials of one network shape "
                                           "as one model (torch): auto (on GPUs), off or N")]
        = "auto",
    data_dir: DataDir = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress, only the summary")] = False,
) -> None:
    """Run a sweep file as an Optuna study in the database; rerun to continue it."""
    from lenet_lab.store import Database
    from lenet_lab.sweep import plan_sweep, run_sweep, stop_on_signals, summary, watch

    loaded = load_sweep(name).with_run(engine=engine, epochs=epochs, seeds=seeds, trials=trials,
                                       subset=subset, confirm=confirm,
                                       until_decided=until_decided, margin=margin)
    with Database(storage) as db:
        plan = plan_sweep(loaded, db, study=study, device=device, data_dir=data_dir,
                          command=" ".join(["lenet-lab", *sys.argv[1:]]),
                          name_overrides={"epochs": epochs, "subset": subset}, fuse=fuse)
        if not quiet:
            out.print(f"{loaded.title}\nstudy {plan.study_name!r} in {db.safe}: "
                      f"{plan.describe(jobs)}")
        progress = bar(BarColumn(bar_width=20), MofNCompleteColumn(), TextColumn("ETA"),
                       TimeRemainingColumn(), TextColumn("{task.fields[detail]}"))
        task = progress.add_task(plan.study_name, total=loaded.expected_trials(), detail="")
        try:  # SIGTERM as Ctrl-C: the running trials are recorded as interrupted
            with stop_on_signals(), progress, watch(plan, lambda done, detail: progress.update(
                    task, completed=done, detail=detail), enabled=not quiet and err.is_terminal):
                run_sweep(plan, jobs=jobs, data_dir=data_dir)
        except KeyboardInterrupt:
            err.print(f"Interrupted: finished trials are kept in {db.safe}; run the same "
                      f"command again to continue study {plan.study_name!r}")
            raise typer.Exit(130) from None
        *table, legend, headline, query = summary(plan)
    print_table(*table, left=("arm", "outcome", "other"))
    for line in legend:  # what each key stands for, wrapped under itself
        out.print(textwrap.fill(line, width=out.width, subsequent_indent=" " * 6,
                                break_on_hyphens=False))
    out.print(f"\n{headline}\n{query}")


@app.command("sweeps")
def sweeps_() -> None:
    """List the sweep files that ship with lenet-lab, with the exercise each answers."""
    found, broken = load_sweeps()
    print_table(["name", "exercise", "sampler", "trials", "title"],
                [[s.name, str(s.exercise or ""), s.run.sampler, str(s.expected_trials()), s.title]
                 for s in found], whole=("name",))
    for problem in broken:
        err.print(f"skipped {problem}")
