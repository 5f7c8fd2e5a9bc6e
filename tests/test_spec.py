from __future__ import annotations

import json
import re

import pytest
from hypothesis import given

from lenet_lab.errors import SpecError
from lenet_lab.spec import LeNetSpec, TrainConfig
from tests.conftest import BOOK_SHAPES, specs


def test_defaults_are_the_books_network_and_run() -> None:
    spec, config = LeNetSpec(), TrainConfig()
    assert [(layer.name, layer.output_shape) for layer in spec.layer_shapes()] == BOOK_SHAPES
    assert spec.param_count == 61706  # LeNet-5 as in the book's table
    assert (spec.kernel_size, spec.pooling, spec.activation, spec.padding) == (5, "avg", "sigmoid", "first")
    assert (config.lr, config.epochs, config.batch_size, config.optimizer, config.init,
            config.dataset) == (0.9, 10, 256, "sgd", "xavier", "fashion-mnist")


def test_padding_rule() -> None:
    assert [LeNetSpec().conv_padding(i) for i in range(2)] == [2, 0]
    assert [LeNetSpec(padding="all", kernel_size=3).conv_padding(i) for i in range(2)] == [1, 1]
    assert LeNetSpec(padding="none").layer_shapes()[0].output_shape == (1, 6, 24, 24)


@pytest.mark.parametrize("changes, message", [
    ({"conv_channels": ()}, "conv_channels needs at least one"),
    ({"conv_channels": (6, 0)}, "conv_channels must be a whole number >= 1"),
    ({"conv_channels": "6,16"}, "conv_channels must be a list"),
    ({"dense_units": (120, -1)}, "dense_units must be a whole number"),
    ({"kernel_size": 0}, "kernel_size must be a whole number >= 1"),
    ({"kernel_size": 2.5}, "kernel_size must be a whole number"),
    ({"pooling": "mean"}, "pooling must be one of avg, max"),
    ({"activation": "swish"}, "activation must be one of sigmoid"),
    ({"padding": "same"}, "padding must be one of first, all, none"),
    ({"dropout": 1.0}, "dropout must be a number in [0, 1)"),
    ({"batch_norm": "yes"}, "batch_norm must be true or false"),
    ({"num_classes": 1}, "num_classes must be a whole number >= 2"),
])
def test_bad_spec_is_rejected_with_the_field_named(changes: dict, message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        LeNetSpec(**changes)


@pytest.mark.parametrize("changes, message", [
    ({"lr": 0}, "lr must be a number > 0"),
    ({"lr": float("nan")}, "lr must be a number > 0"),
    ({"epochs": 0}, "epochs must be a whole number from 1 to 10000"),
    ({"epochs": 10_001}, "epochs must be a whole number from 1 to 10000"),
    ({"batch_size": True}, "batch_size must be a whole number"),
    ({"optimizer": "rmsprop"}, "optimizer must be one of sgd, momentum, adam"),
    ({"init": "zeros"}, "init must be one of xavier"),
    ({"weight_decay": -1e-4}, "weight_decay must be a number from 0 to 1e\\+12"),
    ({"lr": 1e39}, "lr must be a number > 0 and at most 1e\\+12, not 1e\\+39"),
    ({"dataset": "cifar10"}, "dataset must be one of fashion-mnist, mnist"),
])
def test_bad_config_is_rejected(changes: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        TrainConfig(**changes)


def test_feature_map_that_vanishes_is_rejected_naming_layer_and_sizes() -> None:
    # The example: three 5x5 convs with pooling on 28x28.
    with pytest.raises(SpecError, match=r"pool2 gets a 1x1 feature map"):
        LeNetSpec(conv_channels=(6, 16, 32))
    with pytest.raises(SpecError, match=re.escape(
            "conv1 (11x11 kernel, padding 0) gets a 9x9 input and would output -1x-1")):
        LeNetSpec(kernel_size=11, padding="none")
    # Padding every conv keeps three (and four) blocks feasible.
    assert LeNetSpec(conv_channels=(6, 16, 32), padding="all").layer_shapes()[-4].output_shape == (1, 32, 3, 3)
    assert LeNetSpec(conv_channels=(6, 16, 32, 64), padding="all").param_count > 0


@given(specs)
def test_json_round_trip_rebuilds_the_same_spec(spec: LeNetSpec) -> None:
    text = spec.to_json()
    assert LeNetSpec.from_json(text) == spec
    assert json.loads(text)["conv_channels"] == list(spec.conv_channels)


def test_config_round_trip_and_unknown_fields() -> None:
    config = TrainConfig(lr=0.1, optimizer="adam", seed=3)
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(SpecError, match="unknown LeNetSpec field.*kernel; known: activation"):
        LeNetSpec.from_dict({"kernel": 3})


def test_spec_is_frozen_and_hashable() -> None:
    spec = LeNetSpec(conv_channels=[6, 16])  # a list from JSON or TOML becomes a tuple
    assert spec == LeNetSpec() and hash(spec) == hash(LeNetSpec())
    with pytest.raises(AttributeError):
        spec.kernel_size = 3  # type: ignore[misc]


def test_flops_per_example_count_every_layer() -> None:
    book = LeNetSpec()
    flops = book.layer_flops()
    # conv: 2 x window x input channels per output value, +1 for its activation
    assert flops["conv0"] == 6 * 28 * 28 * (2 * 5 * 5 * 1 + 1)
    assert flops["conv1"] == 16 * 10 * 10 * (2 * 5 * 5 * 6 + 1)
    assert flops["pool0"] == 6 * 28 * 28 and flops["dense0"] == 120 * (2 * 400 + 1)
    assert book.flops_per_example == sum(flops.values()) == 845_862
    assert book.train_flops_per_example == 3 * 845_862  # about 2.5 MFLOP, as the issue says
    wide = LeNetSpec(conv_channels=(12, 32))
    assert wide.flops_per_example > 2.5 * book.flops_per_example
    assert LeNetSpec(batch_norm=True).flops_per_example > book.flops_per_example
