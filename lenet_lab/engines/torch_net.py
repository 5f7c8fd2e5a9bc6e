"""PyTorch's LeNet: the network built from a spec, its initialisation and its tensors'
engine-neutral names, shared by the single (torch_engine) and fused (torch_fused) sessions."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from lenet_lab.engines import EVAL_BATCH, Device, neutral_names
from lenet_lab.errors import SpecError
from lenet_lab.spec import LeNetSpec

__all__ = ["MODES", "build_network", "compiled", "cpu_layout", "eval_batch", "initialize",
           "named_tensors", "on_device", "sync", "torch_device"]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "elu": lambda: nn.ELU(1.0),
    "gelu": nn.GELU,
}
# book: as default (eager); compile: torch.compile; graphs: torch.compile's
# "reduce-overhead" mode, which replays the step's kernels as CUDA graphs (GPUs only).
MODES = ("default", "book", "compile", "graphs")


class AvgPool(nn.Module):
    """2x2 average pooling with stride 2. On a CPU, channels-last maps of fewer than 16
    channels (the book's 6) go through oneDNN's depthwise convolution with weights 1/4:
    the same numbers, forward and backward, at 1.8 times the speed of avg_pool2d, whose
    kernels vectorise over channels and fall back to a slow path when a map has fewer
    channels than a vector has lanes (docs/performance.md)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1] if x.dim() == 4 else 0
        if 0 < channels < 16 and x.device.type == "cpu" and _channels_last(x):
            weight = x.new_full((channels, 1, 2, 2), 0.25)
            return nn.functional.conv2d(x, weight.contiguous(memory_format=torch.channels_last),
                                        stride=2, groups=channels)
        return nn.functional.avg_pool2d(x, 2, 2)


def _channels_last(x: torch.Tensor) -> bool:
    try:
        return x.is_contiguous(memory_format=torch.channels_last)
    except RuntimeError:  # inside vmap (fused members), which knows no memory formats
        return False


def build_network(spec: LeNetSpec) -> nn.Sequential:
    """One child per logical layer, named as in spec.layer_shapes()."""
    blocks: list[nn.Module] = []
    channels = 1
    for i, out_channels in enumerate(spec.conv_channels):
        conv = [nn.Conv2d(channels, out_channels, spec.kernel_size, padding=spec.conv_padding(i))]
        if spec.batch_norm:
            conv.append(nn.BatchNorm2d(out_channels))
        blocks.append(nn.Sequential(*conv, ACTIVATIONS[spec.activation]()))
        blocks.append(AvgPool() if spec.pooling == "avg" else nn.MaxPool2d(kernel_size=2, stride=2))
        channels = out_channels
    # Gluon's Dense flattens its input and infers its width; torch needs both spelled out.
    features = spec.layer_shapes()[2 * len(spec.conv_channels) - 1].output_shape
    width = int(np.prod(features[1:]))
    for j, units in enumerate(spec.dense_units):
        dense: list[nn.Module] = [nn.Flatten()] if j == 0 else []
        dense.append(nn.Linear(width, units))
        if spec.batch_norm:
            dense.append(nn.BatchNorm1d(units))
        dense.append(ACTIVATIONS[spec.activation]())
        if spec.dropout:
            dense.append(nn.Dropout(spec.dropout))
        blocks.append(nn.Sequential(*dense))
        width = units
    head = [nn.Flatten()] if not spec.dense_units else []
    blocks.append(nn.Sequential(*head, nn.Linear(width, spec.num_classes)))
    names = [layer.name for layer in spec.layer_shapes()]
    return nn.Sequential(OrderedDict(zip(names, blocks)))


def initialize(net: nn.Module, init: str) -> None:
    # Same rules as the MXNet engine: weights by `init`, biases zero, batch norm 1 and 0.
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if init == "xavier":
                nn.init.xavier_uniform_(module.weight)
            elif init == "normal":
                nn.init.normal_(module.weight, std=0.01)
            else:
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)


def named_tensors(net: nn.Sequential) -> Iterator[tuple[str, torch.Tensor]]:
    """Every parameter and batch-norm statistic under its engine-neutral name."""
    def tensors(module):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            return module.weight, module.bias
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return module.weight, module.bias, module.running_mean, module.running_var
        return None

    return neutral_names(((layer, block.modules()) for layer, block in net.named_children()),
                         tensors)


def torch_device(device: Device) -> torch.device:
    return torch.device("cpu" if device.kind == "cpu" else f"cuda:{device.index}")


def cpu_layout(device: torch.device) -> torch.memory_format:
    """Channels-last on a CPU, where oneDNN's convolutions train the book's network 1.08x
    (one thread) to 1.25x (two threads) faster, to 1e-6 of the default layout's weights
    (docs/performance.md); the default elsewhere."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def on_device(images: np.ndarray, labels: np.ndarray, device: torch.device,
              layout: torch.memory_format = torch.contiguous_format
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """A split's images (in `layout`) and labels (int64), put on the device once: batches
    are then gathered there by index."""
    return (torch.from_numpy(images).to(device).contiguous(memory_format=layout),
            torch.from_numpy(labels.astype(np.int64)).to(device))


def eval_batch(device: torch.device) -> int:
    """Evaluation's batch: on a CPU, 256 evaluates the test set in half the time of 1024
    (cache-sized batches); the accuracy is the same."""
    return 256 if device.type == "cpu" else EVAL_BATCH


def sync(device: torch.device) -> None:
    """Wait for the device, so that the clock read next is honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compiled(function: Callable, mode: str, device: torch.device) -> Callable:
    """The forward pass as `mode` runs it (compiling costs the first batch of each shape)."""
    if mode not in MODES:
        raise SpecError(f"the torch engine's modes are {', '.join(MODES)}, not {mode!r}")
    if mode == "graphs" and device.type != "cuda":
        raise SpecError("the graphs mode captures CUDA graphs: it needs --device gpu")
    if mode in ("compile", "graphs"):
        return torch.compile(function, mode="reduce-overhead" if mode == "graphs" else None)
    return function
