"""PyTorch engine: the same network as the MXNet engine, for current GPUs."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from lenet_lab.data import Dataset
from lenet_lab.engines import (EVAL_BATCH, Device, DeviceChoice, EpochTotals, cpu_name,
                               neutral_names)
from lenet_lab.errors import SpecError
from lenet_lab.spec import LayerShape, LeNetSpec, TrainConfig

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "elu": lambda: nn.ELU(1.0),
    "gelu": nn.GELU,
}


def build(spec: LeNetSpec) -> nn.Sequential:
    """One child per logical layer, named as in spec.layer_shapes()."""
    blocks: list[nn.Module] = []
    channels = 1
    for i, out_channels in enumerate(spec.conv_channels):
        conv = [nn.Conv2d(channels, out_channels, spec.kernel_size, padding=spec.conv_padding(i))]
        if spec.batch_norm:
            conv.append(nn.BatchNorm2d(out_channels))
        blocks.append(nn.Sequential(*conv, ACTIVATIONS[spec.activation]()))
        pool = nn.AvgPool2d if spec.pooling == "avg" else nn.MaxPool2d
        blocks.append(pool(kernel_size=2, stride=2))
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


def _optimizer(net: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params, wd = net.parameters(), config.weight_decay
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=wd)
    momentum = 0.9 if config.optimizer == "momentum" else 0.0
    return torch.optim.SGD(params, lr=config.lr, momentum=momentum, weight_decay=wd)


class TorchEngine(DeviceChoice):
    name = "torch"

    def version(self) -> str:
        return torch.__version__

    def layer_shapes(self, spec: LeNetSpec) -> list[LayerShape]:
        net = build(spec).eval()
        x = torch.rand(1, 1, 28, 28)
        shapes = []
        with torch.no_grad():
            for name, block in net.named_children():
                x = block(x)
                params = sum(p.numel() for p in block.parameters() if p.requires_grad)
                shapes.append(LayerShape(name, tuple(x.shape), params))
        return shapes

    def gpu_count(self) -> int:
        return torch.cuda.device_count()


    def activations(self, spec: LeNetSpec, weights: dict[str, np.ndarray], images: np.ndarray,
                    layers: tuple[str, ...]) -> dict[str, np.ndarray]:
        net = build(spec).eval()
        with torch.no_grad():
            for name, tensor in named_tensors(net):
                tensor.copy_(torch.from_numpy(weights[name]))
            x, maps = torch.from_numpy(images), {}
            for name, block in net.named_children():
                x = block(x)
                if name in layers:
                    maps[name] = x.numpy()
        return maps

    def device_name(self, device: Device) -> str:
        return cpu_name() if device.kind == "cpu" else torch.cuda.get_device_name(device.index)

    def session(self, spec: LeNetSpec, config: TrainConfig, data: Dataset,
                device: Device, *, mode: str = "default") -> TorchSession:
        if mode not in MODES:
            raise SpecError(f"the torch engine's modes are {', '.join(MODES)}, not {mode!r}")
        return TorchSession(spec, config, data, device, mode=mode)


# book: as default (eager); compile: torch.compile; graphs: torch.compile's
# "reduce-overhead" mode, which replays the step's kernels as CUDA graphs (GPUs only).
MODES = ("default", "book", "compile", "graphs")


def compiled(function: Callable, mode: str, device: torch.device) -> Callable:
    """The forward pass as `mode` runs it (compiling costs the first batch of each shape)."""
    if mode == "graphs" and device.type != "cuda":
        raise SpecError("the graphs mode captures CUDA graphs: it needs --device gpu")
    if mode in ("compile", "graphs"):
        return torch.compile(function, mode="reduce-overhead" if mode == "graphs" else None)
    return function


class TorchSession:
    def __init__(self, spec: LeNetSpec, config: TrainConfig, data: Dataset,
                 device: Device, *, mode: str = "default") -> None:
        self.device = device
        self.torch_device = torch.device("cpu" if device.kind == "cpu" else f"cuda:{device.index}")
        torch.manual_seed(config.seed)
        self.net = build(spec).to(self.torch_device)
        initialize(self.net, config.init)
        self.forward = compiled(self.net, mode, self.torch_device)
        self.optimizer = _optimizer(self.net, config)
        self.loss = nn.CrossEntropyLoss()
        self.batch_size = config.batch_size
        # The whole dataset goes to the device once; batches are gathered there by index.
        self.train_x, self.train_y, self.test_x, self.test_y = (
            torch.from_numpy(array).to(self.torch_device)
            for array in (data.train_images, data.train_labels.astype(np.int64),
                          data.test_images, data.test_labels.astype(np.int64)))

    def _sync(self) -> None:
        if self.torch_device.type == "cuda":
            torch.cuda.synchronize(self.torch_device)

    def train_epoch(self, order: np.ndarray, *,
                    on_batch: Callable[[int], None] | None = None) -> EpochTotals:
        self.net.train()
        order_t = torch.from_numpy(order).to(self.torch_device)
        loss_sum = torch.zeros((), device=self.torch_device)
        correct = torch.zeros((), dtype=torch.int64, device=self.torch_device)
        self._sync()
        start = time.perf_counter()
        for batch, first in enumerate(range(0, len(order), self.batch_size)):
            index = order_t[first:first + self.batch_size]
            x, y = self.train_x[index], self.train_y[index]  # (B, 1, 28, 28), (B,)
            y_hat = self.forward(x)
            loss = self.loss(y_hat, y)  # mean over the batch, like Gluon's step(batch_size)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach() * len(index)
            correct += (y_hat.argmax(dim=1) == y).sum()
            if on_batch:
                on_batch(batch + 1)
        self._sync()
        seconds = time.perf_counter() - start
        return EpochTotals(loss_sum.item(), int(correct.item()), len(order), seconds)

    def reference_epoch(self, order: np.ndarray, images: np.ndarray,
                        labels: np.ndarray) -> EpochTotals:
        """The book's train_ch5 loop, for comparison: host batches copied to the device one
        by one, and the metrics read back to the host after every batch."""
        self.net.train()
        loss_sum, correct = 0.0, 0
        self._sync()
        start = time.perf_counter()
        for first in range(0, len(order), self.batch_size):
            index = order[first:first + self.batch_size]
            x = torch.from_numpy(images[index]).to(self.torch_device)
            y = torch.from_numpy(labels[index].astype(np.int64)).to(self.torch_device)
            y_hat = self.net(x)
            loss = self.loss(y_hat, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.item() * len(index)
            correct += int((y_hat.argmax(dim=1) == y).sum().item())
        self._sync()
        return EpochTotals(loss_sum, correct, len(order), time.perf_counter() - start)

    def evaluate(self) -> float:
        self.net.eval()
        correct = torch.zeros((), dtype=torch.int64, device=self.torch_device)
        with torch.no_grad():
            for first in range(0, len(self.test_y), EVAL_BATCH):
                x = self.test_x[first:first + EVAL_BATCH]
                correct += (self.net(x).argmax(dim=1) == self.test_y[first:first + EVAL_BATCH]).sum()
        return correct.item() / len(self.test_y)

    def weights(self) -> dict[str, np.ndarray]:
        return {name: tensor.detach().cpu().numpy() for name, tensor in named_tensors(self.net)}


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


ENGINE = TorchEngine()
