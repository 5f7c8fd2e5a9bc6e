"""Sweep files: every shipped one is valid and buildable; bad ones fail with one clear line."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from lenet_lab.engines import get_engine
from lenet_lab.errors import InfeasibleSpec, SweepError
from lenet_lab.sweep_file import Distribution, list_sweeps, load_sweep, specs_from
from tests.conftest import ENGINES

SHIPPED = list_sweeps()


def test_every_exercise_but_the_activation_view_has_a_sweep() -> None:
    exercises = sorted(load_sweep(str(path)).exercise for path in SHIPPED)
    assert exercises == list(range(1, 10))


def _sample(dimension, rng: random.Random):
    if isinstance(dimension, Distribution):
        value = rng.uniform(dimension.low, dimension.high)
        return int(value) if dimension.integer else value
    return rng.choice(dimension)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_sweep_validates_and_every_arm_builds_on_both_engines(path: Path) -> None:
    sweep = load_sweep(str(path))
    assert sweep.title and sweep.run.seeds >= 3
    if sweep.run.sampler == "grid":
        arms = [arm.as_dict() for arm in sweep.grid_arms()]
        assert sweep.is_control(arms[0])  # the book's network comes first
    else:
        rng = random.Random(0)  # the control arm and a few points of the search space
        arms = [{}] + [{k: _sample(d, rng) for k, d in sweep.space.items()} for _ in range(5)]
    built = 0
    for values in arms:
        try:
            spec, config = specs_from({**sweep.control(), **values}, seed=0)
        except InfeasibleSpec:
            continue  # recorded as infeasible when the sweep runs
        for engine in ENGINES:
            assert get_engine(engine).layer_shapes(spec) == spec.layer_shapes()
        built += 1
    assert built >= 2


def test_the_control_arm_is_added_to_a_grid_that_lacks_it(tmp_path: Path) -> None:
    path = tmp_path / "relu.toml"
    path.write_text('title = "t"\n[space]\nactivation = ["relu", "tanh"]\n')
    arms = load_sweep(str(path)).grid_arms()
    assert [arm.label for arm in arms] == ["book", "activation=relu", "activation=tanh"]


BAD = {
    "unknown top key": ('title = "t"\nspce = {}\n', "unknown key 'spce'; did you mean space?"),
    "unknown run key": ('title = "t"\n[run]\nepoch = 3\n[space]\npooling = ["max"]\n',
                        "[run]: unknown key 'epoch'; did you mean epochs?"),
    "wrong type": ('title = "t"\n[run]\nepochs = "10"\n[space]\npooling = ["max"]\n',
                   "epochs must be a whole number >= 1, not '10'"),
    "empty space": ('title = "t"\n[space]\npooling = []\n', "[space] pooling is an empty list"),
    "nothing to sweep": ('title = "t"\n', "nothing to sweep"),
    "bad value": ('title = "t"\n[space]\npooling = ["avg", "mean"]\n',
                  "[space] pooling: pooling must be one of avg, max, not 'mean'"),
    "unknown field": ('title = "t"\n[space]\nkernel = [3]\n', "[space]: unknown key 'kernel'; did you mean kernel_size?"),
    "infeasible fixed": ('title = "t"\n[fixed]\nconv_channels = [6, 16, 32]\n[space]\npooling = ["max"]\n',
                         "[fixed] gives an impossible network: pool2 gets a 1x1 feature map"),
    "low above high": ('title = "t"\n[run]\nsampler = "tpe"\ntrials = 5\n[space]\nlr = { low = 1.0, high = 0.1 }\n',
                       "[space] lr: low (1.0) must be below high (0.1)"),
    "log from zero": ('title = "t"\n[run]\nsampler = "tpe"\ntrials = 5\n[space]\nlr = { low = 0, high = 1, log = true }\n',
                      "a log distribution needs low > 0"),
    "distribution key": ('title = "t"\n[run]\nsampler = "tpe"\ntrials = 5\n[space]\nlr = { lo = 0.1, high = 1 }\n',
                         "unknown key 'lo'; did you mean low?"),
    "grid distribution": ('title = "t"\n[space]\nlr = { low = 0.1, high = 1.0 }\n',
                          "[space] lr is a distribution, which the grid sampler cannot enumerate"),
    "trials on grid": ('title = "t"\n[run]\ntrials = 4\n[space]\npooling = ["max"]\n', "trials is for searches"),
    "search budget": ('title = "t"\n[run]\nsampler = "tpe"\n[space]\npooling = ["max"]\n',
                      "a tpe search needs trials = N"),
    "pareto pruning": ('title = "t"\n[run]\nsampler = "nsga2"\ntrials = 4\nprune = true\n'
                       'objectives = ["valid_acc", "examples_per_sec"]\n[space]\npooling = ["max"]\n',
                       "prune works with one objective only"),
    "test set as objective": ('title = "t"\n[run]\nsampler = "tpe"\ntrials = 4\n'
                              'objectives = ["test_acc"]\n[space]\npooling = ["max"]\n',
                              "objectives: test_acc would let the test set choose; use valid_acc"),
    "no validation": ('title = "t"\n[run]\nvalidation = 0\n[space]\npooling = ["max"]\n',
                      "validation must be a whole number of training images to hold out, at "
                      "least 10"),
    "bad toml": ('title = "t\n', "not valid TOML"),
    "no title": ('[space]\npooling = ["max"]\n', "title is missing"),
    "space and arms": ('title = "t"\n[space]\npooling = ["max"]\n[[arms]]\nlr = 0.1\n',
                       "give either [space] or [[arms]], not both"),
    "quick key": ('title = "t"\n[quick]\nepoch = 2\n[space]\npooling = ["max"]\n',
                  "[quick]: unknown key 'epoch'; did you mean epochs?"),
    "quick sampler": ('title = "t"\n[quick]\nsampler = "tpe"\n[space]\npooling = ["max"]\n',
                      "[quick]: unknown key 'sampler'"),
    "quick value": ('title = "t"\n[quick]\nseeds = 0\n[space]\npooling = ["max"]\n',
                    "[quick]: seeds must be a whole number >= 1, not 0"),
    "quick epochs searched": ('title = "t"\n[run]\nsampler = "tpe"\ntrials = 3\n[quick]\n'
                              'epochs = 2\n[space]\nepochs = [5, 10]\n',
                              "[quick] epochs and [space] epochs conflict"),
}


@pytest.mark.parametrize("text, message", BAD.values(), ids=BAD.keys())
def test_bad_sweep_file_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(SweepError) as caught:
        load_sweep(str(path))
    assert str(caught.value).startswith(str(path)) and message in str(caught.value)


def test_unknown_sweep_name_suggests_the_closest() -> None:
    with pytest.raises(SweepError, match="no sweep named 'poling': did you mean pooling?"):
        load_sweep("poling")


def test_every_shipped_sweep_has_a_quick_budget_that_keeps_the_books_470_steps() -> None:
    """The book's network at lr 0.9 learns by its second epoch of 60,000 (470 steps of
    256): a quick budget below that would answer "nothing learned"."""
    from lenet_lab.sweep.plan import default_study_name

    for path in list_sweeps():
        sweep = load_sweep(str(path))
        quick = sweep.with_budget("quick")
        assert quick.budget == "quick" and sweep.quick, path
        control = quick.control()
        examples = quick.run.subset or 60000
        steps = control["epochs"] * -(-examples // control["batch_size"])
        assert steps >= 470, (path, steps)
        assert quick.expected_trials() < sweep.expected_trials()
        assert default_study_name(quick, epochs=None, subset=None).endswith("-quick")
        assert sweep.with_budget("full") is sweep
