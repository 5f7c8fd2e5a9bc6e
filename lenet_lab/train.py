"""Engine-neutral training with the book's train_ch5 semantics: one loop for K members.

Per epoch: shuffle (a numpy generator seeded by config.seed, so both engines see the
same batches), one pass of minibatch updates, then the validation accuracy (when the data
holds a validation split out) and the test accuracy (a sweep measures the test set after
the last epoch only: nothing reads it before, and each evaluation costs about 6% of an
epoch's training). Examples/sec counts training
examples over training time only, evaluation excluded, as the book does; the engine
synchronises the device before it reads the clock.

A run has diverged when its training loss turns NaN or infinite, or its epoch's mean
rises above twice ln(classes), the loss of a uniform guess (4.6 for ten classes): it then
stops at once instead of raising. The first epoch's mean includes the loss of the network
as it was initialised (above 4.6 for some, on a subset of a few batches), so it must rise
above four times ln(classes). No recorded run that crossed the line learned afterwards (13
of 13 in docs/answers/2026-11-28.db ended at chance; tests/test_replay.py), while runs
still at chance sit at 2.3-2.7.

`train_members` runs K members (K trials of one network shape; K > 1 fuses them into
one model on torch) and `train` is its K = 1 case: the epoch, metric and divergence
logic exist once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from lenet_lab.data import DATASET_INFO, Dataset, load_dataset
from lenet_lab.engines import get_engine, parse_device
from lenet_lab.spec import LeNetSpec, TrainConfig, check_fits_data
from lenet_lab.status import Status

__all__ = ["DIVERGED_FACTOR", "EpochMetrics", "TrainResult", "blew_up", "diverged_loss",
           "flops_per_sec", "speed", "throughput", "train", "train_members"]

DIVERGED_FACTOR = 2.0  # a loss above this many times ln(classes) has diverged


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    test_acc: float  # NaN when the epoch diverged
    examples_per_sec: float
    seconds: float  # training time of this epoch
    valid_acc: float = math.nan  # NaN without a validation split, or when it diverged

    def line(self, epochs: int) -> str:
        valid = "" if math.isnan(self.valid_acc) else f", valid acc {self.valid_acc:.3f}"
        return (f"epoch {self.epoch:>2}/{epochs}  loss {self.train_loss:.3f}, train acc "
                f"{self.train_acc:.3f}{valid}, test acc {self.test_acc:.3f}  "
                f"{self.examples_per_sec:,.1f} examples/sec  {self.seconds:.1f}s")


@dataclass
class TrainResult:
    spec: LeNetSpec
    config: TrainConfig
    engine: str
    engine_version: str
    device: str  # cpu | gpu:N
    device_name: str  # e.g. "NVIDIA H100 80GB HBM3" or the CPU model
    train_examples: int
    test_examples: int
    valid_examples: int = 0  # held out of the training images (0: no validation split)
    epochs: list[EpochMetrics] = field(default_factory=list)
    status: Status = Status.COMPLETE  # COMPLETE or DIVERGED
    reason: str | None = None
    weights: dict[str, np.ndarray] | None = field(default=None, repr=False)  # see keep_weights

    @property
    def final(self) -> EpochMetrics:
        return self.epochs[-1]

    def intro(self, data: Dataset, *, subset: bool = False) -> str:
        """What is trained, on what, where: the lines `lenet-lab train` starts with."""
        held = f" / {self.valid_examples} validation" if self.valid_examples else ""
        sample = f"{self.train_examples} train{held} / {self.test_examples} test"
        return (f"{self.spec.describe()}\n{DATASET_INFO[self.config.dataset].title} from "
                f"{data.source} ({'subset of ' if subset else ''}{sample}); {self.engine} "
                f"{self.engine_version} on {self.device}")

    def closing_lines(self) -> list[str]:
        """The book's two closing lines."""
        final = self.final
        return [f"loss {final.train_loss:.3f}, train acc {final.train_acc:.3f}, "
                f"test acc {final.test_acc:.3f}",
                f"{self.examples_per_sec:.1f} examples/sec on {self.device} ({self.device_name})"]

    @property
    def examples_per_sec(self) -> float:
        """All training examples over all training time, like the book's closing line."""
        return throughput(self.epochs)


def speed(examples: int, seconds: float) -> float:
    """Examples/sec: training examples over training time (evaluation never counts). The
    one place examples/sec is computed (epochs, trials, `lenet-lab bench`, the probe)."""
    return examples / seconds if seconds > 0 else 0.0


def flops_per_sec(examples_per_sec: float, spec: LeNetSpec) -> float:
    """The arithmetic rate a training speed achieves: examples/sec x the FLOPs of one
    example's training step (spec.train_flops_per_example)."""
    return examples_per_sec * spec.train_flops_per_example


def throughput(epochs: list[EpochMetrics]) -> float:
    """Examples/sec over all epochs: every training example over all training time (the
    book's closing line, the stored trial's and the study's)."""
    seconds = sum(e.seconds for e in epochs)
    return sum(e.examples_per_sec * e.seconds for e in epochs) / seconds if seconds else 0.0


def diverged_loss(classes: int, epoch: int = 2) -> float:
    """The mean training loss of an epoch above which a run has diverged: DIVERGED_FACTOR
    x ln(classes), twice that for the first epoch (see the module's docstring)."""
    return DIVERGED_FACTOR * (2 if epoch == 1 else 1) * math.log(classes)


def blew_up(loss: float, epoch: int, classes: int) -> bool:
    """Whether an epoch's mean training loss says the run has diverged."""
    return not loss <= diverged_loss(classes, epoch)  # NaN and infinity too


def _diverged(epoch: int, train_loss: float, config: TrainConfig, classes: int) -> str:
    factor = DIVERGED_FACTOR * (2 if epoch == 1 else 1)
    why = "" if not math.isfinite(train_loss) else \
        f", above {factor:g} ln {classes} = {diverged_loss(classes, epoch):.2f}"
    return (f"diverged at epoch {epoch}: train loss is {train_loss:.4g}{why} (lr "
            f"{config.lr:.4g} with {config.optimizer} may be too large)")


def train(spec: LeNetSpec | None = None, config: TrainConfig | None = None, *,
          engine: str = "mxnet", device: str = "auto", data: Dataset | None = None,
          subset: int | None = None, validation: int = 0, data_dir: str | Path | None = None,
          keep_weights: bool = False, test_each_epoch: bool = True,
          on_download: Callable[[str, int, int], None] | None = None,
          on_start: Callable[[TrainResult, Dataset], None] | None = None,
          on_batch: Callable[[int], None] | None = None,
          on_epoch: Callable[[EpochMetrics], None] | None = None) -> TrainResult:
    """Train one network; the defaults are the book's run.

    `on_epoch` is called after every finished epoch (an exception it raises ends the
    run). `on_start(result, data)` is called once the network is on its device,
    `on_batch(k)` after the k-th batch of an epoch, and `on_download(file, done, total)`
    while missing dataset files are downloaded. With `keep_weights`, a completed run's
    result carries the trained parameters as numpy arrays under engine-neutral names
    (see Session.weights). `validation` holds that many training images out
    (Dataset.hold_out, after `subset`) and measures the network on them every epoch.
    """
    return train_members(
        spec or LeNetSpec(), [config or TrainConfig()], engine=engine, device=device, data=data,
        subset=subset, validation=validation, data_dir=data_dir, keep_weights=keep_weights,
        test_each_epoch=test_each_epoch, on_download=on_download,
        on_start=on_start and (lambda results, data: on_start(results[0], data)),
        on_batch=on_batch, on_epoch=on_epoch and (lambda _, metrics: on_epoch(metrics)))[0]


def train_members(spec: LeNetSpec, configs: list[TrainConfig], *, engine: str = "mxnet",
                  device: str = "auto", data: Dataset | None = None, subset: int | None = None,
                  validation: int = 0, data_dir: str | Path | None = None,
                  keep_weights: bool = False, test_each_epoch: bool = True,
                  on_download: Callable[[str, int, int], None] | None = None,
                  on_start: Callable[[list[TrainResult], Dataset], None] | None = None,
                  on_batch: Callable[[int], None] | None = None,
                  on_epoch: Callable[[int, EpochMetrics], bool | None] | None = None,
                  ) -> list[TrainResult]:
    """Train len(configs) networks of one spec: one alone, several (torch, one
    engines.fuse_key) as one fused model; one result per config, in order.

    Each member runs as it would alone: its seed shuffles its data and sets its initial
    weights, and its result holds its own metrics. A member whose loss diverges
    (diverged_loss) is frozen and marked diverged while the others go on;
    `on_epoch(member, metrics)` returning True stops that member too (pruning). Without
    `test_each_epoch`, the test set is measured after the last epoch only (NaN before).
    """
    for config in configs:
        check_fits_data(spec, config)
    backend = get_engine(engine)
    chosen = backend.resolve_device(parse_device(device))
    if data is None:
        data = load_dataset(configs[0].dataset, data_dir=data_dir, progress=on_download)
    if subset is not None:
        data = data.subset(subset)
    data = data.hold_out(validation)
    session = backend.session(spec, configs, data, chosen)
    n = len(data.train_labels)
    results = [TrainResult(spec=spec, config=config, engine=engine,
                           engine_version=backend.version(), device=str(session.device),
                           device_name=backend.device_name(chosen), train_examples=n,
                           test_examples=len(data.test_labels),
                           valid_examples=data.validation) for config in configs]
    if on_start:
        on_start(results, data)
    rngs = [np.random.default_rng(config.seed) for config in configs]
    running = list(range(len(configs)))
    for epoch in range(1, configs[0].epochs + 1):
        totals = session.train_epoch(np.stack([rng.permutation(n) for rng in rngs]),
                                     on_batch=on_batch)
        losses = {k: totals[k].loss_sum / totals[k].examples for k in running}
        sane = [k for k in running if not blew_up(losses[k], epoch, spec.num_classes)]
        last = epoch == configs[0].epochs
        test = session.evaluate("test") if sane and (test_each_epoch or last) else []
        valid = session.evaluate("valid") if sane and data.validation else []
        for member in list(running):
            result, part, loss = results[member], totals[member], losses[member]
            metrics = EpochMetrics(epoch, loss, part.correct / part.examples,
                                   test[member] if member in sane and test else math.nan,
                                   speed(part.examples, part.seconds), part.seconds,
                                   valid[member] if member in sane and valid else math.nan)
            result.epochs.append(metrics)
            if member not in sane:
                result.status, result.reason = Status.DIVERGED, _diverged(
                    epoch, loss, result.config, spec.num_classes)
            if member not in sane or (on_epoch and on_epoch(member, metrics)):
                session.freeze(member)
                running.remove(member)
        if not running:
            break
    if keep_weights:
        for member, result in enumerate(results):
            if result.status is Status.COMPLETE:
                result.weights = session.weights(member)
    return results
