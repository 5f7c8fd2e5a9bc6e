"""`lenet-lab train`, `inspect` and `bench`: one network, its shapes, its speed."""

from __future__ import annotations

import json
import math
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from lenet_lab.cli.app import app
from lenet_lab.cli.console import bar, err, out, print_table
from lenet_lab.cli.options import DataDir, DeviceOpt, Engine, Subset, opt, with_spec_options
from lenet_lab.data import Dataset
from lenet_lab.engines import get_engine
from lenet_lab.spec import LeNetSpec, TrainConfig
from lenet_lab.status import Status
from lenet_lab.train import EpochMetrics, TrainResult
from lenet_lab.train import train as run_training


@app.command()
@with_spec_options(training=True)
def train(*, spec: LeNetSpec, config: TrainConfig, engine: Engine = "mxnet",
          device: DeviceOpt = "auto", subset: Subset = None, data_dir: DataDir = None) -> None:
    """Train one network on real data and print the book's closing lines.

    The defaults are the book's LeNet and run (lr 0.9, 10 epochs, batch 256); exit 3 on divergence.
    """
    progress = bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
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
    """Show each layer's output shape for a 1x1x28x28 input, its parameters and FLOPs, as
    the book's table."""
    layers, flops = get_engine(engine).layer_shapes(spec), spec.layer_flops()
    rows = [[layer.name, str(layer.output_shape), f"{layer.params:,}", f"{flops[layer.name]:,}"]
            for layer in layers]
    print_table(["layer", "output shape", "parameters", "FLOPs"],
                rows + [["total", "", f"{sum(layer.params for layer in layers):,}",
                         f"{spec.flops_per_example:,}"]],
                title=f"LeNet on {engine} (FLOPs: forward pass, one example)",
                left=("layer", "output shape"))
    out.print(f"training: about {spec.train_flops_per_example:,} FLOPs per example "
              f"(forward and backward, 3x the forward pass)")


@app.command()
def bench(
    engine: Engine = "mxnet", device: DeviceOpt = "auto",
    epochs: Annotated[int, typer.Option(min=1, help="measured epochs per path (median)")] = 5,
    warmup: Annotated[int, typer.Option(min=0, help="epochs per path run first, not measured")] = 1,
    batch_size: Annotated[int, typer.Option(min=1, help="examples per minibatch")] = 256,
    subset: Subset = None,
    mode: Annotated[Optional[list[str]], opt("also time lenet-lab's path in this engine mode "
                                             "(torch: compile, graphs)")] = None,
    fuse: Annotated[Optional[str], opt("also time K trials fused into one model, for each K "
                                       "of a list such as 1,3,6 (torch)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    data_dir: DataDir = None,
) -> None:
    """Examples/sec of lenet-lab's training path against a book-style reference loop.

    Default spec, one process and device, synchronised clock reads, warm-up and evaluation
    excluded (lenet_lab/bench.py)."""
    from lenet_lab.bench import parse_counts, run_bench

    progress = bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    task = progress.add_task("", total=warmup + epochs)
    with progress:
        result = run_bench(engine=engine, device=device, epochs=epochs, warmup=warmup,
                           batch_size=batch_size, subset=subset, modes=tuple(mode or ()),
                           fuse=parse_counts(fuse), data_dir=data_dir,
                           progress=lambda path, k, total: progress.update(
                               task, completed=k - 1, description=f"epoch {k}/{total}: {path}"))
    if as_json:
        out.print(json.dumps(result.to_dict(), indent=2), soft_wrap=True)
        return
    print_table(*result.table(), left=("path",))
    out.print(f"ratio lenet-lab / reference: {result.ratio:.3f}")
