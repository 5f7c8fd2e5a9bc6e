"""MXNet Gluon engine: the book's framework and network (D2L 6.6, `nn.Sequential`)."""

from __future__ import annotations

import time
import warnings
from typing import Callable, Iterator

import numpy as np

with warnings.catch_warnings():
    # MXNet 1.9.1's own import trips numpy and scipy deprecation warnings; not ours to show.
    warnings.simplefilter("ignore")
    import mxnet as mx
    from mxnet import autograd, gluon
    from mxnet import init as mx_init
    from mxnet.gluon import nn

from lenet_lab.data import Dataset
from lenet_lab.engines import (EVAL_BATCH, Device, DeviceChoice, EpochTotals, check_members,
                               cpu_name, eval_splits, neutral_names)
from lenet_lab.errors import SpecError
from lenet_lab.spec import LayerShape, LeNetSpec, TrainConfig

ACTIVATIONS: dict[str, Callable[[], gluon.HybridBlock]] = {
    "sigmoid": lambda: nn.Activation("sigmoid"),
    "relu": lambda: nn.Activation("relu"),
    "tanh": lambda: nn.Activation("tanh"),
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "elu": lambda: nn.ELU(1.0),
    "gelu": nn.GELU,
}
INITS = {
    "xavier": lambda: mx_init.Xavier(),  # Glorot uniform, as the book's train_ch5
    "normal": lambda: mx_init.Normal(0.01),
    "kaiming": lambda: mx_init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2),
}


def _sequential(*blocks: gluon.HybridBlock) -> nn.HybridSequential:
    seq = nn.HybridSequential()
    seq.add(*blocks)
    return seq


def build_network(spec: LeNetSpec) -> nn.HybridSequential:
    """One child per logical layer, in the order of spec.layer_shapes()."""
    net = nn.HybridSequential()
    for i, channels in enumerate(spec.conv_channels):
        conv = [nn.Conv2D(channels, spec.kernel_size, padding=spec.conv_padding(i))]
        if spec.batch_norm:
            conv.append(nn.BatchNorm())
        net.add(_sequential(*conv, ACTIVATIONS[spec.activation]()))
        pool = nn.AvgPool2D if spec.pooling == "avg" else nn.MaxPool2D
        net.add(pool(pool_size=2, strides=2))
    for units in spec.dense_units:
        dense = [nn.Dense(units)]  # flattens (N, C, H, W) to (N, C*H*W) by itself
        if spec.batch_norm:
            dense.append(nn.BatchNorm())
        dense.append(ACTIVATIONS[spec.activation]())
        if spec.dropout:
            dense.append(nn.Dropout(spec.dropout))
        net.add(_sequential(*dense))
    net.add(nn.Dense(spec.num_classes))
    return net


def _trainable(block: gluon.Block) -> int:
    return sum(int(np.prod(p.shape)) for p in block.collect_params().values() if p.grad_req != "null")


class MXNetEngine(DeviceChoice):
    name = "mxnet"

    def version(self) -> str:
        return mx.__version__

    def layer_shapes(self, spec: LeNetSpec) -> list[LayerShape]:
        net = build_network(spec)
        net.initialize()
        x = mx.nd.random.uniform(shape=(1, 1, 28, 28))
        names = [layer.name for layer in spec.layer_shapes()]
        shapes = []
        for name, block in zip(names, net):
            x = block(x)
            shapes.append(LayerShape(name, tuple(x.shape), _trainable(block)))
        return shapes

    def gpu_count(self) -> int:
        return mx.context.num_gpus()

    def activations(self, spec: LeNetSpec, weights: dict[str, np.ndarray], images: np.ndarray,
                    layers: tuple[str, ...]) -> dict[str, np.ndarray]:
        net = build_network(spec)
        net.initialize()
        net(mx.nd.zeros((1, 1, 28, 28)))  # Gluon infers parameter shapes on the first call
        names = [layer.name for layer in spec.layer_shapes()]
        for name, param in named_params(net, names):
            param.set_data(mx.nd.array(weights[name]))
        x, maps = mx.nd.array(images), {}
        for name, block in zip(names, net):
            x = block(x)
            if name in layers:
                maps[name] = x.asnumpy()
        return maps

    def device_name(self, device: Device) -> str:
        return cpu_name() if device.kind == "cpu" else f"gpu({device.index})"  # MXNet has no names

    def session(self, spec: LeNetSpec, configs: list[TrainConfig], data: Dataset,
                device: Device, *, mode: str = "default") -> MXNetSession:
        if mode not in MODES:
            raise SpecError(f"the mxnet engine's modes are {', '.join(MODES)}, not {mode!r}")
        check_members(spec, configs, self.name)
        return MXNetSession(spec, configs[0], data, device, mode=mode)


MODES = ("default", "book")  # default: hybridized with static allocation; book: imperative


class MXNetSession:
    """One member (MXNet trains no fused models)."""

    members = 1

    def __init__(self, spec: LeNetSpec, config: TrainConfig, data: Dataset,
                 device: Device, *, mode: str = "default") -> None:
        self.device = device
        self.ctx = mx.cpu() if device.kind == "cpu" else mx.gpu(device.index)
        mx.random.seed(config.seed, ctx="all")
        self.net = build_network(spec)
        self.layer_names = [layer.name for layer in spec.layer_shapes()]
        self.net.initialize(INITS[config.init](), ctx=self.ctx)
        # Gluon draws the initial weights at the first forward pass, from the global RNG:
        # draw them now, right after seeding, so that other sessions cannot shift them.
        self.net(mx.nd.zeros((1, 1, 28, 28), ctx=self.ctx))
        if mode == "default":
            self.net.hybridize(static_alloc=True)
        options = {"learning_rate": config.lr, "wd": config.weight_decay}
        if config.optimizer == "momentum":
            options["momentum"] = 0.9
        self.trainer = gluon.Trainer(self.net.collect_params(),
                                     "adam" if config.optimizer == "adam" else "sgd", options)
        self.loss = gluon.loss.SoftmaxCrossEntropyLoss()
        self.batch_size = config.batch_size
        # The whole dataset goes to the device once; batches are gathered there by index.
        self.train_x, self.train_y = (mx.nd.array(array, ctx=self.ctx, dtype=np.float32)
                                      for array in (data.train_images, data.train_labels))
        self.splits = {name: tuple(mx.nd.array(array, ctx=self.ctx, dtype=np.float32)
                                   for array in arrays)
                       for name, arrays in eval_splits(data).items()}

    def freeze(self, member: int) -> None:
        pass  # the only member: its run ends

    def train_epoch(self, orders: np.ndarray, *,
                    on_batch: Callable[[int], None] | None = None) -> list[EpochTotals]:
        order = orders[0]
        order_nd = mx.nd.array(order, ctx=self.ctx, dtype=np.int64)
        loss_sum = mx.nd.zeros((1,), ctx=self.ctx)
        correct = mx.nd.zeros((1,), ctx=self.ctx)
        mx.nd.waitall()
        start = time.perf_counter()
        for batch, first in enumerate(range(0, len(order), self.batch_size)):
            index = order_nd[first:first + self.batch_size]
            x, y = self.train_x.take(index), self.train_y.take(index)  # (B, 1, 28, 28), (B,)
            with autograd.record():
                y_hat = self.net(x)
                loss = self.loss(y_hat, y)  # per example
            loss.backward()
            self.trainer.step(len(index))  # the gradient of the batch mean, as train_ch5
            loss_sum += loss.sum()
            correct += (y_hat.argmax(axis=1) == y).sum()
            if on_batch:
                on_batch(batch + 1)
        totals = loss_sum.asscalar(), correct.asscalar()
        mx.nd.waitall()
        seconds = time.perf_counter() - start
        return [EpochTotals(float(totals[0]), int(totals[1]), len(order), seconds)]

    def reference_epoch(self, order: np.ndarray, images: np.ndarray,
                        labels: np.ndarray) -> EpochTotals:
        """The book's train_ch5 loop, for comparison: host batches copied to the device one
        by one (as_in_context), and the metrics read back to the host after every batch."""
        loss_sum, correct = 0.0, 0
        mx.nd.waitall()
        start = time.perf_counter()
        for first in range(0, len(order), self.batch_size):
            index = order[first:first + self.batch_size]
            x = mx.nd.array(images[index]).as_in_context(self.ctx)
            y = mx.nd.array(labels[index]).as_in_context(self.ctx)
            with autograd.record():
                y_hat = self.net(x)
                loss = self.loss(y_hat, y)
            loss.backward()
            self.trainer.step(len(index))
            loss_sum += float(loss.sum().asscalar())
            correct += int((y_hat.argmax(axis=1) == y).sum().asscalar())
        mx.nd.waitall()
        return EpochTotals(loss_sum, correct, len(order), time.perf_counter() - start)

    def evaluate(self, split: str = "test") -> list[float]:
        images, labels = self.splits[split]
        correct = mx.nd.zeros((1,), ctx=self.ctx)
        for first in range(0, labels.shape[0], EVAL_BATCH):
            x = images[first:first + EVAL_BATCH]
            correct += (self.net(x).argmax(axis=1) == labels[first:first + EVAL_BATCH]).sum()
        return [float(correct.asscalar()) / labels.shape[0]]

    def weights(self, member: int = 0) -> dict[str, np.ndarray]:
        return {name: param.data(self.ctx).asnumpy()
                for name, param in named_params(self.net, self.layer_names)}


def named_params(net: nn.HybridSequential, names: list[str]) -> Iterator[tuple[str, gluon.Parameter]]:
    """Every parameter and batch-norm statistic under its engine-neutral name."""
    def tensors(child):
        if isinstance(child, (nn.Conv2D, nn.Dense)):
            return child.weight, child.bias
        if isinstance(child, nn.BatchNorm):
            return child.gamma, child.beta, child.running_mean, child.running_var
        return None

    blocks = ((layer, list(block) if isinstance(block, nn.HybridSequential) else [block])
              for layer, block in zip(names, net))
    return neutral_names(blocks, tensors)


ENGINE = MXNetEngine()
