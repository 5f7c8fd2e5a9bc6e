"""Fused trials: K torch networks of one shape trained as one vmapped model (torch.func).

One LeNet trial leaves a GPU idle between kernel launches; K trials fused into one model
launch each kernel once for all K (HFTA's horizontal fusion, done with `torch.func`'s
`stack_module_state`, `functional_call` and `vmap`). Each member keeps what makes it its
own trial: its seed (initial weights and data order), its learning rate, weight decay
and initialisation, its optimizer state and its metrics. Members must share the network
and the training loop's shape: the spec, batch size, epochs and optimizer kind. Dropout
and batch norm draw random numbers or keep running statistics per call, which a vmapped
model cannot reproduce member by member, so such specs are not fused (engines.fuse_key).

The optimizers are written out for stacked parameters, step for step as torch.optim's
SGD (with and without momentum 0.9) and Adam compute them, so a member's numbers equal
its unfused run's to float rounding.
"""

from __future__ import annotations

import copy
import time
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from lenet_lab.data import Dataset
from lenet_lab.engines import EVAL_BATCH, Device, EpochTotals, eval_splits
from lenet_lab.engines.torch_net import (build_network, compiled, initialize, named_tensors,
                                         on_device, sync, torch_device)
from lenet_lab.spec import LeNetSpec, TrainConfig

__all__ = ["FusedSession"]

BETAS, EPS, MOMENTUM = (0.9, 0.999), 1e-8, 0.9  # torch.optim's defaults, as _optimizer uses


class FusedSession:
    """K members of one spec on one device; `active` members train, frozen ones wait."""

    def __init__(self, spec: LeNetSpec, configs: list[TrainConfig], data: Dataset,
                 device: Device, *, mode: str = "default") -> None:
        self.device = device
        self.torch_device = torch_device(device)
        nets = []
        for config in configs:  # as TorchSession builds each: same seed, same weights
            torch.manual_seed(config.seed)
            net = build_network(spec)
            initialize(net, config.init)
            nets.append(net.to(self.torch_device))
        self.members, self.batch_size = len(configs), configs[0].batch_size
        self.optimizer = configs[0].optimizer
        params, _ = stack_module_state(nets)  # name -> (K, ...) leaves that require grad
        self.params = {name: p.detach().requires_grad_(True) for name, p in params.items()}
        self.base = copy.deepcopy(nets[0]).to("meta")  # the shape; its own weights unused
        self.names = {id(t): name for name, t in nets[0].named_parameters()}
        self.neutral = [(neutral, self.names[id(t)]) for neutral, t in named_tensors(nets[0])]

        def shaped(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=self.torch_device)

        self.lr = shaped([c.lr for c in configs])
        self.weight_decay = shaped([c.weight_decay for c in configs])
        self.state = {name: {} for name in self.params}
        self.step = 0
        self.active = torch.ones(self.members, dtype=torch.bool, device=self.torch_device)
        self.train_x, self.train_y = on_device(data.train_images, data.train_labels,
                                               self.torch_device)
        self.splits = {name: on_device(x, y, self.torch_device)
                       for name, (x, y) in eval_splits(data).items()}

        def forward(params: dict, x: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, params, (x,))

        # (K params, (K, B, 1, 28, 28)) -> (K, B, classes); modes as TorchSession's
        self.forward = compiled(vmap(forward), mode, self.torch_device)
        self.evaluate_all = vmap(forward, in_dims=(0, None))  # one test batch for all K

    def freeze(self, member: int) -> None:
        """Stop updating a member (diverged or pruned); the others go on unchanged."""
        self.active[member] = False

    def train_epoch(self, orders: np.ndarray, *,
                    on_batch: Callable[[int], None] | None = None) -> list[EpochTotals]:
        """One epoch: `orders` (K, n) holds each member's own data order."""
        k, n = orders.shape
        orders_t = torch.from_numpy(orders).to(self.torch_device)
        loss_sum = torch.zeros(k, device=self.torch_device)
        correct = torch.zeros(k, dtype=torch.int64, device=self.torch_device)
        sync(self.torch_device)
        start = time.perf_counter()
        for batch, first in enumerate(range(0, n, self.batch_size)):
            index = orders_t[:, first:first + self.batch_size]  # (K, B)
            x, y = self.train_x[index], self.train_y[index]  # (K, B, 1, 28, 28), (K, B)
            y_hat = self.forward(self.params, x)  # (K, B, classes)
            losses = nn.functional.cross_entropy(y_hat.flatten(0, 1), y.flatten(),
                                                 reduction="none").view(k, -1).mean(dim=1)
            # Each member's mean loss, as its unfused run's; frozen members add nothing.
            total = torch.where(self.active, losses, torch.zeros_like(losses)).sum()
            grads = torch.autograd.grad(total, list(self.params.values()))
            with torch.no_grad():
                self._update(dict(zip(self.params, grads)))
            loss_sum += losses.detach() * index.shape[1]
            correct += (y_hat.argmax(dim=2) == y).sum(dim=1)
            if on_batch:
                on_batch(batch + 1)
        sync(self.torch_device)
        seconds = time.perf_counter() - start
        return [EpochTotals(float(loss), int(hits), n, seconds)
                for loss, hits in zip(loss_sum.tolist(), correct.tolist())]

    def _update(self, grads: dict[str, torch.Tensor]) -> None:
        """torch.optim's step for every member at once; frozen members keep their values."""
        self.step += 1
        for name, p in self.params.items():
            shape = (-1,) + (1,) * (p.dim() - 1)
            lr, wd = self.lr.view(shape), self.weight_decay.view(shape)
            g = grads[name] + wd * p
            state = self.state[name]
            if self.optimizer == "adam":
                m = state["m"] = state.get("m", torch.zeros_like(p)) * BETAS[0] + g * (1 - BETAS[0])
                v = state["v"] = state.get("v", torch.zeros_like(p)) * BETAS[1] + g * g * (1 - BETAS[1])
                first, second = 1 - BETAS[0] ** self.step, 1 - BETAS[1] ** self.step
                change = lr / first * m / (v.sqrt() / second ** 0.5 + EPS)
            elif self.optimizer == "momentum":
                buffer = state["buffer"] = g if "buffer" not in state else state["buffer"] * MOMENTUM + g
                change = lr * buffer
            else:
                change = lr * g
            keep = self.active.view(shape)
            p.copy_(torch.where(keep, p - change, p))

    def evaluate(self, split: str = "test") -> list[float]:
        """Each member's accuracy on a split (eval_splits)."""
        images, labels = self.splits[split]
        correct = torch.zeros(self.members, dtype=torch.int64, device=self.torch_device)
        with torch.no_grad():
            for first in range(0, len(labels), EVAL_BATCH):
                x = images[first:first + EVAL_BATCH]
                guess = self.evaluate_all(self.params, x).argmax(dim=2)  # (K, N)
                correct += (guess == labels[first:first + EVAL_BATCH]).sum(dim=1)
        return [hits / len(labels) for hits in correct.tolist()]

    def weights(self, member: int) -> dict[str, np.ndarray]:
        return {neutral: self.params[name][member].detach().cpu().numpy()
                for neutral, name in self.neutral}
