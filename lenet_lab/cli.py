"""The `lenet-lab` command: a thin layer over the library.

It parses options, calls the library, prints, and maps errors to exit codes: a
LabError or a usage error becomes one line `Error: ...` on stderr and a non-zero exit.

Every field of LeNetSpec and TrainConfig is an option named after the field in
kebab-case (`--conv-channels 6,16`), generated from the dataclasses so that every
command that takes a spec spells it the same way.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import sys
import threading
from typing import Annotated, Any, Callable, Literal, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lenet_lab import __version__
from lenet_lab.data import DATASET_INFO, Dataset
from lenet_lab.engines import ENGINES, get_engine
from lenet_lab.errors import LabError
from lenet_lab.spec import CHOICES, LeNetSpec, TrainConfig
from lenet_lab.train import EpochMetrics, TrainResult, train as run_training

# Piped output (scripts, logs) gets wide tables instead of rich's 80-column default.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)

app = typer.Typer(
    help="Answer the LeNet exercises of Dive into Deep Learning (6.6) with measured runs.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]})

FIELD_HELP = {
    "conv_channels": "output channels of each conv layer, comma-separated (one layer per number)",
    "kernel_size": "conv window size (square)",
    "padding": "which convs are padded by (k-1)//2: first (the book), all or none",
    "pooling": "2x2 stride-2 pooling after each conv",
    "activation": "activation after every conv and hidden dense layer",
    "dense_units": "hidden dense widths, comma-separated; 'none' for no hidden layer",
    "num_classes": "outputs of the last dense layer",
    "batch_norm": "batch normalisation before each activation",
    "dropout": "dropout rate after each hidden dense layer",
    "lr": "learning rate",
    "epochs": "passes over the training set",
    "batch_size": "examples per minibatch",
    "optimizer": "sgd, momentum (SGD with momentum 0.9) or adam",
    "init": "weight initialisation: xavier (the book), normal (sigma 0.01) or kaiming",
    "weight_decay": "L2 penalty on all parameters",
    "seed": "seed for initialisation and shuffling",
    "dataset": "training and test data",
}


def _parse_widths(text: str) -> tuple[int, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of whole numbers "
                                 f"(e.g. 6,16)") from None


def _option(field: dataclasses.Field, section: str) -> inspect.Parameter:
    """A typer option for one dataclass field, defaulting to the book's value."""
    flag = "--" + field.name.replace("_", "-")
    help_text = FIELD_HELP[field.name]
    default = field.default
    if isinstance(default, tuple):
        annotation: Any = Annotated[str, typer.Option(flag, help=help_text, rich_help_panel=section)]
        default = ",".join(map(str, default)) or "none"
    elif isinstance(default, bool):
        annotation = Annotated[bool, typer.Option(f"{flag}/--no-{flag[2:]}", help=help_text,
                                                  rich_help_panel=section)]
    elif field.name in CHOICES:
        annotation = Annotated[Literal[CHOICES[field.name]],  # type: ignore[valid-type]
                               typer.Option(flag, help=help_text, rich_help_panel=section)]
    else:
        annotation = Annotated[type(default), typer.Option(flag, help=help_text,
                                                           rich_help_panel=section)]
    return inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY,
                             default=default, annotation=annotation)


def with_spec_options(*, training: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add one option per LeNetSpec field (and TrainConfig field when `training`).

    The command receives `spec` (and `config`) instead of the separate fields.
    """
    groups = [(LeNetSpec, "spec", "Network (LeNetSpec)")]
    if training:
        groups.append((TrainConfig, "config", "Training (TrainConfig)"))

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            for cls, argument, _ in groups:
                values = {f.name: kwargs.pop(f.name) for f in dataclasses.fields(cls)}
                values = {name: _parse_widths(value) if name in ("conv_channels", "dense_units")
                          else value for name, value in values.items()}
                kwargs[argument] = cls(**values)
            return command(**kwargs)

        own = [p for p in inspect.signature(command, eval_str=True).parameters.values()
               if p.name not in ("spec", "config")]
        added = [_option(f, section) for cls, _, section in groups for f in dataclasses.fields(cls)]
        wrapper.__signature__ = inspect.Signature(own + added)  # type: ignore[attr-defined]
        return wrapper

    return decorate


Engine = Annotated[Literal[ENGINES],  # type: ignore[valid-type]
                   typer.Option(help="framework: mxnet (the book's) or torch")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, gpu or gpu:N")]
DataDir = Annotated[Optional[str], typer.Option(
    help="folder holding fashion-mnist/ and mnist/ [env LENET_LAB_DATA]", show_default=False)]
Subset = Annotated[Optional[int], typer.Option(
    min=1, show_default=False,
    help="train on N examples and test on up to N, stratified by class (quick runs)")]


def _version(value: bool) -> None:
    if value:
        out.print(f"lenet-lab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="print the version and exit")] = False) -> None:
    """Answer the LeNet exercises of Dive into Deep Learning (6.6) with measured runs."""


def _download_progress() -> Callable[[str, int, int], None]:
    bars: dict[str, Any] = {}
    progress = Progress(TextColumn("downloading {task.description}"), BarColumn(),
                        MofNCompleteColumn(), console=err, transient=True,
                        disable=not err.is_terminal)

    def update(name: str, done: int, total: int) -> None:
        if not bars:
            progress.start()
        if name not in bars:
            bars[name] = progress.add_task(name, total=total or None)
        progress.update(bars[name], completed=done)
        if total and done >= total and all(t.finished for t in progress.tasks):
            progress.stop()

    return update


def _describe(spec: LeNetSpec) -> str:
    dense = ",".join(map(str, spec.dense_units)) or "none"
    extras = (", batch norm" if spec.batch_norm else "") + (
        f", dropout {spec.dropout}" if spec.dropout else "")
    return (f"conv {','.join(map(str, spec.conv_channels))} k{spec.kernel_size} {spec.pooling}-pool "
            f"{spec.activation}, dense {dense}{extras}; {spec.param_count:,} parameters")


@app.command()
@with_spec_options(training=True)
def train(*, spec: LeNetSpec, config: TrainConfig, engine: Engine = "mxnet",
          device: DeviceOpt = "auto", subset: Subset = None, data_dir: DataDir = None) -> None:
    """Train one network on real data and print the book's closing lines.

    The defaults are the book's LeNet and its run (lr 0.9, 10 epochs, batch 256).
    Exits with status 3 when the loss diverges.
    """
    progress = Progress(TextColumn("epoch {task.fields[epoch]}/" + str(config.epochs)), BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True,
                        disable=not err.is_terminal)
    task = progress.add_task("train", total=None, epoch=1)

    def on_start(result: TrainResult, data: Dataset) -> None:
        sample = f"subset of {result.train_examples} train / {result.test_examples} test" \
            if subset else f"{result.train_examples} train / {result.test_examples} test"
        out.print(f"{_describe(spec)}\n{DATASET_INFO[config.dataset].title} from {data.source} "
                  f"({sample}); {engine} {result.engine_version} on {result.device}")
        progress.update(task, total=math.ceil(result.train_examples / config.batch_size))
        progress.start()

    def on_epoch(m: EpochMetrics) -> None:
        out.print(
            f"epoch {m.epoch:>2}/{config.epochs}  loss {m.train_loss:.3f}, train acc "
            f"{m.train_acc:.3f}, test acc {m.test_acc:.3f}  "
            f"{m.examples_per_sec:,.1f} examples/sec  {m.seconds:.1f}s")
        progress.update(task, completed=0, epoch=min(m.epoch + 1, config.epochs))

    try:
        result = run_training(spec, config, engine=engine, device=device, subset=subset,
                              data_dir=data_dir, on_download=_download_progress(),
                              on_start=on_start, on_epoch=on_epoch,
                              on_batch=lambda k: progress.update(task, completed=k))
    finally:
        progress.stop()
    if result.status == "diverged":
        err.print(f"Diverged: {result.reason}")
        raise typer.Exit(3)
    final = result.final
    out.print(f"loss {final.train_loss:.3f}, train acc {final.train_acc:.3f}, "
              f"test acc {final.test_acc:.3f}")
    out.print(f"{result.examples_per_sec:.1f} examples/sec on {result.device} ({result.device_name})")


@app.command("inspect")
@with_spec_options(training=False)
def inspect_(*, spec: LeNetSpec, engine: Engine = "mxnet") -> None:
    """Show each layer's output shape for a 1x1x28x28 input and its parameters, as the book's table."""
    layers = get_engine(engine).layer_shapes(spec)
    table = Table(title=f"LeNet on {engine}", title_justify="left", box=None)
    table.add_column("layer")
    table.add_column("output shape")
    table.add_column("parameters", justify="right")
    for layer in layers:
        table.add_row(layer.name, str(layer.output_shape), f"{layer.params:,}")
    table.add_row("total", "", f"{sum(layer.params for layer in layers):,}")
    out.print(table)


StorageOpt = Annotated[Optional[str], typer.Option(
    "--storage", show_default=False,
    help="database URL [default: sqlite:///studies.db; env LENET_LAB_STORAGE]")]


def _safe_url(url: str) -> str:
    from lenet_lab.store import safe_url

    return safe_url(url)


@app.command()
def sweep(
    name: Annotated[str, typer.Argument(help="a sweep name (see `lenet-lab sweeps`) or a .toml path")],
    engine: Annotated[Optional[Literal[ENGINES]],  # type: ignore[valid-type]
                      typer.Option(help="override the file's engine", show_default=False)] = None,
    device: DeviceOpt = "auto",
    epochs: Annotated[Optional[int], typer.Option(min=1, show_default=False,
                                                  help="override the file's epochs")] = None,
    seeds: Annotated[Optional[int], typer.Option(min=1, show_default=False,
                                                 help="repeats of every arm")] = None,
    trials: Annotated[Optional[int], typer.Option(min=1, show_default=False,
                                                  help="a search's budget of trials")] = None,
    subset: Subset = None,
    storage: StorageOpt = None,
    study: Annotated[Optional[str], typer.Option(
        show_default=False, help="study name [default: <sweep>-<engine>, plus -e<epochs> and "
        "-n<subset> when those are overridden]")] = None,
    jobs: Annotated[int, typer.Option(min=1, help="worker processes sharing the study")] = 1,
    data_dir: DataDir = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress, only the summary")] = False,
) -> None:
    """Run a sweep file as an Optuna study in the database; rerun to continue it."""
    from lenet_lab.sweep import plan_sweep, run_sweep
    from lenet_lab.sweep_file import load_sweep

    loaded = load_sweep(name).with_run(engine=engine, epochs=epochs, seeds=seeds, trials=trials,
                                       subset=subset)
    plan = plan_sweep(loaded, storage=storage, study=study, device=device, data_dir=data_dir,
                      command=" ".join(["lenet-lab", *sys.argv[1:]]),
                      name_overrides={"epochs": epochs, "subset": subset})
    where = _safe_url(plan.storage)
    if not quiet:
        out.print(f"{loaded.title}\nstudy {plan.study_name!r} in {where}: {plan.expected_trials()} "
                  f"trials ({loaded.run.sampler}, {loaded.run.seeds} seed(s)), {loaded.run.engine} "
                  f"on {plan.device}, {jobs} worker(s)")
    monitor = _SweepMonitor(plan.storage, plan.study_name, plan.expected_trials(),
                            enabled=not quiet and err.is_terminal)
    try:
        with monitor:
            run_sweep(plan, jobs=jobs, data_dir=data_dir)
    except KeyboardInterrupt:
        err.print(f"Interrupted: finished trials are kept in {where}; run the same command "
                  f"again to continue study {plan.study_name!r}")
        raise typer.Exit(130) from None
    _print_summary(plan.storage, plan.study_name)


class _SweepMonitor:
    """A progress bar fed by polling the study database once a second (any number of workers)."""

    def __init__(self, storage: str, study: str, total: int, *, enabled: bool) -> None:
        from lenet_lab import store

        self.store, self.storage, self.study, self.enabled = store, storage, study, enabled
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                                 console=err, transient=True, disable=not enabled)
        self.task = self.progress.add_task(study, total=total, detail="")
        self.stop = threading.Event()

    def __enter__(self) -> _SweepMonitor:
        if self.enabled:
            self.progress.start()
            self.thread = threading.Thread(target=self._poll, daemon=True)
            self.thread.start()
        return self

    def _poll(self) -> None:
        engine = self.store.connect(self.storage)
        while not self.stop.wait(1.0):
            try:
                now = self.store.progress(engine, self.study)
            except Exception:  # tables not created yet, or a busy database: try again
                continue
            done = sum(n for state, n in now["states"].items() if state not in ("running", "waiting"))
            # (trial number, epochs finished): show the epoch under way
            running = ", ".join(f"trial #{n} in epoch {e + 1}" for n, e in now["running"])
            best = f"best {now['best']:.3f}" if now["best"] is not None else ""
            self.progress.update(self.task, completed=done, detail=f"{running}  {best}".strip())
        engine.dispose()

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self.stop.set()
            self.thread.join()
            self.progress.stop()


def _print_summary(storage: str, study: str) -> None:
    from lenet_lab.store import read_results

    results = read_results(storage, study)
    table = Table(title=f"{study}: test accuracy after the last epoch", title_justify="left", box=None)
    for column in ("arm", "complete", "test acc mean", "sd", "min", "max", "examples/sec", "other"):
        table.add_column(column, justify="left" if column in ("arm", "other") else "right")
    for arm, rows in results.groupby("arm", sort=False, dropna=False):
        complete = rows[rows.state == "complete"]
        acc = complete.test_acc
        others = rows[rows.state != "complete"].state.value_counts()
        table.add_row(
            f"{arm}{' (control)' if rows.is_control.any() else ''}", str(len(complete)),
            f"{acc.mean():.4f}" if len(acc) else "-", f"{acc.std():.4f}" if len(acc) > 1 else "-",
            f"{acc.min():.4f}" if len(acc) else "-", f"{acc.max():.4f}" if len(acc) else "-",
            f"{complete.examples_per_sec.mean():,.0f}" if len(acc) else "-",
            ", ".join(f"{n} {state}" for state, n in others.items()))
    out.print(table)
    out.print(f"query: pandas.read_sql(\"SELECT * FROM lab_results WHERE study = '{study}'\", "
              f"\"{_safe_url(storage)}\")")


@app.command("sweeps")
def sweeps_() -> None:
    """List the sweep files that ship with lenet-lab, with the exercise each answers."""
    from lenet_lab.sweep_file import list_sweeps, load_sweep

    table = Table(box=None)
    for column in ("name", "exercise", "sampler", "trials", "title"):
        table.add_column(column)
    for loaded in sorted((load_sweep(str(path)) for path in list_sweeps()),
                         key=lambda sweep: (sweep.exercise or 99, sweep.name)):
        run = loaded.run
        size = len(loaded.grid_arms()) * run.seeds if run.sampler == "grid" else run.seeds + run.trials
        table.add_row(loaded.name, str(loaded.exercise or ""), run.sampler, str(size), loaded.title)
    out.print(table)


@app.command()
def studies(storage: StorageOpt = None) -> None:
    """List the studies in a database: sweep, engine, trials by state, best test accuracy."""
    from lenet_lab.store import list_studies, storage_url

    rows = list_studies(storage)
    if not rows:
        out.print(f"no studies in {_safe_url(storage_url(storage))}")
        return
    table = Table(box=None)
    for column in ("study", "sweep", "engine", "trials", "best test acc"):
        table.add_column(column)
    for row in rows:
        states = ", ".join(f"{n} {state}" for state, n in sorted(row["states"].items()))
        best = f"{row['best_test_acc']:.4f}" if row["best_test_acc"] is not None else "-"
        table.add_row(row["study"], row["sweep"] or "-", row["engine"] or "-", states or "-", best)
    out.print(table)


@app.command()
def export(
    study: Annotated[str, typer.Argument(help="the study to export (see `lenet-lab studies`)")],
    format: Annotated[Literal["csv", "parquet"], typer.Option("--format", help="file format")] = "csv",
    out_dir: Annotated[str, typer.Option("--out", help="folder to write into")] = ".",
    storage: StorageOpt = None,
) -> None:
    """Write a study's lab_results rows to <out>/<study>.csv (or .parquet)."""
    import re
    from pathlib import Path

    from lenet_lab.store import list_studies, read_results, storage_url

    known = [row["study"] for row in list_studies(storage)]
    if study not in known:
        raise LabError(f"no study {study!r} in {_safe_url(storage_url(storage))}: known "
                       f"studies are {', '.join(known) or 'none'} (`lenet-lab studies`)")
    folder = Path(out_dir)
    if not folder.is_dir():
        raise LabError(f"--out {out_dir}: no such folder; create it first")
    results = read_results(storage, study)
    path = folder / f"{re.sub(r'[^A-Za-z0-9._-]', '_', study)}.{format}"
    if format == "csv":
        results.to_csv(path, index=False)
    else:
        results.to_parquet(path, index=False)
    out.print(f"{len(results)} rows -> {path}")


@app.command()
def copy(
    study: Annotated[str, typer.Argument(help="the study to copy (see `lenet-lab studies`)")],
    to: Annotated[str, typer.Option("--to", help="database URL to copy into")],
    storage: StorageOpt = None,
    as_name: Annotated[Optional[str], typer.Option("--as", show_default=False,
                                                   help="name of the copy [default: the same]")] = None,
) -> None:
    """Copy a study with all its trials, metrics and weights to another database."""
    from lenet_lab.store import copy_study, safe_url, storage_url

    count = copy_study(storage_url(storage), to, study, as_name)
    out.print(f"copied {count} trials of {study!r} to {safe_url(to)}"
              + (f" as {as_name!r}" if as_name else ""))


OutDir = Annotated[str, typer.Option("--out", help="folder for the HTML pages")]


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

    progress = Progress(TextColumn("report {task.description}"), console=err, transient=True,
                        disable=not err.is_terminal)
    task = progress.add_task("")
    with progress:
        index = build_report(storage, study or None, out=out_dir, activations=activations,
                             data_dir=data_dir,
                             progress=lambda name: progress.update(task, description=name))
    out.print(f"wrote {index} (open it in a browser; the folder works offline)")


@app.command("activations")
@with_spec_options(training=True)
def activations_(
    *, spec: LeNetSpec, config: TrainConfig,
    study: Annotated[Optional[str], typer.Option(show_default=False,
                                                 help="take a trained network from this study")] = None,
    trial: Annotated[Optional[int], typer.Option(show_default=False,
                                                 help="the trial number in --study")] = None,
    classes: Annotated[str, typer.Option(help="test images of these classes, comma-separated")] =
        "sweater,coat",
    per_class: Annotated[int, typer.Option(min=1, max=8, help="images per class")] = 2,
    engine: Engine = "mxnet", device: DeviceOpt = "auto", subset: Subset = None,
    data_dir: DataDir = None, storage: StorageOpt = None, out_dir: OutDir = "reports",
) -> None:
    """Show the first and second conv layers' activations for test images (exercise 10).

    With --study and --trial the stored weights of that trial are used; otherwise the
    network given by the spec options is trained first (the book's by default).
    """
    from pathlib import Path

    from lenet_lab.data import load_dataset
    from lenet_lab.report.activations import (Network, parse_classes, trial_network,
                                              write_activation_page)
    from lenet_lab.store import connect, storage_url

    if (study is None) != (trial is None):
        raise LabError("--study and --trial go together: name a study and one of its trials "
                       "(see `lenet-lab export STUDY`), or neither to train the spec options")
    network = None
    if study is not None:
        db = connect(storage_url(storage))
        network = trial_network(db, study, trial, study)
        db.dispose()
        if network is None:
            raise LabError(f"study {study!r} has no completed trial {trial} with stored weights "
                           f"in {_safe_url(storage_url(storage))}")
    dataset = network.dataset if network else config.dataset
    wanted = parse_classes(dataset, classes.split(","))  # before any training: fail fast
    if network is None:
        out.print("no stored weights named: training the network first "
                  f"({_describe(spec)}, {config.epochs} epochs)")
        result = run_training(spec, config, engine=engine, device=device, subset=subset,
                              data_dir=data_dir, keep_weights=True)
        if result.status != "completed":
            raise LabError(f"training {result.reason}: choose a smaller --lr")
        network = Network(f"trained here (test acc {result.final.test_acc:.3f})", engine, spec,
                          result.weights, dataset)
    path = write_activation_page(network, load_dataset(dataset, data_dir=data_dir), wanted,
                                 per_class, Path(out_dir))
    out.print(f"wrote {path}")


@app.command()
def bench(
    engine: Engine = "mxnet", device: DeviceOpt = "auto",
    epochs: Annotated[int, typer.Option(min=1, help="measured epochs per path (median)")] = 5,
    warmup: Annotated[int, typer.Option(min=0, help="epochs per path run first, not measured")] = 1,
    batch_size: Annotated[int, typer.Option(min=1, help="examples per minibatch")] = 256,
    subset: Subset = None,
    mode: Annotated[Optional[list[str]], typer.Option(
        help="also time lenet-lab's path in this engine mode (torch: compile)",
        show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    data_dir: DataDir = None,
) -> None:
    """Examples/sec of lenet-lab's training path against a book-style reference loop.

    Default spec, same process, same device; device synchronised before each clock
    read; warm-up epochs and evaluation excluded. See lenet_lab/bench.py.
    """
    import json

    from lenet_lab.bench import run_bench

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err, transient=True,
                        disable=not err.is_terminal)
    task = progress.add_task("", total=warmup + epochs)
    with progress:
        result = run_bench(engine=engine, device=device, epochs=epochs, warmup=warmup,
                           batch_size=batch_size, subset=subset, modes=tuple(mode or ()),
                           data_dir=data_dir,
                           progress=lambda path, k, total: progress.update(
                               task, completed=k - 1, description=f"epoch {k}/{total}: {path}"))
    if as_json:
        out.print(json.dumps(result.to_dict(), indent=2), soft_wrap=True)
        return
    table = Table(title=f"{result.engine} {result.engine_version} on {result.device} "
                        f"({result.device_name}), batch {result.batch_size}, "
                        f"{result.train_examples} examples/epoch, median of {result.epochs} "
                        f"epochs after {result.warmup} warm-up", title_justify="left", box=None)
    for column in ("path", "examples/sec (median)", "min", "max", "warm-up epoch(s) s"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for timing in result.paths:
        table.add_row(timing.path, f"{timing.median:,.1f}", f"{min(timing.examples_per_sec):,.1f}",
                      f"{max(timing.examples_per_sec):,.1f}",
                      ", ".join(f"{s:.1f}" for s in timing.warmup_seconds) or "-")
    out.print(table)
    out.print(f"ratio lenet-lab / reference: {result.ratio:.3f}")


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: one line per error, never a traceback for bad input."""
    args = sys.argv[1:] if argv is None else argv
    command = typer.main.get_command(app)
    try:
        # Without standalone mode, click returns typer.Exit's code instead of exiting.
        code = command.main(args=args or ["--help"], prog_name="lenet-lab", standalone_mode=False)
    except typer.TyperException as exc:  # usage errors: unknown option, bad value, ...
        ctx = getattr(exc, "ctx", None)
        path = ctx.command_path if ctx else "lenet-lab"
        err.print(f"Error: {exc.format_message()} (see '{path} --help')")
        return getattr(exc, "exit_code", 2)
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err.print("Aborted.")
        return 130
    except LabError as exc:
        err.print(f"Error: {exc}")
        return exc.exit_code
    except Exception as exc:
        reason = _database_trouble(exc)
        if reason is None:
            raise  # a bug: keep the traceback
        err.print(f"Error: cannot use the database: {reason} (check --storage or "
                  f"LENET_LAB_STORAGE, and that the server is up)")
        return 1
    return code if isinstance(code, int) else 0


def _database_trouble(exc: Exception) -> str | None:
    """The first line of a database driver's error (it names no password), else None."""
    import sqlalchemy as sa

    if "optuna" in sys.modules and isinstance(exc, sys.modules["optuna"].exceptions.StorageInternalError):
        exc = exc.__cause__ or exc
    if isinstance(exc, sa.exc.DBAPIError):
        text = str(exc.orig).strip() or type(exc.orig).__name__
        return " ".join(text.split())
    return None


if __name__ == "__main__":
    sys.exit(main())
