"""PyTorch engine: the same network as the MXNet engine, for current GPUs.

One member trains in a TorchSession; several members of one fuse key in a FusedSession
(torch_fused). Both build the network from torch_net.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from torch import nn

from lenet_lab.data import Dataset
from lenet_lab.engines import (Device, DeviceChoice, EpochTotals, check_members, cpu_name,
                               eval_splits)
from lenet_lab.engines.torch_fused import FusedSession
from lenet_lab.engines.torch_net import (build_network, compiled, cpu_layout, eval_batch,
                                         initialize, named_tensors, on_device, sync,
                                         torch_device)
from lenet_lab.spec import LayerShape, LeNetSpec, TrainConfig


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
        net = build_network(spec).eval()
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
        net = build_network(spec).eval()
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

    def session(self, spec: LeNetSpec, configs: list[TrainConfig], data: Dataset,
                device: Device, *, mode: str = "default") -> TorchSession | FusedSession:
        check_members(spec, configs, self.name)
        if len(configs) > 1:
            return FusedSession(spec, configs, data, device, mode=mode)
        return TorchSession(spec, configs[0], data, device, mode=mode)


class TorchSession:
    """One member: the network as torch.nn modules, torch.optim's optimizer."""

    members = 1

    def __init__(self, spec: LeNetSpec, config: TrainConfig, data: Dataset,
                 device: Device, *, mode: str = "default") -> None:
        self.device = device
        self.torch_device = torch_device(device)
        torch.manual_seed(config.seed)
        self.net = build_network(spec).to(self.torch_device)
        initialize(self.net, config.init)  # then the layout: the same weights, laid out anew
        layout = cpu_layout(self.torch_device) if mode == "default" else torch.contiguous_format
        self.net = self.net.to(memory_format=layout)
        self.forward = compiled(self.net, mode, self.torch_device)
        self.optimizer = _optimizer(self.net, config)
        self.loss = nn.CrossEntropyLoss()
        self.batch_size = config.batch_size
        # The whole dataset goes to the device once; batches are gathered there by index.
        self.train_x, self.train_y = on_device(data.train_images, data.train_labels,
                                               self.torch_device, layout)
        self.splits = {name: on_device(x, y, self.torch_device, layout)
                       for name, (x, y) in eval_splits(data).items()}
        self.eval_batch = eval_batch(self.torch_device)

    def freeze(self, member: int) -> None:
        pass  # the only member: its run ends

    def train_epoch(self, orders: np.ndarray, *,
                    on_batch: Callable[[int], None] | None = None) -> list[EpochTotals]:
        self.net.train()
        order_t = torch.from_numpy(orders[0]).to(self.torch_device)
        loss_sum = torch.zeros((), device=self.torch_device)
        correct = torch.zeros((), dtype=torch.int64, device=self.torch_device)
        sync(self.torch_device)
        start = time.perf_counter()
        for batch, first in enumerate(range(0, len(order_t), self.batch_size)):
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
        sync(self.torch_device)
        seconds = time.perf_counter() - start
        return [EpochTotals(loss_sum.item(), int(correct.item()), len(order_t), seconds)]

    def reference_epoch(self, order: np.ndarray, images: np.ndarray,
                        labels: np.ndarray) -> EpochTotals:
        """The book's train_ch5 loop, for comparison: host batches copied to the device one
        by one, and the metrics read back to the host after every batch."""
        self.net.train()
        loss_sum, correct = 0.0, 0
        sync(self.torch_device)
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
        sync(self.torch_device)
        return EpochTotals(loss_sum, correct, len(order), time.perf_counter() - start)

    def evaluate(self, split: str = "test") -> list[float]:
        self.net.eval()
        images, labels = self.splits[split]
        correct = torch.zeros((), dtype=torch.int64, device=self.torch_device)
        with torch.no_grad():
            for first in range(0, len(labels), self.eval_batch):
                x = images[first:first + self.eval_batch]
                y = labels[first:first + self.eval_batch]
                correct += (self.net(x).argmax(dim=1) == y).sum()
        return [correct.item() / len(labels)]

    def weights(self, member: int = 0) -> dict[str, np.ndarray]:
        return {name: tensor.detach().cpu().numpy() for name, tensor in named_tensors(self.net)}


ENGINE = TorchEngine()
