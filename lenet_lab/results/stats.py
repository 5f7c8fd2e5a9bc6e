"""Statistics of test accuracies: t-intervals, Welch's difference and p-value, Holm's
adjustment, the Pareto front. Pure functions of numbers; scipy for Student's t."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["LEVEL", "Interval", "difference", "holm", "mean_interval", "pareto_front",
           "t_quantile", "welch_p"]

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


def welch_p(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of Welch's t-test; 0 or 1 when both samples have no spread."""
    d = difference(a, b)
    if not d.known:
        return math.nan
    if d.sd == 0:
        return 1.0 if d.mean == 0 else 0.0
    from scipy import stats

    return float(2 * stats.t.sf(abs(d.mean / d.sd), d.df))


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order (NaN stays NaN)."""
    order = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted, running = list(p_values), 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        adjusted[i] = running
    return adjusted


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (both maximised)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(ox >= x and oy >= y and (ox > x or oy > y) for ox, oy in points)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])
