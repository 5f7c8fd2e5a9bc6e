"""`lenet-lab bench`: lenet-lab's training path against a book-style reference loop.

Both train the default spec (the book's LeNet) on Fashion-MNIST in the same process, on
the same device, with the same batch size:

- reference: the structure of the book's `train_ch5`, labelled as such. The network is
  built as the book builds it (MXNet: not hybridized), every batch is gathered on the
  host and copied to the device, and the loss and accuracy are read back to the host
  after every batch (the book's Accumulator).
- lenet-lab: the path every `train` and `sweep` uses. The dataset is on the device once,
  batches are gathered there by index, metrics stay on the device until the epoch ends,
  MXNet's network is hybridized with static allocation.
- optional engine modes (torch: `compile`) run lenet-lab's path with that mode.
- `fuse` K (torch): K copies of the network trained as one fused model (seeds 0..K-1,
  the torch engine's fused session); their examples/sec is summed over the K members, so
  "x lenet-lab" above 1 means K fused trials finish sooner than K trials one by one.
  With the graphs mode among `modes`, each K also runs graphed.

Timing: each epoch is timed from a synchronised device to a synchronised device;
evaluation is not run; the first `warmup` epochs of each path are excluded from the
median (and reported apart: a compile mode's one-time cost shows there). Measured
epochs of the paths alternate, so drift on a busy machine hits all paths alike.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import numpy as np

from lenet_lab.data import load_dataset
from lenet_lab.engines import get_engine, parse_device
from lenet_lab.errors import SpecError
from lenet_lab.spec import LeNetSpec, TrainConfig
from lenet_lab.train import flops_per_sec, speed

__all__ = ["BenchResult", "PathTiming", "parse_counts", "run_bench"]

REFERENCE = "book-style reference loop"
OURS = "lenet-lab"


@dataclass
class PathTiming:
    path: str  # REFERENCE, OURS, or "lenet-lab (<mode>)"
    mode: str
    warmup_seconds: list[float] = field(default_factory=list)
    examples_per_sec: list[float] = field(default_factory=list)  # measured epochs

    @property
    def median(self) -> float:
        return statistics.median(self.examples_per_sec) if self.examples_per_sec else 0.0


@dataclass
class BenchResult:
    engine: str
    engine_version: str
    device: str
    device_name: str
    batch_size: int
    train_examples: int
    epochs: int
    warmup: int
    paths: list[PathTiming]
    spec: LeNetSpec = field(default_factory=LeNetSpec)

    @property
    def ratio(self) -> float:
        """lenet-lab's median examples/sec over the reference loop's."""
        reference = next(p for p in self.paths if p.path == REFERENCE)
        ours = next(p for p in self.paths if p.path == OURS)
        return ours.median / reference.median if reference.median else 0.0

    def table(self) -> tuple[list[str], list[list[str]], str]:
        """(header, rows, title) for a terminal table."""
        title = (f"{self.engine} {self.engine_version} on {self.device} ({self.device_name}), "
                 f"batch {self.batch_size}, {self.train_examples} examples/epoch, median of "
                 f"{self.epochs} epochs after {self.warmup} warm-up")
        ours = next(p for p in self.paths if p.path == OURS).median
        header = ["path", "examples/sec (median)", "min", "max", "GFLOP/s", "x lenet-lab",
                  "warm-up epoch(s) s"]
        rows = [[t.path, f"{t.median:,.1f}", f"{min(t.examples_per_sec):,.1f}",
                 f"{max(t.examples_per_sec):,.1f}", f"{self.gflops(t.median):.1f}",
                 f"{t.median / ours:.2f}" if ours else "-",
                 ", ".join(f"{s:.1f}" for s in t.warmup_seconds) or "-"] for t in self.paths]
        return header, rows, title

    def gflops(self, examples_per_sec: float) -> float:
        """The arithmetic rate that a training speed achieves (train.flops_per_sec)."""
        return flops_per_sec(examples_per_sec, self.spec) / 1e9

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ratio"] = self.ratio
        data["train_flops"] = self.spec.train_flops_per_example  # per example of a step
        for timing, path in zip(data["paths"], self.paths):
            timing["median_examples_per_sec"] = path.median
            timing["median_gflops"] = self.gflops(path.median)
        return data


def parse_counts(text: str | None) -> tuple[int, ...]:
    """`--fuse 1,3,6` -> (1, 3, 6)."""
    try:
        return tuple(int(part) for part in text.split(",")) if text else ()
    except ValueError:
        raise SpecError(f"--fuse takes whole numbers separated by commas, such as 1,3,6, "
                        f"not {text!r}") from None


def run_bench(*, engine: str = "mxnet", device: str = "auto", epochs: int = 5, warmup: int = 1,
              batch_size: int = 256, subset: int | None = None, modes: tuple[str, ...] = (),
              fuse: tuple[int, ...] = (), data_dir: str | None = None,
              progress: Callable[[str, int, int], None] | None = None) -> BenchResult:
    """Median examples/sec of the reference loop, lenet-lab's path, any extra modes and
    fused groups of K trials (their examples/sec summed over the K members)."""
    if epochs < 1 or warmup < 0:
        raise SpecError("bench needs --epochs >= 1 and --warmup >= 0")
    if fuse and min(fuse) < 1:
        raise SpecError(f"bench --fuse takes trial counts of 1 or more, such as 1,3,6, not "
                        f"{','.join(map(str, fuse))}")
    if fuse and engine != "torch":
        raise SpecError("bench --fuse times fused models, which only the torch engine trains: "
                        "add --engine torch")
    backend = get_engine(engine)
    chosen = backend.resolve_device(parse_device(device))
    data = load_dataset("fashion-mnist", data_dir=data_dir)
    if subset:
        data = data.subset(subset)
    spec, config = LeNetSpec(), TrainConfig(batch_size=batch_size, epochs=warmup + epochs)
    plans = [(REFERENCE, "book"), (OURS, "default")] + [(f"{OURS} ({m})", m) for m in modes]
    sessions = [(PathTiming(name, mode), backend.session(spec, [config], data, chosen, mode=mode))
                for name, mode in plans]
    if fuse:  # K = 1 too: the fused model's own cost, beside the plain session's
        from lenet_lab.engines.torch_fused import FusedSession

        fused_modes = ["default"] + [m for m in modes if m == "graphs"]
        sessions += [(PathTiming(f"{OURS} fused x{k}" + (f" ({m})" if m != "default" else ""),
                                 f"fused:{m}"),
                      FusedSession(spec, [replace(config, seed=s) for s in range(k)], data,
                                   chosen, mode=m)) for k in fuse for m in fused_modes]
    rng = np.random.default_rng(0)
    n = len(data.train_labels)
    for epoch in range(warmup + epochs):
        order = rng.permutation(n)
        for timing, session in sessions:
            if progress:
                progress(timing.path, epoch + 1, warmup + epochs)
            if timing.path == REFERENCE:
                totals = session.reference_epoch(order, data.train_images, data.train_labels)
            else:  # every member (one unless fused) the same order; all count
                members = session.train_epoch(np.tile(order, (session.members, 1)))
                totals = replace(members[0], examples=sum(m.examples for m in members))
            if epoch < warmup:
                timing.warmup_seconds.append(totals.seconds)
            else:
                timing.examples_per_sec.append(speed(totals.examples, totals.seconds))
    return BenchResult(engine, backend.version(), str(chosen), backend.device_name(chosen),
                       batch_size, n, epochs, warmup, [timing for timing, _ in sessions],
                       spec)
