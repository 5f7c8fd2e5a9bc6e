"""`lenet-lab bench` and the claim behind it: the fast path trains exactly like the book's loop."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lenet_lab.bench import OURS, REFERENCE, run_bench
from lenet_lab.engines import Device, get_engine
from lenet_lab.spec import LeNetSpec, TrainConfig
from tests.conftest import ENGINES, lenet_lab

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("engine", ENGINES)
def test_fast_path_follows_the_book_loop(engine: str, fashion) -> None:
    # Same seed, same batches: lenet-lab's path and the book-style loop give the same
    # losses and accuracies, epoch after epoch (float tolerance: kernels may differ).
    data = fashion.subset(1000)
    config = TrainConfig(lr=0.1, epochs=2, seed=3)
    backend = get_engine(engine)
    fast = backend.session(LeNetSpec(), [config], data, Device("cpu"), mode="default")
    book = backend.session(LeNetSpec(), [config], data, Device("cpu"), mode="book")
    rng = np.random.default_rng(0)
    for _ in range(2):
        order = rng.permutation(len(data.train_labels))
        [ours] = fast.train_epoch(order[None])
        theirs = book.reference_epoch(order, data.train_images, data.train_labels)
        assert ours.loss_sum == pytest.approx(theirs.loss_sum, rel=1e-4)
        assert abs(ours.correct - theirs.correct) <= 2
    assert fast.evaluate()[0] == pytest.approx(book.evaluate()[0], abs=0.005)


@pytest.mark.parametrize("engine", ENGINES)
def test_bench_times_both_paths(engine: str) -> None:
    result = run_bench(engine=engine, device="cpu", epochs=2, warmup=1, subset=1000)
    reference, ours = result.paths
    assert [reference.path, ours.path] == [REFERENCE, OURS]
    assert all(len(p.examples_per_sec) == 2 and len(p.warmup_seconds) == 1 for p in result.paths)
    # each figure is examples over seconds of a real epoch (1,000 examples, well under a
    # minute on any CPU), and the ratio is the medians' quotient
    assert all(1000 / 60 < v < 1e7 for p in result.paths for v in p.examples_per_sec)
    assert all(0 < s < 60 for p in result.paths for s in p.warmup_seconds)
    assert result.ratio == pytest.approx(ours.median / reference.median)
    assert result.train_examples == 1000 and result.device == "cpu"
    header, rows, title = result.table()
    assert [row[0] for row in rows] == [REFERENCE, OURS] and "1000 examples/epoch" in title


def test_bench_command_json_and_errors(tmp_path) -> None:
    done = lenet_lab("bench", "--engine", "torch", "--epochs", "1", "--warmup", "0",
                     "--subset", "500", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["paths"][0]["path"] == REFERENCE and data["ratio"] > 0
    assert data["paths"][1]["median_examples_per_sec"] > 0
    bad = lenet_lab("bench", "--engine", "mxnet", "--mode", "compile", "--subset", "500",
                    cwd=tmp_path)
    assert bad.returncode == 2 and "the mxnet engine's modes are default, book" in bad.stderr


def test_torch_compile_mode_trains_the_same_numbers(fashion) -> None:
    # The opt-in compiled path (its one-time compile lands in the first epoch) against eager.
    data = fashion.subset(1000)
    config = TrainConfig(lr=0.1, epochs=1, seed=5)
    backend = get_engine("torch")
    eager = backend.session(LeNetSpec(), [config], data, Device("cpu"))
    compiled = backend.session(LeNetSpec(), [config], data, Device("cpu"), mode="compile")
    order = np.random.default_rng(1).permutation(1000)[None]
    [a], [b] = eager.train_epoch(order), compiled.train_epoch(order)
    assert b.loss_sum == pytest.approx(a.loss_sum, rel=1e-4) and abs(a.correct - b.correct) <= 2
    assert compiled.evaluate()[0] == pytest.approx(eager.evaluate()[0], abs=0.005)
