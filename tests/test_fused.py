"""Fused trials (torch.func): each member's numbers equal its unfused run's, on CPU."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from lenet_lab.spec import LeNetSpec, Status, TrainConfig
from lenet_lab.train import fuse_key, train, train_fused
from tests.conftest import lenet_lab, results

RELU = LeNetSpec(activation="relu")
FIELDS = ("train_loss", "train_acc", "test_acc")


@pytest.fixture(scope="module")
def data(fashion):
    return fashion.subset(600)


def alone(spec: LeNetSpec, config: TrainConfig, data):
    return train(spec, config, engine="torch", device="cpu", data=data)


def assert_same(fused, single) -> None:
    assert len(fused.epochs) == len(single.epochs)
    for a, b in zip(fused.epochs, single.epochs):
        for name in FIELDS:
            assert getattr(a, name) == pytest.approx(getattr(b, name), abs=1e-4), (name, a, b)


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
    fused = train_fused(spec, configs, device="cpu", data=data, keep_weights=True)
    for result, config in zip(fused, configs):
        single = alone(spec, config, data)
        assert_same(result, single)
        assert result.status is Status.COMPLETE and result.config.seed == config.seed
        assert result.weights["conv0.weight"].shape == (6, 1, 5, 5)


def test_members_keep_their_own_learning_rates(data) -> None:
    configs = [TrainConfig(epochs=1, seed=0, lr=lr, optimizer="adam", batch_size=32)
               for lr in (0.0005, 0.002, 0.01)]
    fused = train_fused(RELU, configs, device="cpu", data=data)
    for result, config in zip(fused, configs):
        assert_same(result, alone(RELU, config, data))
    assert len({r.final.train_loss for r in fused}) == 3


def test_a_diverging_member_is_frozen_and_the_others_go_on_unchanged(data) -> None:
    configs = [TrainConfig(epochs=2, seed=seed, lr=lr, batch_size=32)
               for seed, lr in ((0, 0.1), (1, 1e9), (2, 0.1))]
    fused = train_fused(RELU, configs, device="cpu", data=data)
    assert fused[1].status is Status.DIVERGED and len(fused[1].epochs) == 1
    assert fused[1].reason.startswith("diverged at epoch 1") and math.isnan(fused[1].final.test_acc)
    calm = train_fused(RELU, [configs[0], configs[2]], device="cpu", data=data)
    for k, same in ((0, calm[0]), (2, calm[1])):
        assert fused[k].status is Status.COMPLETE
        assert [(e.train_loss, e.test_acc) for e in fused[k].epochs] == [
            (e.train_loss, e.test_acc) for e in same.epochs]  # bit for bit
        assert_same(fused[k], alone(RELU, configs[k], data))


def test_pruning_stops_one_member(data) -> None:
    configs = [TrainConfig(epochs=3, seed=seed, lr=0.1, batch_size=32) for seed in (0, 1)]
    fused = train_fused(RELU, configs, device="cpu", data=data,
                        on_epoch=lambda member, m: member == 0 and m.epoch == 1)
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
