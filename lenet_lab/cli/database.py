"""`lenet-lab studies`, `export`, `rerun`, `copy` and `dashboard`: what a database holds,
checking it, and taking it elsewhere."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

import typer

from lenet_lab.cli.app import app
from lenet_lab.cli.console import err, out, print_table
from lenet_lab.cli.options import DataDir, StorageOpt, opt
from lenet_lab.spec import MAX_SEED

# Each command imports the library it calls when it runs: `lenet-lab --help` and a
# mistyped option answer without loading sqlalchemy, pandas or optuna.


@app.command()
def studies(storage: StorageOpt = None) -> None:
    """List the studies in a database: sweep, engine, trials by state (a dead worker's
    trial as failed), and the best one trial's validation accuracy."""
    from lenet_lab.results import study_list
    from lenet_lab.store import Database

    with Database(storage, read_only=True) as db:
        if not (rows := study_list(db)):
            return out.print(f"no studies in {db.safe}")
    print_table(["study", "sweep", "engine", "trials", "best trial"], [
        [row["study"], row["sweep"] or "-", row["engine"] or "-",
         ", ".join(f"{n} {state}" for state, n in sorted(row["states"].items())) or "-",
         "-" if row["best_trial_acc"] is None else f"{row['best_trial_acc']:.4f}"]
        for row in rows], whole=("study", "sweep"))


@app.command()
def export(
    study: Annotated[str, typer.Argument(help="the study to export (see `lenet-lab studies`)")],
    format: Annotated[Literal["csv", "parquet"], typer.Option("--format", help="file format")] = "csv",
    out_dir: Annotated[str, typer.Option("--out", help="folder to write into")] = ".",
    storage: StorageOpt = None,
) -> None:
    """Write a study's lab_results rows to <out>/<study>.csv (or .parquet); a trial whose
    worker died reads as failed, as in the report."""
    from lenet_lab.results import load_study
    from lenet_lab.store import Database, export_study, known_studies

    with Database(storage, read_only=True) as db:
        known_studies(db, [study])
        path, rows = export_study(db, study, out_dir, format,
                                  rows=load_study(db, study).results)
    out.print(f"{rows} rows -> {path}")


@app.command()
def rerun(
    study: Annotated[str, typer.Argument(help="the study (see `lenet-lab studies`)")],
    trial: Annotated[Optional[int], typer.Argument(
        help="the trial's number (`lenet-lab export STUDY` lists them); or --arm and --seed",
        show_default=False, min=0, max=2**31 - 1)] = None,
    arm: Annotated[Optional[str], opt("the trial's arm, as lab_results.arm has it")] = None,
    seed: Annotated[Optional[int], opt("the trial's seed, with --arm", min=0, max=MAX_SEED)] = None,
    storage: StorageOpt = None,
    data_dir: DataDir = None,
) -> None:
    """Retrain a recorded trial from its record and compare every number, epoch by epoch.

    Equal to the last digit on the same engine version, CPU model and thread count; within
    a stated tolerance elsewhere (it names what differs). Exits 1 on a mismatch."""
    from lenet_lab.rerun import find_trial, rerun_trial
    from lenet_lab.store import Database

    with Database(storage, read_only=True) as db:
        number = find_trial(db, study, trial=trial, arm=arm, seed=seed)
        out.print(f"rerunning trial {number} of {study!r} from its record ...")
        found = rerun_trial(db, study, number, data_dir=data_dir)
    out.print(f"arm {found.arm}, seed {found.seed}: " + (
        "the same setting as recorded, so every number must be equal" if found.exact else
        "differences from the recording: " + "; ".join(found.differences)))
    for lack in found.missing:
        out.print(f"not recorded: {lack}")
    print_table(["epoch", "metric", "recorded", "rerun", ""], [
        [str(row["epoch"]), row["metric"], f"{row['recorded']:.6g}", f"{row['new']:.6g}",
         "=" if row["match"] else "DIFFERS"] for row in found.rows], left=("metric", ""))
    out.print(found.verdict())
    if not found.matches:
        raise typer.Exit(1)


@app.command()
def copy(
    study: Annotated[str, typer.Argument(help="the study to copy (see `lenet-lab studies`)")],
    to: Annotated[str, typer.Option("--to", help="database URL to copy into")],
    storage: StorageOpt = None,
    as_name: Annotated[Optional[str], opt("name of the copy [default: the same]", "--as")] = None,
) -> None:
    """Copy a study with all its trials, metrics and weights to another database."""
    from lenet_lab.store import Database, copy_study

    with Database(storage, read_only=True) as source, Database(to, option="--to") as target:
        count = copy_study(source, target, study, as_name)
        where = target.safe
    out.print(f"copied {count} trials of {study!r} to {where}{f' as {as_name!r}' * bool(as_name)}")


@app.command()
def dashboard(
    storage: StorageOpt = None,
    host: Annotated[str, typer.Option(help="address to listen on (127.0.0.1: this machine "
                                           "only)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to listen on")] = 8080,
) -> None:
    """Open the database in optuna-dashboard, live while a sweep runs (the dashboard extra).

    Grid and search trials show their parameters, and the objectives their names."""
    from lenet_lab.dashboard import beyond_this_machine, serve
    from lenet_lab.store import Database

    def ready(url: str) -> None:
        out.print(f"optuna-dashboard on {db.safe}: open {url} (Ctrl-C stops it)")
        if beyond_this_machine(host):
            err.print(f"Note: listening on {host}: anyone who can reach this machine on port "
                      f"{port} can read every study in this database (they cannot change "
                      f"them); --host 127.0.0.1 keeps it to this machine")

    with Database(storage, read_only=True) as db:
        serve(db, host=host, port=port, on_ready=ready, say=err.print)
