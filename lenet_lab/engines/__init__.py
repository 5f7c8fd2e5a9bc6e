"""Engines: one module per framework behind one small interface.

An engine turns a LeNetSpec into a network and trains it. Everything that crosses this
boundary is plain Python or numpy: no framework tensor leaks out. Frameworks are
imported only when their engine is first asked for, so a machine with only one of them
installed runs that one.

A session trains K members at once: K = 1 is a plain run; K > 1 (torch only) trains K
trials of one network shape as one fused model. Which trials may fuse is decided here,
without torch (`fuse_key`).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol

import numpy as np

from lenet_lab.data import Dataset
from lenet_lab.errors import DeviceError, EngineUnavailable, SpecError
from lenet_lab.spec import LayerShape, LeNetSpec, TrainConfig

__all__ = ["ENGINES", "Device", "DeviceChoice", "Engine", "EpochTotals", "Session", "eval_splits",
           "fuse_key", "get_engine", "neutral_names", "parse_device", "use_threads"]

ENGINES = ("mxnet", "torch")
EVAL_BATCH = 1024  # evaluation batch size; it changes speed, not the accuracy


@dataclass(frozen=True)
class Device:
    kind: str  # "cpu" or "gpu"
    index: int = 0

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"gpu:{self.index}"


def parse_device(text: str) -> Device | None:
    """'cpu', 'gpu', 'gpu:N' -> Device; 'auto' -> None (the engine decides)."""
    text = text.strip().lower()
    if text == "auto":
        return None
    match = re.fullmatch(r"(cpu|gpu|cuda)(?::(\d+))?", text)
    if not match or (match[1] == "cpu" and match[2]):
        raise SpecError(f"device must be auto, cpu, gpu or gpu:N, not {text!r}")
    return Device("cpu") if match[1] == "cpu" else Device("gpu", int(match[2] or 0))


def pick_device(device: Device | None, visible: int, engine: str) -> Device:
    """`device`, or for auto the first GPU when the engine sees one; errors if absent."""
    if device is None:
        return Device("gpu") if visible else Device("cpu")
    if device.kind == "gpu" and device.index >= visible:
        seen = "no GPU" if visible == 0 else f"only {visible} GPU(s) (gpu:0..gpu:{visible - 1})"
        raise DeviceError(f"{engine} sees {seen}, so {device} is not available: "
                          f"use --device cpu or --device auto")
    return device


NEUTRAL_NAMES = {2: ("weight", "bias"), 4: ("bn_gamma", "bn_beta", "bn_mean", "bn_var")}


def neutral_names(layers: Iterable[tuple[str, Iterable[Any]]],
                  tensors: Callable[[Any], tuple | None]) -> Iterator[tuple[str, Any]]:
    """Each layer's parameters and batch-norm statistics under engine-neutral names.

    `layers` gives (layer name, its modules); `tensors(module)` gives a conv or dense
    module's (weight, bias), a batch norm's (gamma, beta, running mean, running var), or
    None for modules without parameters.
    """
    for layer, modules in layers:
        for module in modules:
            found = tensors(module)
            for name, tensor in zip(NEUTRAL_NAMES[len(found)] if found else (), found or ()):
                yield f"{layer}.{name}", tensor


class DeviceChoice:
    """Engines' shared device rule: `pick_device` over the GPUs the engine sees."""

    name: str

    def gpu_count(self) -> int:
        raise NotImplementedError

    def resolve_device(self, device: Device | None) -> Device:
        return pick_device(device, self.gpu_count(), self.name)


@dataclass(frozen=True)
class EpochTotals:
    """One epoch of training, read from the device once, at its end."""

    loss_sum: float  # summed per-example loss
    correct: int
    examples: int
    seconds: float  # training only, device synchronised before the clock was read


class Session(Protocol):
    """K members (networks of one spec, each with its own training config) built,
    initialised and placed on a device, with their data beside them. K = 1 is a plain
    run; frozen members (diverged or pruned) stop training while the others go on."""

    device: Device
    members: int

    def train_epoch(self, orders: np.ndarray, *,
                    on_batch: Callable[[int], None] | None = None) -> list[EpochTotals]:
        """One pass over the training set; `orders` (K, n) is each member's example order."""

    def evaluate(self, split: str = "test") -> list[float]:
        """Each member's accuracy on a split of eval_splits (inference mode)."""

    def freeze(self, member: int) -> None:
        """Stop updating a member; the others go on unchanged."""

    def weights(self, member: int) -> dict[str, np.ndarray]:
        """A member's trained parameters as numpy arrays under engine-neutral names:
        `<layer>.weight`, `<layer>.bias`, and with batch norm `<layer>.bn_gamma`,
        `.bn_beta`, `.bn_mean`, `.bn_var` (layer names as in spec.layer_shapes())."""

    def reference_epoch(self, order: np.ndarray, images: np.ndarray,
                        labels: np.ndarray) -> EpochTotals:
        """The book's train_ch5 loop over host arrays, per-batch copies and host syncs
        (what `lenet-lab bench` compares train_epoch with; K = 1 only)."""


class Engine(Protocol):
    name: str

    def version(self) -> str: ...

    def layer_shapes(self, spec: LeNetSpec) -> list[LayerShape]:
        """Shapes and trainable parameter counts measured by a forward pass of 1x1x28x28."""

    def gpu_count(self) -> int: ...

    def device_name(self, device: Device) -> str:
        """What the device is, for the record: the CPU model or the GPU's name."""

    def activations(self, spec: LeNetSpec, weights: dict[str, np.ndarray], images: np.ndarray,
                    layers: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Outputs of the named layers (inference mode, on the CPU) for images (N, 1, 28, 28),
        with the network's parameters set from `weights` (see Session.weights)."""

    def resolve_device(self, device: Device | None) -> Device:
        """The device to use (None: auto); raises DeviceError when it is not there."""

    def session(self, spec: LeNetSpec, configs: list[TrainConfig], data: Dataset,
                device: Device, *, mode: str = "default") -> Session:
        """A session of len(configs) members (more than one: configs of one fuse_key).
        mode: "default" (lenet-lab's path), "book" (as the book builds the network:
        MXNet not hybridized), or an engine's own, e.g. torch's "compile"."""


def eval_splits(data: Dataset) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The splits a session evaluates, by name: `test`, and `valid` when the data holds
    one out (Dataset.hold_out)."""
    splits = {"test": (data.test_images, data.test_labels)}
    if data.validation:
        splits["valid"] = (data.valid_images, data.valid_labels)
    return splits


def fuse_key(spec: LeNetSpec, config: TrainConfig) -> tuple | None:
    """Trials with equal keys can train as one fused model (torch); None: this one cannot.
    Members share the network and the loop's shape; they may differ in seed, lr, weight
    decay and init. Dropout and batch norm draw random numbers or keep running
    statistics per call, which a vmapped model cannot reproduce member by member."""
    if spec.dropout or spec.batch_norm:
        return None
    return (spec, config.dataset, config.batch_size, config.epochs, config.optimizer)


def check_members(spec: LeNetSpec, configs: list[TrainConfig], engine: str) -> None:
    """Several members need one fusable key, and an engine that fuses (torch)."""
    if len(configs) > 1:
        keys = {fuse_key(spec, c) for c in configs}
        if engine != "torch" or len(keys) != 1 or None in keys:
            raise SpecError("fused members need the torch engine and one fusable spec, batch "
                            "size, epochs and optimizer")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _set_torch_threads() -> None:
    # Importing mxnet sets OpenMP's thread count to 1 for the whole process, which torch
    # then inherits, halving its speed on two cores; sweep workers share the cores out
    # through OMP_NUM_THREADS.
    if "torch" in sys.modules:
        wanted = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(wanted) if wanted.isascii() and wanted.isdigit() else \
            len(os.sched_getaffinity(0))
        sys.modules["torch"].set_num_threads(threads)


@contextlib.contextmanager
def use_threads(threads: int) -> Iterator[None]:
    """This process trains with `threads` framework threads (a worker's share of the
    cores), then goes back: OMP_NUM_THREADS for frameworks yet to be imported and for the
    record (sweep.trial), torch's setting for torch already imported. MXNet 1.9 trains
    with one thread in any case: its import sets OpenMP's count to 1."""
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    _set_torch_threads()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = before
        _set_torch_threads()


def get_engine(name: str) -> Engine:
    if name not in ENGINES:
        raise SpecError(f"engine must be one of {', '.join(ENGINES)}, not {name!r}")
    try:
        module = importlib.import_module(f"lenet_lab.engines.{name}_engine")
    except ImportError as exc:
        raise EngineUnavailable(
            f"the {name} engine needs {exc.name or name}, which is not installed: "
            f"pip install \"lenet-lab[{name}]\"" + (" (or [cu112] for CUDA 11.2 GPUs)"
                                                   if name == "mxnet" else "")) from None
    _set_torch_threads()
    return module.ENGINE
