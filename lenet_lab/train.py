"""Engine-neutral training run with the book's train_ch5 semantics.

Per epoch: shuffle (a numpy generator seeded by config.seed, so both engines see the
same batches), one pass of minibatch updates, then the test accuracy. Examples/sec
counts training examples over training time only, evaluation excluded, as the book
does; the engine synchronises the device before it reads the clock. A loss that turns
NaN or infinite ends the run as diverged instead of raising.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from lenet_lab.data import DATASET_INFO, Dataset, load_dataset
from lenet_lab.engines import get_engine, parse_device
from lenet_lab.spec import LeNetSpec, Status, TrainConfig, check_fits_data

__all__ = ["EpochMetrics", "TrainResult", "fuse_key", "train", "train_fused"]


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    test_acc: float  # NaN when the epoch diverged
    examples_per_sec: float
    seconds: float  # training time of this epoch

    def line(self, epochs: int) -> str:
        return (f"epoch {self.epoch:>2}/{epochs}  loss {self.train_loss:.3f}, train acc "
                f"{self.train_acc:.3f}, test acc {self.test_acc:.3f}  "
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
    epochs: list[EpochMetrics] = field(default_factory=list)
    status: Status = Status.COMPLETE  # COMPLETE or DIVERGED
    reason: str | None = None
    weights: dict[str, np.ndarray] | None = field(default=None, repr=False)  # see keep_weights

    @property
    def final(self) -> EpochMetrics:
        return self.epochs[-1]

    def intro(self, data: Dataset, *, subset: bool = False) -> str:
        """What is trained, on what, where: the lines `lenet-lab train` starts with."""
        sample = f"{self.train_examples} train / {self.test_examples} test"
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
        seconds = sum(e.seconds for e in self.epochs)
        return self.train_examples * len(self.epochs) / seconds if seconds else 0.0


def fuse_key(spec: LeNetSpec, config: TrainConfig) -> tuple | None:
    """Trials with equal keys can train as one fused model (train_fused); None: this one
    cannot. Members share the network and the loop's shape; they may differ in seed, lr,
    weight decay and init. Dropout and batch norm draw random numbers or keep running
    statistics per call, which a vmapped model cannot reproduce member by member."""
    if spec.dropout or spec.batch_norm:
        return None
    return (spec, config.dataset, config.batch_size, config.epochs, config.optimizer)


def _diverged(epoch: int, train_loss: float, config: TrainConfig) -> str:
    return (f"diverged at epoch {epoch}: train loss is {train_loss} (lr {config.lr} with "
            f"{config.optimizer} may be too large)")


def train(spec: LeNetSpec | None = None, config: TrainConfig | None = None, *,
          engine: str = "mxnet", device: str = "auto", data: Dataset | None = None,
          subset: int | None = None, data_dir: str | Path | None = None,
          keep_weights: bool = False,
          on_download: Callable[[str, int, int], None] | None = None,
          on_start: Callable[[TrainResult, Dataset], None] | None = None,
          on_batch: Callable[[int], None] | None = None,
          on_epoch: Callable[[EpochMetrics], None] | None = None) -> TrainResult:
    """Train one network; the defaults are the book's run.

    `on_epoch` is called after every finished epoch (a sweep reports and prunes there;
    an exception it raises ends the run). `on_start(result, data)` is called once the
    network is on its device, `on_batch(k)` after the k-th batch of an epoch, and
    `on_download(file, done, total)` while missing dataset files are downloaded.
    With `keep_weights`, a completed run's result carries the trained parameters as
    numpy arrays under engine-neutral names (see Session.weights).
    """
    spec = spec or LeNetSpec()
    config = config or TrainConfig()
    check_fits_data(spec, config)
    backend = get_engine(engine)
    chosen = backend.resolve_device(parse_device(device))
    if data is None:
        data = load_dataset(config.dataset, data_dir=data_dir, progress=on_download)
    if subset is not None:
        data = data.subset(subset)
    session = backend.session(spec, config, data, chosen)
    n = len(data.train_labels)
    result = TrainResult(
        spec=spec, config=config, engine=engine, engine_version=backend.version(),
        device=str(session.device),
        device_name=backend.device_name(chosen),
        train_examples=n, test_examples=len(data.test_labels))
    if on_start:
        on_start(result, data)
    rng = np.random.default_rng(config.seed)
    for epoch in range(1, config.epochs + 1):
        totals = session.train_epoch(rng.permutation(n), on_batch=on_batch)
        train_loss = totals.loss_sum / totals.examples
        speed = totals.examples / totals.seconds if totals.seconds else 0.0
        if not math.isfinite(train_loss):
            result.epochs.append(EpochMetrics(epoch, train_loss, totals.correct / totals.examples,
                                              math.nan, speed, totals.seconds))
            result.status, result.reason = Status.DIVERGED, _diverged(epoch, train_loss, config)
            break
        metrics = EpochMetrics(epoch, train_loss, totals.correct / totals.examples,
                               session.evaluate(), speed, totals.seconds)
        result.epochs.append(metrics)
        if on_epoch:
            on_epoch(metrics)
    if keep_weights and result.status is Status.COMPLETE:
        result.weights = session.weights()
    return result


def train_fused(spec: LeNetSpec, configs: list[TrainConfig], *, device: str = "auto",
                data: Dataset, keep_weights: bool = False,
                on_epoch: Callable[[int, EpochMetrics], bool] | None = None
                ) -> list[TrainResult]:
    """Train len(configs) networks of one spec as one fused model (torch engine).

    Each member runs as `train` would run it alone: its seed shuffles its data and sets
    its initial weights, and its result holds its own metrics. A member whose loss turns
    NaN or infinite is frozen and marked diverged while the others go on;
    `on_epoch(member, metrics)` returning True stops that member too (pruning).
    """
    for config in configs:
        check_fits_data(spec, config)
    backend = get_engine("torch")  # first: it sets torch's threads as the engine does
    from lenet_lab.engines.torch_fused import FusedSession

    chosen = backend.resolve_device(parse_device(device))
    session = FusedSession(spec, configs, data, chosen)
    n = len(data.train_labels)
    results = [TrainResult(spec=spec, config=config, engine="torch",
                           engine_version=backend.version(), device=str(chosen),
                           device_name=backend.device_name(chosen), train_examples=n,
                           test_examples=len(data.test_labels)) for config in configs]
    rngs = [np.random.default_rng(config.seed) for config in configs]
    running = set(range(len(configs)))
    for epoch in range(1, configs[0].epochs + 1):
        if not running:
            break
        orders = np.stack([rng.permutation(n) for rng in rngs])
        totals = session.train_epoch(orders)
        accuracies = session.evaluate()
        for member in sorted(running):
            result, part = results[member], totals[member]
            train_loss = part.loss_sum / part.examples
            speed = part.examples / part.seconds if part.seconds else 0.0
            finite = math.isfinite(train_loss)
            metrics = EpochMetrics(epoch, train_loss, part.correct / part.examples,
                                   accuracies[member] if finite else math.nan, speed,
                                   part.seconds)
            result.epochs.append(metrics)
            if not finite:
                result.status = Status.DIVERGED
                result.reason = _diverged(epoch, train_loss, result.config)
            if not finite or (on_epoch and on_epoch(member, metrics)):
                session.freeze(member)
                running.discard(member)
    if keep_weights:
        for member, result in enumerate(results):
            if result.status is Status.COMPLETE:
                result.weights = session.weights(member)
    return results
