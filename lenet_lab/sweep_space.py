"""The parts of a sweep file, each checked on its own: run settings, dimensions, arms.

sweep_file.py puts them together into a Sweep and checks the whole. Every message names
where the value stands (`<file>: [space] lr`) and how to fix it.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, fields
from typing import Any

from lenet_lab.engines import ENGINES
from lenet_lab.errors import InfeasibleSpec, SpecError, SweepError
from lenet_lab.spec import MAX_SEED, LeNetSpec, TrainConfig, field_kind, format_widths

__all__ = ["Arm", "Distribution", "RunSettings", "check_field_value", "check_run",
           "parse_dimension", "unknown_key"]

SAMPLERS = ("grid", "random", "tpe", "nsga2")
MAX_SEEDS = 1000  # repeats of an arm; beyond this a typo, not a plan
MAX_TRIALS = 100_000  # a search's budget
# Each objective and its direction: parameter count is a cost.
OBJECTIVES = {"test_acc": "maximize", "examples_per_sec": "maximize", "param_count": "minimize"}
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
    objectives: tuple[str, ...] = ("test_acc",)
    prune: bool = False
    subset: int | None = None
    confirm: int | None = None  # searches: best configurations rerun with seeds (None: 3)
    until_decided: int | None = None  # add seeds until decided, up to this many
    margin: float = MARGIN_DEFAULT  # of equivalence, for until_decided

    @property
    def confirmations(self) -> int:
        if self.sampler == "grid":
            return 0
        return CONFIRM_DEFAULT if self.confirm is None else self.confirm


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


def unknown_key(where: str, key: str, known: set[str]) -> SweepError:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(sorted(known))}"
    return SweepError(f"{where}: unknown key {key!r}; {hint}")


def check_field_value(name: str, value: Any, where: str) -> Any:
    """One field value, checked on its own (infeasible shapes are left to the arms)."""
    if field_kind(name) == "widths":
        if not isinstance(value, list):
            raise SweepError(f"{where}: {name} takes a list of whole numbers such as [6, 16], "
                             f"not {value!r}")
        value = tuple(value)
    target = LeNetSpec if name in NETWORK_FIELDS else TrainConfig
    try:
        target(**{name: value})
    except InfeasibleSpec:
        pass
    except SpecError as exc:
        raise SweepError(f"{where}: {exc}") from None
    return value


def parse_dimension(key: str, value: Any, where: str) -> list[Any] | Distribution:
    if isinstance(value, list):
        if not value:
            raise SweepError(f"{where} is an empty list: give at least one value")
        values = [check_field_value(key, v, where) for v in value]
        twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
        if twice is not None:  # by value: 1 and 1.0 are one learning rate
            raise SweepError(f"{where} lists a value twice ({twice!r})")
        return values
    if isinstance(value, dict):
        allowed = {"low", "high", "log", "step"}
        for k in value:
            if k not in allowed:
                raise unknown_key(where, k, allowed)
        if key not in NUMERIC:
            raise SweepError(f"{where}: only numeric fields take a distribution; give a list "
                             f"of values instead")
        low, high = value.get("low"), value.get("high")
        integer = field_kind(key) == "int"
        for bound, number in (("low", low), ("high", high), ("step", value.get("step"))):
            if number is None and bound == "step":
                continue
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                raise SweepError(f"{where}: {bound} must be a number, not {number!r}")
            if not math.isfinite(number):
                raise SweepError(f"{where}: {bound} must be finite, not {number}")
            if integer and number != int(number):
                raise SweepError(f"{where}: {key} takes whole numbers: {bound} {number} is not one")
        if not low < high:
            raise SweepError(f"{where}: low ({low}) must be below high ({high})")
        log, step = value.get("log", False), value.get("step")
        if not isinstance(log, bool):
            raise SweepError(f"{where}: log must be true or false, not {log!r}")
        if log and low <= 0:
            raise SweepError(f"{where}: a log distribution needs low > 0, not {low}")
        if step is not None and (log or isinstance(step, bool) or not isinstance(step, (int, float))
                                 or step <= 0):
            raise SweepError(f"{where}: step must be a positive number and cannot go with log")
        for number in (low, high):
            check_field_value(key, int(number) if integer else float(number), where)
        return Distribution(float(low), float(high), log, step, integer)
    raise SweepError(f"{where} must be a list of values or a table such as "
                     f"{{ low = 0.01, high = 1.0, log = true }}, not {value!r}")


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
        whole("epochs", run.epochs, 1)
    whole("seeds", run.seeds, 1, MAX_SEEDS)
    whole("sampler_seed", run.sampler_seed, 0, MAX_SEED)
    if run.subset is not None:
        whole("subset", run.subset, 10)
    if run.sampler not in SAMPLERS:
        raise fail(f"sampler must be one of {', '.join(SAMPLERS)}, not {run.sampler!r}")
    if not isinstance(run.objectives, tuple) or not run.objectives or \
            any(o not in OBJECTIVES for o in run.objectives) or \
            len(set(run.objectives)) != len(run.objectives):
        raise fail(f"objectives must be a list drawn from {', '.join(OBJECTIVES)}, "
                   f"not {run.objectives!r}")
    if not isinstance(run.prune, bool):
        raise fail(f"prune must be true or false, not {run.prune!r}")
    if run.confirm is not None:
        if run.sampler == "grid":
            raise fail("confirm is for searches: every arm of a grid already runs with every seed")
        whole("confirm", run.confirm, 0, 100)
        if run.confirm and "test_acc" not in run.objectives:
            raise fail("confirm ranks configurations by test_acc: add it to objectives, or set "
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
            raise fail(f"a {run.sampler} search needs trials = N, its budget of searched trials")
        whole("trials", run.trials, 1, MAX_TRIALS)
