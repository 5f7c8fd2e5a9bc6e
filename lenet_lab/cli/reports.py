"""`lenet-lab report` and `activations`: the answers and their evidence as HTML pages."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.progress import TextColumn

from lenet_lab.cli.app import app
from lenet_lab.cli.console import bar, out
from lenet_lab.cli.options import (DataDir, DeviceOpt, Engine, OutDir, StorageOpt, Subset, opt,
                                   with_spec_options)
from lenet_lab.spec import LeNetSpec, TrainConfig


@app.command()
def report(
    study: Annotated[Optional[list[str]], typer.Argument(
        help="studies to include [default: every study in the database]", show_default=False)] = None,
    storage: StorageOpt = None,
    out_dir: OutDir = "reports",
    activations: Annotated[bool, typer.Option(
        help="include exercise 10's activation maps (needs the study's engine)")] = True,
    data_dir: DataDir = None,
) -> None:
    """Write each study's answer and evidence as HTML: <out>/index.html and a page per study."""
    from lenet_lab.report import build_report
    from lenet_lab.store import Database

    progress = bar(TextColumn("report {task.description}"))
    with progress, Database(storage, read_only=True) as db:
        task = progress.add_task("")
        index = build_report(db, study or None, out=out_dir, activations=activations,
                             data_dir=data_dir,
                             progress=lambda name: progress.update(task, description=name))
    out.print(f"wrote {index} (open it in a browser; the folder works offline)")


@app.command("activations")
@with_spec_options(training=True)
def activations_(
    *, spec: LeNetSpec, config: TrainConfig,
    study: Annotated[Optional[str], opt("take a trained network from this study")] = None,
    trial: Annotated[Optional[int], opt("the trial number in --study")] = None,
    classes: Annotated[str, typer.Option(help="test images of these classes, comma-separated")] =
        "sweater,coat",
    per_class: Annotated[int, typer.Option(min=1, max=8, help="images per class")] = 2,
    engine: Engine = "mxnet", device: DeviceOpt = "auto", subset: Subset = None,
    data_dir: DataDir = None, storage: StorageOpt = None, out_dir: OutDir = "reports",
) -> None:
    """Show the first and second conv layers' activations for test images (exercise 10).

    With --study and --trial, that trial's stored weights; otherwise the network of the spec
    options (the book's by default) is trained first."""
    from lenet_lab.report.activations import activations_page
    from lenet_lab.store import Database

    with Database(storage, read_only=True) as db:
        path = activations_page(
            spec=spec, config=config, classes=classes.split(","), per_class=per_class,
            out=out_dir, study=study, trial=trial, db=db, engine=engine, device=device,
            subset=subset, data_dir=data_dir,
            on_train=lambda: out.print("no stored weights named: training the network first "
                                       f"({spec.describe()}, {config.epochs} epochs)"))
    out.print(f"wrote {path}")
