"""The `lenet-lab` command: parse, call the library, print, map errors to exit codes.

A LabError or a usage error becomes one line `Error: ...` on stderr and a non-zero exit.
Every field of LeNetSpec and TrainConfig is an option named after it in kebab-case
(`--conv-channels 6,16`), generated from the dataclasses, the same on every command.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import os
import sys
import textwrap
from typing import Annotated, Any, Callable, Literal, Optional

import typer
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table

from lenet_lab import __version__
from lenet_lab.data import Dataset
from lenet_lab.engines import ENGINES, get_engine
from lenet_lab.errors import LabError, SpecError, quiet_library_warnings
from lenet_lab.spec import (CHOICES, LeNetSpec, Status, TrainConfig, field_kind, format_widths,
                            from_options)
from lenet_lab.train import EpochMetrics, TrainResult, train as run_training
from lenet_lab.urls import redact

class _Redacting(Console):
    """Text printed passes urls.redact, with the URLs of the options and environment (main)."""

    secrets: list[str | None] = []

    def print(self, *objects: Any, **options: Any) -> None:
        super().print(*(redact(o, *self.secrets) if isinstance(o, str) else o for o in objects),
                      **options)


# Piped output (scripts, logs) gets wide tables instead of rich's 80-column default,
# unless COLUMNS says how wide.
out = _Redacting(highlight=False, soft_wrap=True,
                 width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200)
err = _Redacting(stderr=True, highlight=False, soft_wrap=True, markup=False)

app = typer.Typer(
    help="Answer the LeNet exercises of Dive into Deep Learning (6.6) with measured runs.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]})


def _bar(*columns: Any) -> Progress:
    """A progress display on stderr, shown only on a terminal and gone when done."""
    return Progress(*columns, console=err, transient=True, disable=not err.is_terminal)


def _print_table(header: list[str], rows: list[list[str]], title: str | None = None, *,
                 left: tuple[str, ...] = (), whole: tuple[str, ...] = ()) -> None:
    """A borderless table; columns named in `left` (and text columns) align left. A
    narrow terminal wraps the other columns, never the names in `whole`, which users
    type (study and sweep names)."""
    table = Table(*header, title=title, title_justify="left", box=None)
    for i, column in enumerate(table.columns):
        column.justify = "left" if column.header in left or not left else "right"
        column.overflow = "fold"  # wrap at spaces; fold only a word wider than the column
        if column.header in whole:
            column.no_wrap = True
            column.min_width = max((len(row[i]) for row in rows), default=0)
    for row in rows:
        table.add_row(*row)
    out.print(table)


def _option(field: dataclasses.Field, section: str) -> inspect.Parameter:
    """A typer option for one dataclass field, defaulting to the book's value."""
    flag, kind, default = "--" + field.name.replace("_", "-"), field_kind(field.name), field.default
    kinds = {"widths": str, "bool": bool, "choice": Literal[CHOICES.get(field.name, ("",))]}
    flags = (f"{flag}/--no-{flag[2:]}",) if kind == "bool" else (flag,)
    option = typer.Option(*flags, help=field.metadata["help"], rich_help_panel=section)
    return inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY,
                             default=format_widths(default) if kind == "widths" else default,
                             annotation=Annotated[kinds.get(kind, type(default)), option])


def _opt(help: str, *flags: str, **options: Any) -> Any:
    """An option with no default shown (its default is None: the file's or the book's)."""
    # rich reads "[default: ...]" as markup and drops it: escape the bracket
    return typer.Option(*flags, help=help.replace("[", r"\["), show_default=False, **options)


def with_spec_options(*, training: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """One option per LeNetSpec (and TrainConfig) field; the command gets `spec` (`config`)."""
    groups = [(LeNetSpec, "spec", "Network (LeNetSpec)")]
    if training:
        groups.append((TrainConfig, "config", "Training (TrainConfig)"))

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            for cls, argument, _ in groups:
                kwargs[argument] = from_options(
                    cls, {f.name: kwargs.pop(f.name) for f in dataclasses.fields(cls)})
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
DataDir = Annotated[Optional[str], _opt("folder holding fashion-mnist/ and mnist/ "
                                        "[env LENET_LAB_DATA]")]
Subset = Annotated[Optional[int], _opt("train on N examples and test on up to N, stratified by "
                                       "class (quick runs)", min=1)]


@app.callback(invoke_without_command=True)
def _root(version: Annotated[bool, typer.Option("--version", help="print the version and exit")]
          = False) -> None:
    """Answer the LeNet exercises of Dive into Deep Learning (6.6) with measured runs."""
    if version:
        out.print(f"lenet-lab {__version__}")
        raise typer.Exit()


@app.command()
@with_spec_options(training=True)
def train(*, spec: LeNetSpec, config: TrainConfig, engine: Engine = "mxnet",
          device: DeviceOpt = "auto", subset: Subset = None, data_dir: DataDir = None) -> None:
    """Train one network on real data and print the book's closing lines.

    The defaults are the book's LeNet and run (lr 0.9, 10 epochs, batch 256); exit 3 on divergence.
    """
    progress = _bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn())
    task, downloads = progress.add_task(f"epoch 1/{config.epochs}", visible=False), {}

    def on_download(name: str, done: int, total: int) -> None:
        if name not in downloads:
            downloads[name] = progress.add_task(f"downloading {name}", total=total or None)
        progress.update(downloads[name], completed=done)

    def on_start(result: TrainResult, data: Dataset) -> None:
        out.print(result.intro(data, subset=subset is not None))
        progress.update(task, total=math.ceil(result.train_examples / config.batch_size),
                        visible=True)

    def on_epoch(m: EpochMetrics) -> None:
        out.print(m.line(config.epochs))
        upcoming = min(m.epoch + 1, config.epochs)
        progress.update(task, completed=0, description=f"epoch {upcoming}/{config.epochs}")

    with progress:
        result = run_training(spec, config, engine=engine, device=device, subset=subset,
                              data_dir=data_dir, on_download=on_download, on_start=on_start,
                              on_epoch=on_epoch, on_batch=lambda k: progress.update(task, completed=k))
    if result.status is Status.DIVERGED:
        err.print(f"Diverged: {result.reason}")
        raise typer.Exit(3)
    out.print("\n".join(result.closing_lines()))


@app.command("inspect")
@with_spec_options(training=False)
def inspect_(*, spec: LeNetSpec, engine: Engine = "mxnet") -> None:
    """Show each layer's output shape for a 1x1x28x28 input and its parameters, as the book's table."""
    layers = get_engine(engine).layer_shapes(spec)
    rows = [[layer.name, str(layer.output_shape), f"{layer.params:,}"] for layer in layers]
    _print_table(["layer", "output shape", "parameters"],
                 rows + [["total", "", f"{sum(layer.params for layer in layers):,}"]],
                 title=f"LeNet on {engine}", left=("layer", "output shape"))


UNTIL_DECIDED_MAX = 10  # `--until-decided` without a value
UNTIL_DECIDED = _opt(f"add seeds to the control and the leading arm until the answer is decided, "
                     f"up to MAX seeds [MAX default: {UNTIL_DECIDED_MAX}]", "--until-decided",
                     metavar="[MAX]", min=1)


def _optional_values(args: list[str]) -> list[str]:
    """`--until-decided` takes an optional value, which typer cannot express: give it the
    default where no number follows."""
    found = []
    for i, arg in enumerate(args):
        found.append(arg)
        if arg == "--until-decided" and (i + 1 == len(args) or not args[i + 1].isdigit()):
            found.append(str(UNTIL_DECIDED_MAX))
    return found


StorageOpt = Annotated[Optional[str], _opt(
    "database URL [default: sqlite:///studies.db; env LENET_LAB_STORAGE]", "--storage")]


def _safe_url(url: str | None) -> str:
    from lenet_lab.store import parse_storage
    return parse_storage(url).safe


@app.command()
def sweep(
    name: Annotated[str, typer.Argument(help="a sweep name (see `lenet-lab sweeps`) or a .toml path")],
    engine: Annotated[Optional[Literal[ENGINES]], _opt("override the file's engine")] = None,
    device: DeviceOpt = "auto",
    epochs: Annotated[Optional[int], _opt("override the file's epochs", min=1)] = None,
    seeds: Annotated[Optional[int], _opt("repeats of every arm", min=1)] = None,
    trials: Annotated[Optional[int], _opt("a search's budget of trials", min=1)] = None,
    confirm: Annotated[Optional[int], _opt("a search's best K configurations rerun with the "
                                           "seeds [default: 3; 0: off]", min=0)] = None,
    until_decided: Annotated[Optional[int], UNTIL_DECIDED] = None,
    margin: Annotated[Optional[float], _opt("--until-decided: differences inside ±margin count "
                                            "as none [default: 0.005]")] = None,
    subset: Subset = None,
    storage: StorageOpt = None,
    study: Annotated[Optional[str], _opt("study name [default: <sweep>-<engine>, plus "
                                         "-e<epochs> and -n<subset> when overridden]")] = None,
    jobs: Annotated[int, typer.Option(min=1, help="worker processes sharing the study")] = 1,
    fuse: Annotated[str, typer.Option(help="train up to N queued trials of one network shape "
                                           "as one model (torch): auto (on GPUs), off or N")]
        = "auto",
    data_dir: DataDir = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress, only the summary")] = False,
) -> None:
    """Run a sweep file as an Optuna study in the database; rerun to continue it."""
    from lenet_lab.sweep import plan_sweep, run_sweep, stop_on_signals, summary, watch
    from lenet_lab.sweep_file import load_sweep

    loaded = load_sweep(name).with_run(engine=engine, epochs=epochs, seeds=seeds, trials=trials,
                                       subset=subset, confirm=confirm,
                                       until_decided=until_decided, margin=margin)
    plan = plan_sweep(loaded, storage=storage, study=study, device=device, data_dir=data_dir,
                      command=" ".join(["lenet-lab", *sys.argv[1:]]),
                      name_overrides={"epochs": epochs, "subset": subset}, fuse=fuse)
    where = _safe_url(plan.storage)
    if not quiet:
        out.print(f"{loaded.title}\nstudy {plan.study_name!r} in {where}: {plan.describe(jobs)}")
    progress = _bar(BarColumn(bar_width=20), MofNCompleteColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), TextColumn("{task.fields[detail]}"))
    task = progress.add_task(plan.study_name, total=loaded.expected_trials(), detail="")
    try:  # SIGTERM as Ctrl-C: the running trials are recorded as interrupted
        with stop_on_signals(), progress, watch(plan, lambda done, detail: progress.update(
                task, completed=done, detail=detail), enabled=not quiet and err.is_terminal):
            run_sweep(plan, jobs=jobs, data_dir=data_dir)
    except KeyboardInterrupt:
        err.print(f"Interrupted: finished trials are kept in {where}; run the same command "
                  f"again to continue study {plan.study_name!r}")
        raise typer.Exit(130) from None
    *table, legend, headline, query = summary(plan)
    _print_table(*table, left=("arm", "outcome", "other"))
    for line in legend:  # what each key stands for, wrapped under itself
        out.print(textwrap.fill(line, width=out.width, subsequent_indent=" " * 6,
                                break_on_hyphens=False))
    out.print(f"\n{headline}\n{query}")


@app.command("sweeps")
def sweeps_() -> None:
    """List the sweep files that ship with lenet-lab, with the exercise each answers."""
    from lenet_lab.sweep_file import load_sweeps

    found, broken = load_sweeps()
    _print_table(["name", "exercise", "sampler", "trials", "title"],
                 [[s.name, str(s.exercise or ""), s.run.sampler, str(s.expected_trials()), s.title]
                  for s in found], whole=("name",))
    for problem in broken:
        err.print(f"skipped {problem}")


@app.command()
def studies(storage: StorageOpt = None) -> None:
    """List the studies in a database: sweep, engine, trials by state, best test accuracy."""
    from lenet_lab.store import list_studies

    if not (rows := list_studies(storage)):
        return out.print(f"no studies in {_safe_url(storage)}")
    _print_table(["study", "sweep", "engine", "trials", "best test acc"], [
        [row["study"], row["sweep"] or "-", row["engine"] or "-",
         ", ".join(f"{n} {state}" for state, n in sorted(row["states"].items())) or "-",
         "-" if row["best_test_acc"] is None else f"{row['best_test_acc']:.4f}"] for row in rows],
        whole=("study", "sweep"))


@app.command()
def export(
    study: Annotated[str, typer.Argument(help="the study to export (see `lenet-lab studies`)")],
    format: Annotated[Literal["csv", "parquet"], typer.Option("--format", help="file format")] = "csv",
    out_dir: Annotated[str, typer.Option("--out", help="folder to write into")] = ".",
    storage: StorageOpt = None,
) -> None:
    """Write a study's lab_results rows to <out>/<study>.csv (or .parquet)."""
    from lenet_lab.store import export_study

    path, rows = export_study(storage, study, out_dir, format)
    out.print(f"{rows} rows -> {path}")


@app.command()
def copy(
    study: Annotated[str, typer.Argument(help="the study to copy (see `lenet-lab studies`)")],
    to: Annotated[str, typer.Option("--to", help="database URL to copy into")],
    storage: StorageOpt = None,
    as_name: Annotated[Optional[str], _opt("name of the copy [default: the same]", "--as")] = None,
) -> None:
    """Copy a study with all its trials, metrics and weights to another database."""
    from lenet_lab.store import copy_study

    count = copy_study(storage, to, study, as_name)
    out.print(f"copied {count} trials of {study!r} to {_safe_url(to)}{f' as {as_name!r}' * bool(as_name)}")


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

    progress = _bar(TextColumn("report {task.description}"))
    with progress:
        task = progress.add_task("")
        index = build_report(storage, study or None, out=out_dir, activations=activations,
                             data_dir=data_dir, progress=lambda name: progress.update(task, description=name))
    out.print(f"wrote {index} (open it in a browser; the folder works offline)")


@app.command()
def dashboard(
    storage: StorageOpt = None,
    host: Annotated[str, typer.Option(help="address to listen on (127.0.0.1: this machine "
                                           "only)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to listen on")] = 8080,
) -> None:
    """Open the database in optuna-dashboard, live while a sweep runs (the dashboard extra).

    Grid and search trials show their parameters, and the objectives their names."""
    import socket
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from lenet_lab.store import list_studies, optuna_storage

    try:
        import optuna_dashboard
    except ImportError:
        raise LabError('lenet-lab dashboard needs optuna-dashboard: pip install '
                       '"lenet-lab[dashboard]"') from None
    if not list_studies(storage):
        raise LabError(f"no studies in {_safe_url(storage)}: run `lenet-lab sweep pooling` "
                       f"first, or name the database with --storage")

    class Server(ThreadingMixIn, WSGIServer):  # as optuna-dashboard's own command serves
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass  # no access-log line for each of the page's polls

    app = optuna_dashboard.wsgi(optuna_storage(storage, read_only=True))
    try:
        server = make_server(host, port, app, server_class=Server, handler_class=Quiet)
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise LabError(f"cannot listen on {host}:{port} ({why}): choose another --port, or a "
                       f"--host of this machine") from None
    with server:
        address = f"[{host}]" if ":" in host else host
        out.print(f"optuna-dashboard on {_safe_url(storage)}: open http://{address}:{port}/ "
                  f"(Ctrl-C stops it)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass  # the way to stop it


@app.command("activations")
@with_spec_options(training=True)
def activations_(
    *, spec: LeNetSpec, config: TrainConfig,
    study: Annotated[Optional[str], _opt("take a trained network from this study")] = None,
    trial: Annotated[Optional[int], _opt("the trial number in --study")] = None,
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

    path = activations_page(
        spec=spec, config=config, classes=classes.split(","), per_class=per_class, out=out_dir,
        study=study, trial=trial, storage=storage, engine=engine, device=device, subset=subset,
        data_dir=data_dir,
        on_train=lambda: out.print("no stored weights named: training the network first "
                                   f"({spec.describe()}, {config.epochs} epochs)"))
    out.print(f"wrote {path}")


@app.command()
def bench(
    engine: Engine = "mxnet", device: DeviceOpt = "auto",
    epochs: Annotated[int, typer.Option(min=1, help="measured epochs per path (median)")] = 5,
    warmup: Annotated[int, typer.Option(min=0, help="epochs per path run first, not measured")] = 1,
    batch_size: Annotated[int, typer.Option(min=1, help="examples per minibatch")] = 256,
    subset: Subset = None,
    mode: Annotated[Optional[list[str]], _opt("also time lenet-lab's path in this engine mode "
                                              "(torch: compile, graphs)")] = None,
    fuse: Annotated[Optional[str], _opt("also time K trials fused into one model, for each K "
                                        "of a list such as 1,3,6 (torch)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    data_dir: DataDir = None,
) -> None:
    """Examples/sec of lenet-lab's training path against a book-style reference loop.

    Default spec, one process and device, synchronised clock reads, warm-up and evaluation
    excluded (lenet_lab/bench.py)."""
    from lenet_lab.bench import run_bench

    progress = _bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    task = progress.add_task("", total=warmup + epochs)
    with progress:
        result = run_bench(engine=engine, device=device, epochs=epochs, warmup=warmup,
                           batch_size=batch_size, subset=subset, modes=tuple(mode or ()),
                           fuse=_counts(fuse), data_dir=data_dir,
                           progress=lambda path, k, total: progress.update(
                               task, completed=k - 1, description=f"epoch {k}/{total}: {path}"))
    if as_json:
        out.print(json.dumps(result.to_dict(), indent=2), soft_wrap=True)
        return
    _print_table(*result.table(), left=("path",))
    out.print(f"ratio lenet-lab / reference: {result.ratio:.3f}")


def _counts(text: str | None) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",")) if text else ()
    except ValueError:
        raise SpecError(f"--fuse takes whole numbers separated by commas, such as 1,3,6, "
                       f"not {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: one line per error, never a traceback for bad input."""
    quiet_library_warnings()
    args = _optional_values(sys.argv[1:] if argv is None else argv)
    _Redacting.secrets = [*args, *(os.environ.get(f"LENET_LAB_{name}")
                                   for name in ("STORAGE", "MIRROR"))]
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
        from lenet_lab.store import database_error

        message = database_error(exc)
        if message is None:
            raise  # a bug: keep the traceback
        err.print(f"Error: {message}")
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
