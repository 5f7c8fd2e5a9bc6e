"""The one description of a LeNet variant (LeNetSpec) and of how to train it (TrainConfig).

Defaults are exactly the book's network and training run (D2L 6.6, MXNet edition):
conv 6 and 16 channels, 5x5 kernels, the first conv padded to keep 28x28, 2x2 average
pooling with stride 2, sigmoid, dense 120 -> 84 -> 10, Xavier initialisation, SGD with
lr 0.9, batch 256, 10 epochs, Fashion-MNIST.

Padding rule: a padded conv uses (kernel_size - 1) // 2 on each side, which keeps the
size for odd kernels (2 for the book's 5x5). `padding="first"` pads only the first conv
(the book), `"all"` pads every conv, `"none"` pads none.

Each field carries its help text as metadata (the CLI's option help, README's table);
how a field is written as text, in SQL, in Optuna's params and on the command line is
lenet_lab.fields's (its kind, read off the field's type).

Every block ends in its activation; a pooling layer (pool_size 2, stride 2, floor)
follows every conv block; the hidden dense blocks are followed by dropout when
`dropout > 0`; batch normalisation, when on, sits between a layer and its activation.
"""

from __future__ import annotations

import json
import math
from dataclasses import Field, asdict, dataclass, field, fields
from typing import Any, Callable

from lenet_lab.errors import InfeasibleSpec, SpecError

__all__ = [
    "ACTIVATIONS",
    "CHOICES",
    "DATASETS",
    "INITS",
    "OPTIMIZERS",
    "PADDINGS",
    "POOLINGS",
    "INPUT_SHAPE",
    "LayerShape",
    "LeNetSpec",
    "MAX_SEED",
    "SPEC_FIELDS",
    "TrainConfig",
    "check_fits_data",
]

ACTIVATIONS = ("sigmoid", "relu", "tanh", "leaky_relu", "elu", "gelu")
POOLINGS = ("avg", "max")
PADDINGS = ("first", "all", "none")
OPTIMIZERS = ("sgd", "momentum", "adam")
INITS = ("xavier", "normal", "kaiming")
DATASETS = ("fashion-mnist", "mnist")
INPUT_SHAPE = (1, 28, 28)  # (channels, height, width) of both datasets
POOL_SIZE = 2  # the book's 2x2 windows with stride 2
CHOICES = {"padding": PADDINGS, "pooling": POOLINGS, "activation": ACTIVATIONS,
           "optimizer": OPTIMIZERS, "init": INITS, "dataset": DATASETS}


def _help(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class LayerShape:
    """One logical layer as the book's shape table lists it."""

    name: str  # conv0, pool0, ..., dense0, ...
    output_shape: tuple[int, ...]  # for a batch of one, e.g. (1, 6, 28, 28)
    params: int  # trainable parameters


def _check_choice(field: str, value: Any) -> None:
    choices = CHOICES[field]
    if value not in choices:
        raise SpecError(f"{field} must be one of {', '.join(choices)}, not {value!r}")


MAX_SEED = 2**32 - 1  # numpy's, MXNet's and torch's seeds all take this range
MAX_EPOCHS = 10_000  # far beyond any exercise (the book's: 10), within a database integer
MAX_LR = 1e12  # far above any rate that trains (such runs diverge and are recorded so),
# and a float32 still: above 3.4e38 the framework cannot hold the rate at all
# Far beyond any LeNet the exercises need (improve's largest: 650,000 parameters), small
# enough that a typo such as --conv-channels 100000 is one line, not an allocation error.
MAX_PARAMS = 50_000_000
MAX_VALUES = 2_000_000  # outputs of all layers for one example (the book's: 8,000)


def _check_int(field: str, value: Any, *, minimum: int, maximum: int | None = None) -> None:
    whole = not isinstance(value, bool) and isinstance(value, int)
    if not whole or value < minimum or (maximum is not None and value > maximum):
        rule = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise SpecError(f"{field} must be a whole number {rule}, not {value!r}")


def _check_number(field: str, value: Any, *, rule: str, ok: Callable[[float], bool]) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and ok(value)):
        raise SpecError(f"{field} must be a number {rule}, not {value!r}")


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class LeNetSpec:
    """A LeNet-style network: conv blocks (conv, activation, 2x2 pool), then dense blocks."""

    conv_channels: tuple[int, ...] = _help(
        "output channels of each conv layer, comma-separated (one layer per number)", (6, 16))
    kernel_size: int = _help("conv window size (square)", 5)
    padding: str = _help("which convs are padded by (k-1)//2: first (the book), all or none",
                         "first")
    pooling: str = _help("2x2 stride-2 pooling after each conv", "avg")
    activation: str = _help("activation after every conv and hidden dense layer", "sigmoid")
    dense_units: tuple[int, ...] = _help(  # hidden widths; the output layer is num_classes
        "hidden dense widths, comma-separated; 'none' for no hidden layer", (120, 84))
    num_classes: int = _help("outputs of the last dense layer", 10)
    batch_norm: bool = _help("batch normalisation before each activation", False)
    dropout: float = _help("dropout rate after each hidden dense layer", 0.0)

    def __post_init__(self) -> None:
        for f in fields(self):  # the width lists
            if not isinstance(f.default, tuple):
                continue
            # Lists (from JSON or TOML) become tuples so specs stay hashable and comparable.
            value = _as_tuple(getattr(self, f.name))
            object.__setattr__(self, f.name, value)
            if not isinstance(value, tuple):
                raise SpecError(f"{f.name} must be a list of whole numbers, not {value!r}")
            for width in value:
                _check_int(f.name, width, minimum=1)
        if not self.conv_channels:
            raise SpecError("conv_channels needs at least one conv layer, e.g. 6,16")
        _check_int("kernel_size", self.kernel_size, minimum=1)
        _check_choice("padding", self.padding)
        _check_choice("pooling", self.pooling)
        _check_choice("activation", self.activation)
        _check_int("num_classes", self.num_classes, minimum=2)
        if not isinstance(self.batch_norm, bool):
            raise SpecError(f"batch_norm must be true or false, not {self.batch_norm!r}")
        _check_number("dropout", self.dropout, rule="in [0, 1)", ok=lambda v: 0 <= v < 1)
        self._check_size(self.layer_shapes())  # rejects maps that vanish, and giants

    def _check_size(self, layers: list[LayerShape]) -> None:
        params = sum(layer.params for layer in layers)
        values = sum(math.prod(layer.output_shape) for layer in layers)
        if params > MAX_PARAMS or values > MAX_VALUES:
            raise SpecError(
                f"this network has {params:,} parameters and {values:,} values per example in "
                f"its layers, more than lenet-lab trains (at most {MAX_PARAMS:,} and "
                f"{MAX_VALUES:,}: about {4 * MAX_VALUES * 256 / 1e9:.0f} GB a batch of 256): "
                f"use fewer conv_channels or dense_units")

    def conv_padding(self, index: int) -> int:
        padded = self.padding == "all" or (self.padding == "first" and index == 0)
        return (self.kernel_size - 1) // 2 if padded else 0

    def layer_shapes(self) -> list[LayerShape]:
        """Output shape and parameter count of every logical layer for a 1x1x28x28 input.

        This is the reference both engines are tested against.
        """
        channels, height, width = INPUT_SHAPE
        norm = 2 if self.batch_norm else 0  # gamma and beta per channel or unit
        layers = []
        for i, out_channels in enumerate(self.conv_channels):
            pad = self.conv_padding(i)
            size_in = f"{height}x{width}"
            height += 2 * pad - self.kernel_size + 1
            width += 2 * pad - self.kernel_size + 1
            if height < 1 or width < 1:
                raise InfeasibleSpec(
                    f"conv{i} ({self.kernel_size}x{self.kernel_size} kernel, padding {pad}) gets a "
                    f"{size_in} input and would output {height}x{width}: use fewer conv layers, "
                    f"a smaller kernel_size or padding='all'")
            params = out_channels * (channels * self.kernel_size**2 + 1 + norm)
            channels = out_channels
            layers.append(LayerShape(f"conv{i}", (1, channels, height, width), params))
            if height < POOL_SIZE or width < POOL_SIZE:
                raise InfeasibleSpec(
                    f"pool{i} gets a {height}x{width} feature map, smaller than its 2x2 window: "
                    f"use fewer conv layers, a smaller kernel_size or padding='all'")
            height, width = height // POOL_SIZE, width // POOL_SIZE
            layers.append(LayerShape(f"pool{i}", (1, channels, height, width), 0))
        features = channels * height * width
        widths = (*self.dense_units, self.num_classes)
        for j, units in enumerate(widths):
            hidden = j < len(widths) - 1
            layers.append(LayerShape(f"dense{j}", (1, units),
                                     units * (features + 1 + (norm if hidden else 0))))
            features = units
        return layers

    @property
    def param_count(self) -> int:
        return sum(layer.params for layer in self.layer_shapes())

    def layer_flops(self) -> dict[str, int]:
        """Floating-point operations of each layer's forward pass for one example: a
        multiply-add counts 2 (convs 2*k*k*C_in per output value, dense 2*inputs per
        unit); activations, pooling and batch norm cost one per value they touch."""
        flops, previous = {}, INPUT_SHAPE
        for layer in self.layer_shapes():
            values = math.prod(layer.output_shape[1:])
            if layer.name.startswith("conv"):
                work = values * (2 * self.kernel_size ** 2 * previous[0] + 1 + self.batch_norm)
            elif layer.name.startswith("pool"):
                work = math.prod(previous) if len(previous) == 3 else 0
            else:
                work = values * (2 * math.prod(previous) + 1 + self.batch_norm)
            flops[layer.name] = work
            previous = layer.output_shape[1:]
        return flops

    @property
    def flops_per_example(self) -> int:
        """Forward-pass FLOPs for one example (layer_flops, summed)."""
        return sum(self.layer_flops().values())

    @property
    def train_flops_per_example(self) -> int:
        """A training step's FLOPs for one example: forward, and a backward pass that costs
        about twice the forward (gradients of both inputs and weights)."""
        return 3 * self.flops_per_example

    def describe(self) -> str:
        """One line, e.g. "conv 6,16 k5 avg-pool sigmoid, dense 120,84; 61,706 parameters"."""
        extras = (", batch norm" if self.batch_norm else "") + (
            f", dropout {self.dropout}" if self.dropout else "")
        def widths(values: tuple[int, ...]) -> str:
            return ",".join(map(str, values)) or "none"

        return (f"conv {widths(self.conv_channels)} k{self.kernel_size} {self.pooling}-pool "
                f"{self.activation}, dense {widths(self.dense_units)}{extras}; "
                f"{self.param_count:,} parameters")

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LeNetSpec:
        return _from_dict(cls, data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LeNetSpec:
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class TrainConfig:
    """How to train: the book's train_ch5 with a few more knobs for the exercises."""

    lr: float = _help("learning rate", 0.9)
    epochs: int = _help("passes over the training set", 10)
    batch_size: int = _help("examples per minibatch", 256)
    optimizer: str = _help("sgd, momentum (SGD with momentum 0.9) or adam", "sgd")
    init: str = _help("weight initialisation: xavier (the book), normal (sigma 0.01) or kaiming",
                      "xavier")
    weight_decay: float = _help("L2 penalty on all parameters", 0.0)  # added to the gradient
    seed: int = _help("seed for initialisation and shuffling", 0)
    dataset: str = _help("training and test data", "fashion-mnist")

    def __post_init__(self) -> None:
        _check_number("lr", self.lr, rule=f"> 0 and at most {MAX_LR:g}",
                      ok=lambda v: 0 < v <= MAX_LR)
        _check_int("epochs", self.epochs, minimum=1, maximum=MAX_EPOCHS)
        _check_int("batch_size", self.batch_size, minimum=1)
        _check_choice("optimizer", self.optimizer)
        _check_choice("init", self.init)
        _check_number("weight_decay", self.weight_decay, rule=f"from 0 to {MAX_LR:g}",
                      ok=lambda v: 0 <= v <= MAX_LR)
        _check_int("seed", self.seed, minimum=0, maximum=MAX_SEED)
        _check_choice("dataset", self.dataset)

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return _from_dict(cls, data)


def _to_dict(obj: Any) -> dict[str, Any]:
    # JSON-ready and key-sorted: tuples become lists so a stored spec round-trips.
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in sorted(asdict(obj).items())}


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    if not isinstance(data, dict):
        raise SpecError(f"{cls.__name__} needs a mapping of field names to values, not {data!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SpecError(f"unknown {cls.__name__} field(s) {', '.join(unknown)}; "
                        f"known: {', '.join(sorted(known))}")
    return cls(**data)


SPEC_FIELDS: dict[str, Field] = {f.name: f for cls in (LeNetSpec, TrainConfig) for f in fields(cls)}
def check_fits_data(spec: LeNetSpec, config: TrainConfig) -> None:
    """A spec that its dataset contradicts: fewer outputs than the dataset has classes."""
    from lenet_lab.data import DATASET_INFO

    info = DATASET_INFO[config.dataset]
    if spec.num_classes < len(info.classes):
        raise SpecError(f"num_classes {spec.num_classes} is below {info.title}'s "
                        f"{len(info.classes)} classes: use num_classes {len(info.classes)} "
                        f"or more")

