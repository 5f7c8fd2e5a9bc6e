"""The numbers behind every figure and every answer: pure functions of lab_results rows.

Nothing here draws or touches the database, so tests can check each number directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import pandas as pd

from lenet_lab.report.outcomes import ArmOutcome, arm_outcome, trial_outcome
from lenet_lab.spec import Status

__all__ = ["ArmStats", "Interval", "arm_stats", "difference", "failures", "learning_curves",
           "mean_interval", "pareto_front", "summary_counts", "summary_rows", "t_quantile",
           "trial_outcomes"]

LEVEL = 0.95  # confidence level of every interval in the reports


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile (scipy)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, not p={p}, df={df}")
    from scipy import stats

    return float(stats.t.ppf(p, df))


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float  # NaN when there are too few values for an interval
    high: float
    n: int
    sd: float = math.nan  # of the values; for a difference, its standard error
    df: float = math.nan  # degrees of freedom of a difference (Welch)

    @property
    def known(self) -> bool:
        return not math.isnan(self.low)


def mean_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean with its t-interval; with one value the interval is unknown."""
    array = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = len(array)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(array.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1)
    sd = float(array.std(ddof=1))
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd)


def difference(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Interval:
    """mean(a) - mean(b) with Welch's t-interval (unequal variances)."""
    x, y = (np.asarray(v, dtype=float) for v in (a, b))
    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    if len(x) == 0 or len(y) == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    diff = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return Interval(diff, math.nan, math.nan, min(len(x), len(y)))
    if np.ptp(x) == 0 and np.ptp(y) == 0:  # every seed alike (var() would give ~1e-33)
        return Interval(diff, diff, diff, min(len(x), len(y)), 0.0)
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(vx + vy)
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    half = t_quantile(0.5 + level / 2, df) * se
    return Interval(diff, diff - half, diff + half, min(len(x), len(y)), se, df)


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


def trial_outcomes(results: pd.DataFrame, epochs: pd.DataFrame | None = None) -> pd.Series:
    """Each row's Outcome (or None), in the order of `results` (see outcomes.py)."""
    lowest = {} if epochs is None or not len(epochs) else \
        epochs.groupby("trial").train_loss.min().to_dict()
    classes = results.num_classes if "num_classes" in results else pd.Series(10, results.index)
    return pd.Series([trial_outcome(state=row.state, test_acc=row.test_acc,
                                    final_loss=row.train_loss, min_loss=lowest.get(row.trial),
                                    classes=10 if pd.isna(n) else int(n))
                      for row, n in zip(results.itertuples(), classes)], index=results.index,
                     dtype=object)


def arm_stats(results: pd.DataFrame, epochs: pd.DataFrame | None = None) -> list[ArmStats]:
    """One entry per arm, the control first, then by mean test accuracy (best first).

    Outcomes need each trial's lowest loss, from `epochs` (without it none is unstable).
    """
    arms = []
    outcomes = trial_outcomes(results, epochs)
    for arm, rows in results.groupby("arm", sort=False, dropna=False):
        done = rows[rows.state == Status.COMPLETE]
        params = done.param_count.dropna()
        lrs = rows.lr.dropna() if "lr" in rows else ()
        arms.append(ArmStats(
            arm=str(arm), is_control=bool(rows.is_control.dropna().astype(bool).any()),
            states={str(k): int(v) for k, v in rows.state.value_counts().sort_index().items()},
            test_acc=mean_interval(done.test_acc), train_acc=mean_interval(done.train_acc),
            train_loss=mean_interval(done.train_loss),
            examples_per_sec=mean_interval(done.examples_per_sec),
            param_count=int(params.iloc[0]) if len(params) else None,
            test_accs=[float(v) for v in done.test_acc],
            outcome=arm_outcome(list(outcomes[rows.index])),
            lr=float(lrs.iloc[0]) if len(lrs) else None))
    control = next((a for a in arms if a.is_control), None)
    if control is not None:
        arms = [a if a is control else _with_difference(a, control) for a in arms]
    return sorted(arms, key=lambda a: (not a.is_control, -_or(a.test_acc.mean, -1.0)))


def _with_difference(arm: ArmStats, control: ArmStats) -> ArmStats:
    return replace(arm, vs_control=difference(arm.test_accs, control.test_accs))


def _or(value: float, default: float) -> float:
    return default if math.isnan(value) else value


def learning_curves(epochs: pd.DataFrame, results: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per arm: for each epoch the mean, min and max over seeds of each metric.

    `epochs` has trial, epoch, train_loss, train_acc, test_acc; only completed trials count.
    """
    done = results[results.state == Status.COMPLETE][["trial", "arm"]]
    merged = epochs.merge(done, on="trial")
    curves = {}
    for arm, rows in merged.groupby("arm", sort=False):
        grouped = rows.groupby("epoch")[["train_loss", "train_acc", "test_acc"]]
        frame = grouped.agg(["mean", "min", "max"])
        frame.columns = [f"{metric}_{stat}" for metric, stat in frame.columns]
        frame["seeds"] = rows.groupby("epoch").size()
        curves[str(arm)] = frame.reset_index()
    return curves


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (both maximised)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(ox >= x and oy >= y and (ox > x or oy > y) for ox, oy in points)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def failures(results: pd.DataFrame) -> pd.DataFrame:
    """Trials that did not complete, with their reason, in trial order."""
    other = results[results.state != Status.COMPLETE]
    return other[["trial", "arm", "seed", "state", "epochs_done", "reason"]].sort_values("trial")


SUMMARY_HEADER = ["arm", "complete", "test acc mean", "sd", "min", "max", "examples/sec",
                  "outcome", "other"]


def summary_rows(arms: list[ArmStats]) -> list[list[str]]:
    """The end-of-sweep table: one row per arm (see SUMMARY_HEADER)."""
    def number(value: float, form: str = ".4f") -> str:
        return "-" if math.isnan(value) else format(value, form)

    return [[f"{arm.arm}{' (control)' if arm.is_control else ''}", str(arm.test_acc.n),
             number(arm.test_acc.mean), number(arm.test_acc.sd),
             number(min(arm.test_accs, default=math.nan)),
             number(max(arm.test_accs, default=math.nan)),
             number(arm.examples_per_sec.mean, ",.0f"), arm.outcome.short(),
             ", ".join(f"{n} {state}" for state, n in arm.states.items() if state != Status.COMPLETE)]
            for arm in arms]


def summary_counts(results: pd.DataFrame) -> dict[str, Any]:
    states = results.state.value_counts()
    return {"trials": int(len(results)), **{str(k): int(v) for k, v in states.items()}}
