"""Arms: their keys and labels, their numbers, and the one ranking of arms.

Pure functions of lab_results rows: nothing here draws or touches the database, so tests
can check each number directly. `ranked` is the one order of "best" used everywhere: the
figures, the answer's leader, the confirmation stage, exercise 9's `best_of` and
exercise 10's maps (best.py). It reads validation accuracy, never test accuracy: the
test set only measures (studies from before lenet-lab held a validation split out are
ranked by test accuracy, their only measure).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

import numpy as np
import pandas as pd

from lenet_lab.results.outcomes import ArmOutcome, arm_outcome, trial_outcome
from lenet_lab.results.stats import LEVEL, Interval, difference, mean_interval, paired_difference
from lenet_lab.spec import SPEC_FIELDS
from lenet_lab.fields import field_value, format_widths
from lenet_lab.status import Status
from lenet_lab.train import blew_up

__all__ = ["BOOK", "BOOK_PARAMS_FACTOR", "MATCHED", "ArmName", "ArmStats", "arm_keys",
           "arm_legend", "arm_names", "arm_stats", "best_learned", "chance_level", "failures",
           "is_control", "learning_curves", "ranked", "shared_machine", "shares_seeds",
           "shown_arms", "speed_conditions", "sig", "small_limit", "summary_counts",
           "summary_rows", "trial_outcomes", "versus"]

BOOK = "the book's network"  # how answers name the control

BOOK_PARAMS_FACTOR = 2  # "small": at most twice the book's parameters
SHOWN_ARMS = 10  # figures draw the best this many arms and the control; tables list all
SPEED_SPREAD = 0.10  # examples/sec varying more than this within an arm: a shared machine


def sig(value: Any, digits: int = 4) -> str:
    """A number as text with at most `digits` significant digits (0.0241, 3,412, 55,060,
    1e+09); whole-number counts (parameters) stay exact, text stays text."""
    if value is None or isinstance(value, (bool, str, np.bool_)):
        return "-" if value is None else str(value)
    if isinstance(value, (tuple, list)):
        return format_widths(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    value = float(value)
    if not math.isfinite(value):
        return "-" if math.isnan(value) else str(value)
    if 1000 <= abs(value) < 1e6:  # thousands separators; at most `digits` significant
        return f"{round(value, digits - 1 - math.floor(math.log10(abs(value)))):,.0f}"
    return f"{value:.{digits}g}"


@dataclass(frozen=True)
class ArmName:
    """How pages and tables name an arm: a short key (`book`, `A1`, ...) in figures,
    and a label of the values that vary between the study's arms (`lr=0.0241`)."""

    key: str
    label: str
    values: dict[str, Any]  # the varying fields' values, as stored
    named: bool = False  # the label is an [[arms]] name, not made of the values

    def __str__(self) -> str:
        return self.label if self.key == "book" else f"{self.key} ({self.label})"


def arm_names(results: pd.DataFrame, *, control: str = BOOK
              ) -> dict[str, ArmName]:
    """Arm (as stored) -> its ArmName. The control is `book` (labelled `control`); the
    others are A1, A2, ... in the order of their first trial, which for a grid is the
    sweep file's order, so studies of one grid (other engines, budgets) give an arm the
    same key."""
    rows = results[results.arm.notna()].sort_values("trial")
    firsts = rows.groupby("arm", sort=False).first()  # first non-null value of each column
    varying = [c for c in SPEC_FIELDS if c in firsts and c != "seed"
               and firsts[c].dropna().astype(str).nunique() > 1]
    keys = arm_keys(zip(rows.trial, rows.arm, is_control(rows)))
    names = {}
    for arm, first in firsts.iterrows():
        values = {c: _shown(c, first[c]) for c in varying if not pd.isna(first[c])}
        shown = ", ".join(f"{c}={sig(v)}" for c, v in values.items())
        if keys[arm] == "book":
            names[arm] = ArmName("book", control, values)
            continue
        named = not re.match(r"[a-z_]+=", str(arm))  # an [[arms]] name, not "lr=0.1, ..."
        names[arm] = ArmName(keys[arm], str(arm) if named or not shown else shown, values, named)
    return names


def arm_keys(trials: Iterable[tuple[int, str, bool]]) -> dict[str, str]:
    """{arm: key} from (trial number, arm, is control) rows: the control is `book`, the
    others A1, A2, ... in the order of their first trial."""
    keys: dict[str, str] = {}
    others = 0
    for _, arm, control in sorted(trials, key=lambda row: row[0]):
        if arm in keys:
            continue
        others += not control
        keys[arm] = "book" if control else f"A{others}"
    return keys


def is_control(results: pd.DataFrame) -> pd.Series:
    """Each row's control flag as a bool (stored 0/1, or missing for a queued trial)."""
    if "is_control" not in results:
        return pd.Series(False, index=results.index)
    return results.is_control.map(lambda v: False if pd.isna(v) else bool(v)).astype(bool)


def _shown(name: str, value: Any) -> Any:
    """A stored value as shown: the spec's value, width lists as their text ("6,16")."""
    value = field_value(name, value)
    return format_widths(value) if isinstance(value, tuple) else value


def chance_level(results: pd.DataFrame) -> float:
    """1 / classes: the accuracy of guessing (0.1 for both datasets)."""
    classes = results.num_classes.dropna() if "num_classes" in results else ()
    return 1.0 / (int(classes.iloc[0]) if len(classes) else 10)


MATCHED = "matched"  # the stage of the control rerun at a search winner's compute


@dataclass(frozen=True)
class ArmStats:
    arm: str
    is_control: bool
    states: dict[str, int]
    test_acc: Interval
    train_acc: Interval
    train_loss: Interval
    examples_per_sec: Interval
    param_count: int | None
    test_accs: list[float] = field(default_factory=list)
    vs_control: Interval | None = None  # test_acc difference to the control arm
    outcome: ArmOutcome = field(default_factory=lambda: ArmOutcome(None))
    lr: float | None = None
    name: ArmName | None = None
    first_trial: int = 0  # the number of its first trial
    seeds: list[int] = field(default_factory=list)  # of test_accs and valid_accs, in order
    valid_acc: Interval = field(default_factory=lambda: mean_interval([]))
    valid_accs: list[float] = field(default_factory=list)
    stage: str | None = None  # of its first trial: grid, control, search, confirm, matched

    @property
    def key(self) -> str:
        return self.name.key if self.name else self.arm

    @property
    def candidate(self) -> bool:
        """An arm that may be chosen as best: not the control, nor the control rerun at
        another arm's compute (a yardstick, not a configuration)."""
        return not self.is_control and self.stage != MATCHED

    @property
    def chosen_by(self) -> Interval:
        """What choices read: validation accuracy (test accuracy only in studies from
        before validation splits, which have nothing else)."""
        return self.valid_acc if self.valid_acc.n else self.test_acc

    def __str__(self) -> str:
        return str(self.name) if self.name else self.arm


def ranked(arms: list[ArmStats], *, with_control: bool = False) -> list[ArmStats]:
    """The arms that have a result and may be chosen (candidates; the control too when
    asked), best first: arms that learned before those that did not, then by mean
    validation accuracy (ArmStats.chosen_by), then by their first trial (so a resume
    ranks ties alike). The one meaning of "best arm"."""
    done = [a for a in arms if a.test_acc.n and (a.candidate or with_control and a.is_control)]
    return sorted(done, key=lambda a: (not a.outcome.learned, -_or(a.chosen_by.mean, -1.0),
                                       a.first_trial))


def best_learned(arms: list[ArmStats], *, with_control: bool = False) -> ArmStats | None:
    """The best arm (see `ranked`) when it learned, else None."""
    found = ranked(arms, with_control=with_control)
    return found[0] if found and found[0].outcome.learned else None


def small_limit(book_params: int) -> int:
    """The most parameters a network may have to count as small beside the book's."""
    return BOOK_PARAMS_FACTOR * book_params


def shown_arms(arms: list[ArmStats], limit: int = SHOWN_ARMS) -> list[ArmStats]:
    """The control (and its compute-matched rerun) and the best `limit` other arms that
    have a result, for figures."""
    return [a for a in arms if not a.candidate and a.test_acc.n] + ranked(arms)[:limit]


def speed_conditions(results: pd.DataFrame) -> str:
    """How the completed trials' speeds were measured, in a sentence (databases from
    before lenet-lab recorded it say only what examples/sec counts)."""
    done = results[results.state == Status.COMPLETE]
    counted = "Examples/sec counts training examples over training time (evaluation excluded)"
    if "workers" not in done or done.workers.isna().all():
        return counted + "."

    def span(column: str) -> str:
        low, high = int(done[column].min()), int(done[column].max())
        return str(low) if low == high else f"{low} to {high}"

    load = f"; the machine's mean load was {sig(done.cpu_load.mean(), 2)}" \
        if done.cpu_load.notna().any() else ""
    return (f"{counted}, with {span('workers')} trial(s) training at once on the machine and "
            f"{span('threads')} thread(s) each{load}. Arms compare fairly where these agree.")


def shared_machine(results: pd.DataFrame) -> bool:
    """Whether examples/sec varied within an arm by more than SPEED_SPREAD of its mean:
    then other work shared the machine, and speeds say nothing about the arms."""
    done = results[results.state == Status.COMPLETE]
    spread = done.groupby("arm").examples_per_sec.agg(lambda v: (v.max() - v.min()) / v.mean())
    return bool((spread > SPEED_SPREAD).any())


def trial_outcomes(results: pd.DataFrame, epochs: pd.DataFrame | None = None) -> pd.Series:
    """Each row's Outcome (or None), in the order of `results` (see outcomes.py)."""
    known = epochs is not None and len(epochs) > 0
    lowest = epochs.groupby("trial").train_loss.min().to_dict() if known else {}
    classes = results.num_classes if "num_classes" in results else pd.Series(10, results.index)
    classes = classes.fillna(10).astype(int)
    by_trial = dict(zip(results.trial, classes))
    diverged = {trial for trial, epoch, loss in (
        zip(epochs.trial, epochs.epoch, epochs.train_loss) if known else ())
        if blew_up(loss, epoch, by_trial.get(trial, 10))}
    return pd.Series([trial_outcome(state=row.state, test_acc=row.test_acc,
                                    final_loss=row.train_loss, min_loss=lowest.get(row.trial),
                                    blew_up=row.trial in diverged, classes=int(n))
                      for row, n in zip(results.itertuples(), classes)], index=results.index,
                     dtype=object)


def arm_stats(results: pd.DataFrame, epochs: pd.DataFrame | None = None, *,
              names: dict[str, ArmName] | None = None) -> list[ArmStats]:
    """One entry per arm, the control first, then by mean test accuracy (best first).

    Outcomes need each trial's lowest loss, from `epochs` (without it none is unstable).
    `names` defaults to arm_names(results); pass the whole study's for a part of it.
    """
    arms = []
    outcomes = trial_outcomes(results, epochs)
    names = arm_names(results) if names is None else names
    for arm, rows in results.groupby("arm", sort=False):
        done = rows[rows.state == Status.COMPLETE].sort_values("seed")
        params = done.param_count.dropna()
        lrs = rows.lr.dropna() if "lr" in rows else ()
        valid = done.valid_acc if "valid_acc" in done else pd.Series(math.nan, done.index)
        stages = rows.sort_values("trial").stage.dropna() if "stage" in rows else ()
        arms.append(ArmStats(
            arm=str(arm), is_control=bool(is_control(rows).any()),
            states={str(k): int(v) for k, v in rows.state.value_counts().sort_index().items()},
            test_acc=mean_interval(done.test_acc), train_acc=mean_interval(done.train_acc),
            train_loss=mean_interval(done.train_loss),
            examples_per_sec=mean_interval(done.examples_per_sec),
            param_count=int(params.iloc[0]) if len(params) else None,
            test_accs=[float(v) for v in done.test_acc],
            outcome=arm_outcome(list(outcomes[rows.index])),
            lr=float(lrs.iloc[0]) if len(lrs) else None, name=names.get(arm),
            first_trial=int(rows.trial.min()),
            seeds=[int(v) for v in done.seed], valid_acc=mean_interval(valid.dropna()),
            valid_accs=[float(v) for v in valid],
            stage=str(stages.iloc[0]) if len(stages) else None))
    control = next((a for a in arms if a.is_control), None)
    if control is not None:
        arms = [a if a is control else _with_difference(a, control) for a in arms]
    return sorted(arms, key=lambda a: (not a.is_control, -_or(a.chosen_by.mean, -1.0)))


def shares_seeds(arm: ArmStats, other: ArmStats) -> bool:
    """Whether two arms ran the same seeds (as every grid's arms and a search's control,
    confirmations and compute-matched control do, by design): then they are compared
    pair by pair, seed by seed."""
    return len(arm.seeds) >= 2 and sorted(arm.seeds) == sorted(other.seeds)


def versus(arm: ArmStats, other: ArmStats, level: float = LEVEL) -> Interval:
    """arm's test accuracy minus other's: paired by seed where they share seeds
    (shares_seeds), else Welch's unpaired interval."""
    if shares_seeds(arm, other):
        mine, theirs = (dict(zip(a.seeds, a.test_accs)) for a in (arm, other))
        order = sorted(mine)
        return paired_difference([mine[s] for s in order], [theirs[s] for s in order], level)
    return difference(arm.test_accs, other.test_accs, level)


def _with_difference(arm: ArmStats, control: ArmStats) -> ArmStats:
    return replace(arm, vs_control=versus(arm, control))


def _or(value: float, default: float) -> float:
    return default if math.isnan(value) else value


def learning_curves(epochs: pd.DataFrame, results: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per arm: for each epoch the mean, min and max over seeds of each metric.

    `epochs` has trial, epoch, train_loss, train_acc, valid_acc, test_acc; only
    completed trials count.
    """
    done = results[results.state == Status.COMPLETE][["trial", "arm"]]
    merged = epochs.merge(done, on="trial")
    metrics = [m for m in ("train_loss", "train_acc", "valid_acc", "test_acc") if m in merged]
    curves = {}
    for arm, rows in merged.groupby("arm", sort=False):
        grouped = rows.groupby("epoch")[metrics]
        frame = grouped.agg(["mean", "min", "max"])
        frame.columns = [f"{metric}_{stat}" for metric, stat in frame.columns]
        frame["seeds"] = rows.groupby("epoch").size()
        curves[str(arm)] = frame.reset_index()
    return curves


def failures(results: pd.DataFrame) -> pd.DataFrame:
    """Trials that did not complete, with their reason, in trial order."""
    other = results[results.state != Status.COMPLETE]
    return other[["trial", "arm", "seed", "state", "epochs_done", "reason"]].sort_values("trial")


SUMMARY_HEADER = ["arm", "seeds", "valid", "test acc", "sd", "vs book", "ex/sec", "outcome",
                  "other"]


def summary_rows(arms: list[ArmStats]) -> list[list[str]]:
    """The end-of-sweep table: one row per arm by its key (see SUMMARY_HEADER and
    arm_legend), narrow enough for an 80-column terminal: mean validation accuracy (what
    chose), mean test accuracy, its spread over seeds and its difference from the
    control's (paired by seed where they share seeds; the answer gives the intervals)."""
    def number(value: float, sign: str = "") -> str:
        return "-" if math.isnan(value) else f"{value:{sign}.4f}"

    return [[arm.key, str(arm.test_acc.n), number(arm.valid_acc.mean), number(arm.test_acc.mean),
             number(arm.test_acc.sd),
             number(arm.vs_control.mean if arm.vs_control else math.nan, "+"),
             sig(arm.examples_per_sec.mean), arm.outcome.short(),
             ", ".join(f"{n} {state}" for state, n in arm.states.items() if state != Status.COMPLETE)]
            for arm in arms]


def arm_legend(arms: list[ArmStats]) -> list[str]:
    """What each key stands for, one line per arm: `A1  pooling=max`."""
    return [f"{arm.key:<5} {arm.name.label if arm.name else arm.arm}" for arm in arms]


def summary_counts(results: pd.DataFrame) -> dict[str, Any]:
    states = results.state.value_counts()
    return {"trials": int(len(results)), **{str(k): int(v) for k, v in states.items()}}
