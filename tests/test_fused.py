"""Fused trials (torch.func): each member's numbers equal its unfused run's, on CPU."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from lenet_lab.engines import fuse_key
from lenet_lab.spec import LeNetSpec, TrainConfig
from lenet_lab.status import Status
from lenet_lab.train import train, train_members
from tests.conftest import lenet_lab, results

RELU = LeNetSpec(activation="relu")
FIELDS = ("train_loss", "train_acc", "test_acc")
# Float rounding (vmap's batched kernels against plain ones, the layouts, each CPU's kernels)
# grows with every step of a learning network. Measured |fused - unfused| train loss on
# these tests (600 examples, batch 32): at most 6e-6 after 1-2 epochs and 0.0088 after 3
# on an AMD EPYC; 0.0016 after 3 on an Intel Xeon. A wrong seed, lr or optimizer moves a
# member by 0.05 or more (the distance to another member's run, checked too).
FIRST_EPOCH, LATER_EPOCHS = 1e-3, 0.02  # train loss
# Accuracies of barely trained networks hang on near-tied logits: the unfused run's
# channels-last layout (on a CPU) flipped 5 of 600 test images after one epoch.
FLIPS = 0.02


@pytest.fixture(scope="module")
def data(fashion):
    return fashion.subset(600)


def alone(spec: LeNetSpec, config: TrainConfig, data):
    return train(spec, config, engine="torch", device="cpu", data=data)


def fused_run(spec: LeNetSpec, configs: list[TrainConfig], data, **options):
    return train_members(spec, configs, engine="torch", device="cpu", data=data, **options)


def assert_same(fused, single) -> None:
    """A fused member's epochs equal its unfused run's, to float rounding (see above)."""
    assert len(fused.epochs) == len(single.epochs)
    for a, b in zip(fused.epochs, single.epochs):
        loss = FIRST_EPOCH if a.epoch == 1 else LATER_EPOCHS
        for name in FIELDS:
            within = loss if name == "train_loss" else FLIPS
            assert getattr(a, name) == pytest.approx(getattr(b, name), abs=within), (name, a, b)


def assert_own_runs(fused: list, singles: list) -> None:
    """Each member is its own run: equal to it (assert_same), and much closer to it than
    to any other member's run, however a CPU rounds."""
    for k, (member, single) in enumerate(zip(fused, singles)):
        assert_same(member, single)
        own = abs(member.final.train_loss - single.final.train_loss)
        others = [abs(member.final.train_loss - o.final.train_loss)
                  for j, o in enumerate(singles) if j != k]
        assert all(own < other / 4 for other in others), (k, own, others)


@pytest.mark.slow  # trains: fused models are slow on a CPU
# Networks that learn: a barely trained one has near-tied logits, where float rounding
# (vmap's batched kernels against plain ones) can flip one test image.
@pytest.mark.parametrize("spec, settings", [
    (RELU, {"optimizer": "adam", "lr": 0.002, "batch_size": 32}),
    (RELU, {"optimizer": "sgd", "lr": 0.1, "weight_decay": 1e-3, "batch_size": 32}),
    (LeNetSpec(pooling="max", activation="tanh"),
     {"optimizer": "momentum", "lr": 0.02, "init": "kaiming", "batch_size": 32}),
])
def test_three_fused_members_equal_three_unfused_runs(data, spec, settings) -> None:
    configs = [TrainConfig(epochs=2, seed=seed, **settings) for seed in (0, 1, 2)]
    fused = fused_run(spec, configs, data, keep_weights=True)
    assert_own_runs(fused, [alone(spec, config, data) for config in configs])
    for result, config in zip(fused, configs):
        assert result.status is Status.COMPLETE and result.config.seed == config.seed
        assert result.weights["conv0.weight"].shape == (6, 1, 5, 5)


@pytest.mark.slow  # trains: fused models are slow on a CPU
def test_members_keep_their_own_learning_rates(data) -> None:
    configs = [TrainConfig(epochs=1, seed=0, lr=lr, optimizer="adam", batch_size=32)
               for lr in (0.0005, 0.002, 0.01)]
    fused = fused_run(RELU, configs, data)
    assert_own_runs(fused, [alone(RELU, config, data) for config in configs])


@pytest.mark.slow  # trains: fused models are slow on a CPU
def test_a_diverging_member_is_frozen_and_the_others_go_on_unchanged(data) -> None:
    configs = [TrainConfig(epochs=2, seed=seed, lr=lr, optimizer="adam", batch_size=32)
               for seed, lr in ((0, 0.002), (1, 1e9), (2, 0.002))]
    fused = fused_run(RELU, configs, data)
    assert fused[1].status is Status.DIVERGED and len(fused[1].epochs) == 1
    assert fused[1].reason.startswith("diverged at epoch 1") and math.isnan(fused[1].final.test_acc)
    calm = fused_run(RELU, [configs[0], configs[2]], data)
    for k, same in ((0, calm[0]), (2, calm[1])):
        assert fused[k].status is Status.COMPLETE
        assert [(e.train_loss, e.test_acc) for e in fused[k].epochs] == [
            (e.train_loss, e.test_acc) for e in same.epochs]  # bit for bit
        assert_same(fused[k], alone(RELU, configs[k], data))


@pytest.mark.slow  # trains: fused models are slow on a CPU
def test_pruning_stops_one_member(data) -> None:
    configs = [TrainConfig(epochs=3, seed=seed, lr=0.002, optimizer="adam", batch_size=32)
               for seed in (0, 1)]
    fused = fused_run(RELU, configs, data, on_epoch=lambda member, m: member == 0 and m.epoch == 1)
    assert len(fused[0].epochs) == 1 and len(fused[1].epochs) == 3
    assert_same(fused[1], alone(RELU, configs[1], data))


def test_which_trials_fuse() -> None:
    book, config = LeNetSpec(), TrainConfig()
    assert fuse_key(book, config) == fuse_key(book, TrainConfig(lr=0.1, seed=4, init="normal",
                                                                weight_decay=1e-4))
    assert fuse_key(book, config) != fuse_key(LeNetSpec(pooling="max"), config)
    assert fuse_key(book, config) != fuse_key(book, TrainConfig(batch_size=128))
    assert fuse_key(book, config) != fuse_key(book, TrainConfig(optimizer="adam"))
    assert fuse_key(LeNetSpec(dropout=0.1), config) is None
    assert fuse_key(LeNetSpec(batch_norm=True), config) is None


LEARNS = '[fixed]\nactivation = "relu"\noptimizer = "adam"\nlr = 0.002\nbatch_size = 32\n'
TIMES = ["examples_per_sec", "seconds", "started_at", "finished_at", "trial"]


@pytest.mark.slow
@pytest.mark.parametrize("sweep", ["pooling", "learning.toml"])
def test_a_fused_sweep_records_what_an_unfused_one_does(tmp_path: Path, sweep: str) -> None:
    """The issue's command (the book's net, at chance there), then both arms learning."""
    pooling = Path(__file__).parent.parent / "sweeps" / "pooling.toml"
    (tmp_path / "learning.toml").write_text(pooling.read_text() + LEARNS)
    frames = {}
    for fuse in ("3", "off"):
        done = lenet_lab("sweep", sweep, "--engine", "torch", "--fuse", fuse, "--subset",
                         "1000", "--epochs", "2", "--storage", f"sqlite:///{fuse}.db", "-q",
                         cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        frames[fuse] = results(tmp_path, f"{fuse}.db").sort_values(["arm", "seed"])
    fused, alone = (frames[k].drop(columns=TIMES).reset_index(drop=True) for k in ("3", "off"))
    assert list(fused.columns) == list(alone.columns) and len(fused) == 6
    assert fused.isna().equals(alone.isna())  # the same fields filled in
    text = [c for c in fused.columns if fused[c].dtype == object]
    assert fused[text].equals(alone[text])
    # Float rounding (vmap's batched kernels against plain ones) shifts a learning
    # network's path a little: a few borderline predictions of 1,000 may flip.
    for column, within in (("train_loss", 5e-3), ("train_acc", 5e-3), ("test_acc", 5e-3)):
        assert fused[column].tolist() == pytest.approx(alone[column].tolist(), abs=within), (
            column, (fused[column] - alone[column]).abs().max())
