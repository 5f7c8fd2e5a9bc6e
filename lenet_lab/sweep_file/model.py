"""What a sweep file holds, once read: its run settings, dimensions, arms and the Sweep.

parse.py reads a TOML file into these and checks it; `RunSettings` are checked here
(`check_run`) since the command line overrides them (`Sweep.with_run`).

The control arm is the book's network with [fixed] applied. It is part of every sweep:
a grid that lacks it gets it as one more arm, and a search runs it first.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from lenet_lab.engines import ENGINES
from lenet_lab.errors import SweepError
from lenet_lab.spec import MAX_EPOCHS, MAX_SEED, LeNetSpec, TrainConfig
from lenet_lab.fields import field_kind, format_widths

__all__ = ["BUDGETS", "PRUNERS", "QUICK_KEYS", "CONFIG_FIELDS", "FIELDS", "MARGIN_DEFAULT",
           "NETWORK_FIELDS", "NUMERIC", "OBJECTIVES", "SAMPLERS", "VALIDATION_DEFAULT", "Arm",
           "Distribution", "RunSettings", "Sweep", "check_run", "specs_from"]

SAMPLERS = ("grid", "random", "tpe", "nsga2")
BUDGETS = ("full", "quick")  # the file's [run], or its [quick] on top
QUICK_KEYS = ("epochs", "seeds", "trials", "confirm", "subset")  # what [quick] may set
MAX_SEEDS = 1000  # repeats of an arm; beyond this a typo, not a plan
MAX_TRIALS = 100_000  # the most trials a search may run
# A grid's arms x seeds: each claim of a queued trial reads the queue's unfinished trials
# through Optuna's storage, which takes 0.4 s at 1,000 and 3.7 s at 10,000 (measured on two
# cores, 2026-12-02); beyond this a queue costs more than LeNet's trials do.
MAX_GRID_TRIALS = 2_000
# Each objective and its direction: parameter count is a cost. Accuracy is the validation
# split's: the test set only measures, so it is never an objective.
OBJECTIVES = {"valid_acc": "maximize", "examples_per_sec": "maximize", "param_count": "minimize"}
# Training images held out for validation, of the dataset's 60,000 (with subset, the same
# share of the subset): 10,000, as many as the test set.
VALIDATION_DEFAULT = 10_000
VALIDATION_MIN = 10  # one image per class
COMPUTE_FIELDS = ("epochs", "batch_size")  # what decides how many updates a network gets
PRUNERS = ("median", "halving")  # sweep.plan.pruner builds them
CONFIRM_DEFAULT = 3  # a search reruns its best 3 configurations with the sweep's seeds
MARGIN_DEFAULT = 0.005  # --until-decided: differences inside +-0.005 count as none
NETWORK_FIELDS = {f.name for f in fields(LeNetSpec)}
CONFIG_FIELDS = {f.name for f in fields(TrainConfig)} - {"seed"}  # seeds come from [run]
FIELDS = NETWORK_FIELDS | CONFIG_FIELDS
# Fields a search may draw from a distribution (num_classes is the dataset's to decide).
NUMERIC = {name for name in FIELDS if field_kind(name) in ("int", "float")} - {"num_classes"}
@dataclass(frozen=True)
class RunSettings:
    engine: str = "mxnet"
    epochs: int | None = None  # None: the book's (or [fixed]) value
    seeds: int = 3
    sampler: str = "grid"
    sampler_seed: int = 0
    trials: int | None = None
    objectives: tuple[str, ...] = ("valid_acc",)
    prune: bool | str = False  # false, true (= "median") or "halving" (PRUNERS)
    subset: int | None = None
    validation: int = VALIDATION_DEFAULT  # training images held out (see held_out)
    confirm: int | None = None  # searches: best configurations rerun with seeds (None: 3)
    until_decided: int | None = None  # add seeds until decided, up to this many
    margin: float = MARGIN_DEFAULT  # of equivalence, for until_decided
    confirm_small: bool = False  # also confirm the best at most twice the book's parameters

    @property
    def pruner(self) -> str | None:
        """The pruner's name (PRUNERS), or None."""
        return "median" if self.prune is True else self.prune or None

    @property
    def small(self) -> bool:
        """Whether a search confirms its best small configuration too and answers with the
        trade-off: confirm_small, or the parameter count as an objective."""
        return self.confirm_small or "param_count" in self.objectives

    @property
    def confirmations(self) -> int:
        if self.sampler == "grid":
            return 0
        return CONFIRM_DEFAULT if self.confirm is None else self.confirm

    def held_out(self, train_size: int) -> int:
        """Images held out for validation from a dataset of `train_size` training images:
        `validation` of them, or with `subset` the same share of the subset."""
        if self.subset is None:
            return self.validation
        share = round(self.validation * min(self.subset, train_size) / train_size)
        return max(VALIDATION_MIN, share)


@dataclass(frozen=True)
class Distribution:
    low: float
    high: float
    log: bool = False
    step: float | None = None
    integer: bool = False


@dataclass(frozen=True)
class Arm:
    """A set of field values on top of the control arm."""

    values: tuple[tuple[str, Any], ...]  # sorted (field, value) pairs
    name: str | None = None
    best_of: str | None = None  # a sweep whose best confirmed configuration this arm takes

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return ", ".join(f"{k}={_show(v)}" for k, v in self.values) or "book"

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)


def _show(value: Any) -> str:
    return format_widths(value) if isinstance(value, (list, tuple)) else str(value)


def check_run(run: RunSettings, where: str, *, grid_has_arms: bool) -> None:
    def fail(message: str) -> SweepError:
        return SweepError(f"{where}: {message}")

    def whole(name: str, value: Any, minimum: int, maximum: int | None = None) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise fail(f"{name} must be a whole number >= {minimum}, not {value!r}")
        if maximum is not None and value > maximum:
            raise fail(f"{name} must be at most {maximum:,}, not {value:,}" if minimum else
                       f"{name} must be a whole number from 0 to {maximum}, not {value!r}")

    if run.engine not in ENGINES:
        raise fail(f"engine must be one of {', '.join(ENGINES)}, not {run.engine!r}")
    if run.epochs is not None:
        whole("epochs", run.epochs, 1, MAX_EPOCHS)
    whole("seeds", run.seeds, 1, MAX_SEEDS)
    whole("sampler_seed", run.sampler_seed, 0, MAX_SEED)
    if run.subset is not None:
        whole("subset", run.subset, 10)
    if run.sampler not in SAMPLERS:
        raise fail(f"sampler must be one of {', '.join(SAMPLERS)}, not {run.sampler!r}")
    if isinstance(run.objectives, tuple) and "test_acc" in run.objectives:
        raise fail("objectives: test_acc would let the test set choose; use valid_acc, the "
                   "accuracy on the validation split (the test set only measures)")
    if not isinstance(run.objectives, tuple) or not run.objectives or \
            any(o not in OBJECTIVES for o in run.objectives) or \
            len(set(run.objectives)) != len(run.objectives):
        raise fail(f"objectives must be a list drawn from {', '.join(OBJECTIVES)}, "
                   f"not {run.objectives!r}")
    if isinstance(run.validation, bool) or not isinstance(run.validation, int) or \
            run.validation < VALIDATION_MIN:
        raise fail(f"validation must be a whole number of training images to hold out, at "
                   f"least {VALIDATION_MIN} (the default, 10000 of 60,000), not "
                   f"{run.validation!r}: every choice (the best arm, a search's objective, "
                   f"pruning, confirmation) is made on it, so that the test set only measures")
    if not isinstance(run.prune, bool) and run.prune not in PRUNERS:
        raise fail(f"prune must be true (median), false, or one of {', '.join(PRUNERS)}, not "
                   f"{run.prune!r}")
    if not isinstance(run.confirm_small, bool):
        raise fail(f"confirm_small must be true or false, not {run.confirm_small!r}")
    if run.confirm is not None:
        if run.sampler == "grid":
            raise fail("confirm is for searches: every arm of a grid already runs with every seed")
        whole("confirm", run.confirm, 0, 100)
        if run.confirm and "valid_acc" not in run.objectives:
            raise fail("confirm ranks configurations by valid_acc: add it to objectives, or set "
                       "confirm = 0")
    if run.until_decided is not None:
        whole("until_decided", run.until_decided, 1, MAX_SEEDS)
        if run.until_decided < run.seeds:
            raise fail(f"until_decided (the most seeds an arm may get) must be at least the "
                       f"{run.seeds} seeds it starts with, not {run.until_decided}")
        if run.confirmations == 0 and run.sampler != "grid":
            raise fail("until_decided adds seeds to confirmed arms: a search needs confirm >= 1")
    if isinstance(run.margin, bool) or not isinstance(run.margin, (int, float)) or \
            not 0 < run.margin < 1:
        raise fail(f"margin must be a number between 0 and 1, such as 0.005, not {run.margin!r}")
    if run.prune and len(run.objectives) > 1:
        raise fail("prune works with one objective only (Optuna cannot prune a Pareto search)")
    if run.sampler == "grid":
        if run.trials is not None:
            raise fail("trials is for searches: a grid runs every arm x seed (change seeds "
                       "or the grid instead)")
        if run.prune:
            raise fail("prune is for searches: pruning grid arms would cut their seeds short")
    else:
        if run.trials is None:
            raise fail(f"a {run.sampler} search needs trials = N, how many trials it searches")
        whole("trials", run.trials, 1, MAX_TRIALS)


@dataclass(frozen=True)
class Sweep:
    name: str
    path: Path
    text: str
    title: str
    exercise: int | None
    question: str | None
    run: RunSettings
    fixed: dict[str, Any]
    space: dict[str, list[Any] | Distribution] = field(default_factory=dict)
    arms: tuple[Arm, ...] = ()
    quick: dict[str, Any] = field(default_factory=dict)  # [quick]: the quick budget's [run]
    budget: str = "full"  # or "quick": `quick` applied to `run`

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def with_budget(self, budget: str) -> Sweep:
        """The file's own budget ("full", its [run]) or its quick one ([quick] on top)."""
        if budget not in BUDGETS:
            raise SweepError(f"--budget must be {' or '.join(BUDGETS)}, not {budget!r}")
        if budget == "full" or self.budget == budget:
            return self
        run = replace(self.run, **self.quick)
        check_run(run, f"{self.path}: [quick]", grid_has_arms=bool(self.arms))
        return replace(self, run=run, budget=budget)

    def check_size(self, where: str) -> None:
        """A grid the queue can serve (MAX_GRID_TRIALS), counted before any arm is built."""
        if self.run.sampler != "grid":
            return
        arms = len(self.arms) + 1 if self.arms else math.prod(len(v) for v in self.space.values())
        if arms * self.run.seeds > MAX_GRID_TRIALS:
            raise SweepError(f"{where}: this grid is {arms:,} arms x {self.run.seeds} seed(s) = "
                             f"{arms * self.run.seeds:,} trials, more than lenet-lab's queue "
                             f"serves well ({MAX_GRID_TRIALS:,}: each claim reads the queue): "
                             f"split it over several sweep files, or search it (sampler = "
                             f"\"random\", trials = N)")

    def with_run(self, **overrides: Any) -> Sweep:
        """Apply command-line overrides (None means: keep the file's value) and re-check."""
        changed = {k: v for k, v in overrides.items() if v is not None}
        run = replace(self.run, **changed)
        where = f"{self.path} with the command-line options"
        check_run(run, where, grid_has_arms=bool(self.arms))
        replace(self, run=run).check_size(where)
        if "epochs" in changed and "epochs" in self.space:
            raise SweepError(f"--epochs {run.epochs} conflicts with {self.path}: [space] epochs, "
                             f"which this sweep varies: drop --epochs, or copy the file and "
                             f"remove epochs from its [space]")
        if "epochs" in changed and "epochs" in self.fixed:
            raise SweepError(f"--epochs {run.epochs} conflicts with {self.path}: [fixed] epochs = "
                             f"{self.fixed['epochs']}: drop --epochs, or copy the file and "
                             f"remove epochs from its [fixed]")
        if "seeds" in changed and run.sampler != "grid" and not run.confirmations:
            raise SweepError(f"--seeds {run.seeds} on a search without confirmation only repeats "
                             f"the control arm: add --confirm K to rerun the best K "
                             f"configurations with {run.seeds} seeds, or drop --seeds")
        return replace(self, run=run)

    def control(self) -> dict[str, Any]:
        """The book's spec and training fields with [fixed] applied (and the run's epochs)."""
        values = {f.name: f.default for cls in (LeNetSpec, TrainConfig) for f in fields(cls)}
        values.update(self.fixed)
        if self.run.epochs is not None:
            values["epochs"] = self.run.epochs
        values.pop("seed")
        return values

    def grid_arms(self) -> list[Arm]:
        """Every arm of a grid sweep, the control arm first (added if the grid lacks it)."""
        if self.arms:
            arms = list(self.arms)
        else:
            keys = sorted(self.space)
            arms = [Arm(tuple(zip(keys, combo)))
                    for combo in itertools.product(*(self.space[k] for k in keys))]
        control = self.control()
        resolved = [{**control, **arm.as_dict()} for arm in arms]
        if control not in resolved:
            arms.insert(0, Arm(()))
        else:
            arms.insert(0, arms.pop(resolved.index(control)))
        return arms

    @property
    def first_seeds(self) -> range:
        """The seeds of every arm queued at the start: a grid's 0 to seeds-1; a search's
        control 1 to seeds, the seeds its confirmations and compute-matched control run
        too (seed 0 is the searched trials'), so that all of them pair by seed."""
        first = 0 if self.run.sampler == "grid" else 1
        return range(first, first + self.run.seeds)

    @property
    def compute_keys(self) -> list[str]:
        """What a search varies of the compute a network gets (epochs, batch size): its
        winner's values are run on the control too (the `matched` stage), so the answer
        can tell the recipe from the compute."""
        if self.run.sampler == "grid" or not self.run.confirmations:
            return []
        return [key for key in COMPUTE_FIELDS if key in self.space]

    @property
    def queued_stage(self) -> str:
        """The stage of an arm x seed queued at the start (also for trials queued before
        stages were recorded): every grid trial, or a search's control."""
        return "grid" if self.run.sampler == "grid" else "control"

    def is_control(self, values: dict[str, Any]) -> bool:
        return {**self.control(), **values} == self.control()

    def expected_trials(self) -> int:
        """Every arm x seed of a grid; a search's control seeds, its searched trials, its
        confirmation (one more configuration when the parameter count is an objective) and
        its compute-matched control (when it varies epochs or batch size)."""
        run = self.run
        if run.sampler == "grid":
            return len(self.grid_arms()) * run.seeds
        confirmed = run.confirmations + (run.confirmations > 0 and run.small)
        matched = bool(self.compute_keys)
        return run.seeds * (1 + confirmed + matched) + (run.trials or 0)

    def datasets(self) -> set[str]:
        """Every dataset an arm of this sweep can train on."""
        found = {self.control()["dataset"]} | set(self.space.get("dataset", []))
        return found | {arm.as_dict()["dataset"] for arm in self.arms if "dataset" in arm.as_dict()}


def specs_from(values: dict[str, Any], seed: int) -> tuple[LeNetSpec, TrainConfig]:
    """Spec and config from field values; raises InfeasibleSpec or SpecError."""
    spec = LeNetSpec(**{k: v for k, v in values.items() if k in NETWORK_FIELDS})
    config = TrainConfig(seed=seed, **{k: v for k, v in values.items() if k in CONFIG_FIELDS})
    return spec, config
