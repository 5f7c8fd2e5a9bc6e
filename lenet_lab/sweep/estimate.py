"""How long a sweep will take on this machine, before it runs.

A trial's time is its arithmetic over the machine's rate. Each epoch trains on every
training example (spec.train_flops_per_example each) and evaluates the validation split
(the forward pass); the test set is evaluated once, after the last epoch. So a trial
takes (epochs x (n_train x train FLOPs + n_valid x forward FLOPs) + n_test x forward
FLOPs) / rate, plus a fixed start (building the network, recording the trial). A searched
trial that may be pruned is costed at the epochs it is expected to train (pruned_epochs).
The rate (FLOP/s) is the median of the trials this database already holds for the engine
on this machine, else a short probe: the book's network trained here for a few seconds.
Larger networks use the cores better, so the rate is held at the book's size and scaled
by (FLOPs per example / the book's) ** SIZE_EXPONENT for each network: fitted on two CPU
cores to 102 full-budget trials from 0.9 to 27 MFLOP per example, where a flat rate put
the channels grid at 1.9 times its real time and this puts it within 5%
(docs/performance.md). The runner corrects its ETA by how the work done so far compared
with these estimates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lenet_lab import store
from lenet_lab.data import DATASET_INFO, Dataset
from lenet_lab.errors import SpecError
from lenet_lab.spec import LeNetSpec, TrainConfig
from lenet_lab.fields import field_value
from lenet_lab.store import Database
from lenet_lab.sweep.plan import WARMUP_EPOCHS
from lenet_lab.sweep_file import Distribution, Sweep, specs_from
from lenet_lab.train import flops_per_sec, train

__all__ = ["Rate", "database_rate", "probe_rate", "pruned_epochs", "rough_seconds",
           "sweep_seconds", "trial_seconds"]

TRIAL_START_S = 0.5  # building a network, recording the trial
SEARCH_SAMPLES = 64  # configurations drawn from a search's space to average its cost
PROBE = {"subset": 4096, "epochs": 3}  # the probe: 3 epochs of 4,096 examples, the last timed
MIN_TRIALS = 3  # finished trials needed to take the rate from the database
MIN_EXAMPLES = 10_000  # trials on fewer examples per epoch time mostly their overheads
SIZE_EXPONENT = 0.35  # FLOP/s reached grows as (FLOPs per example) ** SIZE_EXPONENT
BOOK_FLOPS = LeNetSpec().train_flops_per_example
# Without a probe or trials to go by: one core trains the book's network at about 12,000
# examples/sec (30 GFLOP/s); a lower figure errs towards starting helpers.
ASSUMED_RATE = 20e9
ROUGH_TRIALS = 2_000  # beyond this many trials a sweep is long whatever they cost


@dataclass(frozen=True)
class Rate:
    flops_per_s: float  # the rate of a network of the book's size
    source: str  # how it was measured, for the plan's first line

    @property
    def gflops(self) -> float:
        return self.flops_per_s / 1e9

    def at(self, flops_per_example: float) -> float:
        """The FLOP/s a network of this cost reaches."""
        return self.flops_per_s * (flops_per_example / BOOK_FLOPS) ** SIZE_EXPONENT


def probe_rate(engine: str, device: str, data: Dataset) -> Rate:
    """The book's network trained here for a few seconds; its last epoch is timed."""
    result = train(LeNetSpec(), TrainConfig(epochs=PROBE["epochs"], lr=0.1), engine=engine,
                   device=device, data=data.subset(PROBE["subset"]))
    examples_per_sec = result.final.examples_per_sec
    return Rate(flops_per_sec(examples_per_sec, LeNetSpec()),
                f"a probe of this machine: the book's network at {examples_per_sec:,.0f} "
                f"examples/sec")


def database_rate(db: Database, engine: str, device_name: str) -> Rate | None:
    """The median rate of this database's finished trials of `engine` on this machine."""
    if not store.has_results(db):
        return None
    rows = store.read_results(db)
    rows = rows[(rows.state == "complete") & (rows.engine == engine)
                & (rows.device_name == device_name) & rows.examples_per_sec.notna()
                & ~(rows.subset < MIN_EXAMPLES)]
    specs = [_spec(row) for _, row in rows.iterrows()]
    rates = [flops_per_sec(examples_per_sec, spec) *
             (BOOK_FLOPS / spec.train_flops_per_example) ** SIZE_EXPONENT
             for examples_per_sec, spec in zip(rows.examples_per_sec, specs)]
    if len(rates) < MIN_TRIALS:
        return None
    return Rate(float(np.median(rates)), f"{len(rates)} finished trials in the database")


def _spec(row: pd.Series) -> LeNetSpec:
    return LeNetSpec(**{name: field_value(name, row[name])
                        for name in LeNetSpec.__dataclass_fields__ if not pd.isna(row[name])})


def trial_seconds(spec: LeNetSpec, config: TrainConfig, sizes: tuple[int, int, int],
                  rate: Rate, *, epochs: float | None = None) -> float:
    """A trial on (n_train, n_valid, n_test) examples for `epochs` (its config's)."""
    n_train, n_valid, n_test = sizes
    each = n_train * spec.train_flops_per_example + n_valid * spec.flops_per_example
    work = (config.epochs if epochs is None else epochs) * each + n_test * spec.flops_per_example
    return TRIAL_START_S + work / rate.at(spec.train_flops_per_example)


def pruned_epochs(epochs: int, pruner: str | None) -> float:
    """The epochs a searched trial is expected to train: all of them unpruned; with
    successive halving, WARMUP_EPOCHS and a third of the trials at each rung after (3, 9,
    27, ...); with the median pruner, half the trials stop at WARMUP_EPOCHS (about what
    the 2026-11-28 training search did after its first epoch)."""
    if pruner == "halving":
        total, reached, share, rung = 0.0, 0, 1.0, WARMUP_EPOCHS
        while reached < epochs:
            stop = min(epochs, rung)
            total += share * (stop - reached)
            reached, share, rung = stop, share / 3, rung * 3
        return total
    if pruner == "median":
        return 0.5 * epochs + 0.5 * min(epochs, WARMUP_EPOCHS)
    return float(epochs)


def _sizes(sweep: Sweep, dataset: str) -> tuple[int, int, int]:
    sizes = DATASET_INFO[dataset].sizes
    subset = sweep.run.subset
    train, test = (min(subset, sizes["train"]), min(subset, sizes["test"])) if subset else \
        (sizes["train"], sizes["test"])
    valid = sweep.run.held_out(sizes["train"])
    return train - valid, valid, test


def _cost(sweep: Sweep, values: dict[str, Any], rate: Rate, *, searched: bool = False) -> float:
    try:
        spec, config = specs_from({**sweep.control(), **values}, seed=0)
    except SpecError:  # an infeasible arm: recorded at once
        return 0.0
    epochs = pruned_epochs(config.epochs, sweep.run.pruner) if searched else None
    return trial_seconds(spec, config, _sizes(sweep, config.dataset), rate, epochs=epochs)


def _draw(dimension: list[Any] | Distribution, rng: np.random.Generator) -> Any:
    if not isinstance(dimension, Distribution):
        return dimension[rng.integers(len(dimension))]
    low, high = dimension.low, dimension.high
    value = math.exp(rng.uniform(math.log(low), math.log(high))) if dimension.log else \
        rng.uniform(low, high)
    return int(round(value)) if dimension.integer else value


def sweep_seconds(sweep: Sweep, rate: Rate, *, done: int = 0) -> float:
    """The estimated time of a sweep's trials that are not yet done (done: how many are)."""
    run = sweep.run
    if run.sampler == "grid":
        total = run.seeds * sum(_cost(sweep, arm.as_dict(), rate) for arm in sweep.grid_arms())
    else:
        rng = np.random.default_rng(0)
        drawn = [{k: _draw(d, rng) for k, d in sweep.space.items()} for _ in range(SEARCH_SAMPLES)]
        searched = float(np.mean([_cost(sweep, v, rate, searched=True) for v in drawn]))
        whole = float(np.mean([_cost(sweep, v, rate) for v in drawn]))
        confirmed = sweep.expected_trials() - run.seeds - (run.trials or 0)
        total = run.seeds * _cost(sweep, {}, rate) + (run.trials or 0) * searched + \
            confirmed * whole
    expected = sweep.expected_trials()
    return total * max(0, expected - done) / expected if expected else 0.0


def rough_seconds(sweep: Sweep, db: Database, *, device_name: str, done: int = 0) -> float:
    """sweep_seconds without a probe: at the database's rate, else ASSUMED_RATE (to
    decide whether a helper's start-up is worth it, not to promise a time)."""
    if sweep.expected_trials() > ROUGH_TRIALS:
        return math.inf
    rate = database_rate(db, sweep.run.engine, device_name) or Rate(ASSUMED_RATE, "assumed")
    return sweep_seconds(sweep, rate, done=done)
