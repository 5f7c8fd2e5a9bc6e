"""Real training on real Fashion-MNIST subsets, on both engines."""

from __future__ import annotations

import math
import re

import pytest

from lenet_lab.spec import LeNetSpec, TrainConfig

from lenet_lab.status import Status
from lenet_lab.train import EpochMetrics, train
from tests.conftest import ENGINES

pytestmark = pytest.mark.slow

# Sigmoid LeNet with the book's SGD sits near chance for its first full epoch; ReLU with
# Adam learns visibly within two epochs of 3,000 examples (test acc about 0.6 on both engines).
QUICK = LeNetSpec(activation="relu")
QUICK_CONFIG = TrainConfig(lr=0.001, epochs=2, optimizer="adam")


@pytest.mark.parametrize("engine", ENGINES)
def test_short_real_run_learns(engine: str, fashion) -> None:
    small = fashion.subset(3000)
    epochs: list[EpochMetrics] = []
    result = train(QUICK, QUICK_CONFIG, engine=engine, device="cpu", data=small,
                   on_epoch=epochs.append)
    assert result.status == Status.COMPLETE and result.epochs == epochs and len(epochs) == 2
    assert epochs[1].train_loss < epochs[0].train_loss - 0.3
    assert result.final.test_acc > 0.45  # chance is 0.1
    assert result.train_examples == 3000 and result.test_examples == 3000
    assert result.examples_per_sec > 0 and all(e.seconds > 0 for e in epochs)
    assert result.engine == engine and result.device == "cpu" and result.engine_version


@pytest.mark.parametrize("engine", ENGINES)
def test_same_seed_same_numbers(engine: str, fashion) -> None:
    data = fashion.subset(1000)
    config = TrainConfig(lr=0.1, epochs=1, batch_size=64, seed=7)
    runs = [train(QUICK, cfg, engine=engine, device="cpu", data=data)
            for cfg in (config, config, TrainConfig(lr=0.1, epochs=1, batch_size=64, seed=8))]
    key = [(e.train_loss, e.train_acc, e.test_acc) for e in runs[0].epochs]
    assert key == [(e.train_loss, e.train_acc, e.test_acc) for e in runs[1].epochs]
    assert key != [(e.train_loss, e.train_acc, e.test_acc) for e in runs[2].epochs]


@pytest.mark.parametrize("engine", ENGINES)
def test_divergence_is_recorded_not_raised(engine: str, fashion) -> None:
    result = train(QUICK, TrainConfig(lr=1e9, epochs=3), engine=engine, device="cpu",
                   data=fashion.subset(500))
    assert result.status == "diverged"
    assert re.match(r"diverged at epoch 1: train loss is (nan|inf) \(lr 1e\+09 with sgd", result.reason)
    assert len(result.epochs) == 1 and math.isnan(result.final.test_acc)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("spec, config", [
    (LeNetSpec(pooling="max", activation="tanh", batch_norm=True, dropout=0.5, dense_units=()),
     TrainConfig(optimizer="adam", lr=0.001, init="kaiming", weight_decay=1e-4, epochs=1)),
    (LeNetSpec(conv_channels=(4, 8, 16), padding="all", kernel_size=3, activation="gelu"),
     TrainConfig(init="normal", lr=0.5, epochs=1, batch_size=100)),
])
def test_every_option_trains(engine: str, spec: LeNetSpec, config: TrainConfig, fashion) -> None:
    result = train(spec, config, engine=engine, device="cpu", data=fashion.subset(500))
    assert result.status == Status.COMPLETE and 0.0 <= result.final.test_acc <= 1.0
    assert math.isfinite(result.final.train_loss)


def test_callback_exception_stops_the_run(fashion) -> None:
    class Stop(Exception):
        pass

    def stop(metrics: EpochMetrics) -> None:
        raise Stop(metrics.epoch)

    with pytest.raises(Stop, match="1"):
        train(QUICK, TrainConfig(epochs=3), engine="torch", device="cpu", data=fashion.subset(500),
              on_epoch=stop)


def test_subset_and_batch_callbacks(fashion) -> None:
    batches: list[int] = []
    result = train(QUICK, TrainConfig(epochs=1, batch_size=256), engine="torch", device="cpu",
                   data=fashion, subset=600, on_batch=batches.append)
    assert batches == [1, 2, 3] and result.train_examples == 600
