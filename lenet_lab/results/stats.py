"""Statistics of accuracies: t-intervals, the difference of two arms (paired by seed, or
Welch's when they do not share seeds) with its p-value, the smallest difference a
comparison could detect, the Pareto front. Pure functions of numbers;
scipy for Student's t and its noncentral form."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

__all__ = ["LEVEL", "POWER", "Interval", "detectable", "difference", "mean_interval",
           "paired_difference", "pareto_front", "seeds_to_detect", "t_p", "t_quantile",
           "welch_p"]

LEVEL = 0.95  # confidence level of every interval in the reports
POWER = 0.8  # "could detect": found with this probability by a two-sided t-test
TIES = 1e-12  # values closer than this are equal (float rounding; accuracies step by 1e-4)


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
    if np.ptp(x) < TIES and np.ptp(y) < TIES:  # every seed alike (var() would give ~1e-33)
        return Interval(diff, diff, diff, min(len(x), len(y)), 0.0)
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(vx + vy)
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    half = t_quantile(0.5 + level / 2, df) * se
    return Interval(diff, diff - half, diff + half, min(len(x), len(y)), se, df)


def paired_difference(a: Sequence[float], b: Sequence[float],
                      level: float = LEVEL) -> Interval:
    """mean(a - b) over pairs (the same seed in both arms) with its t-interval (n - 1
    degrees of freedom); pairs missing either value are dropped."""
    x, y = (np.asarray(v, dtype=float) for v in (a, b))
    if len(x) != len(y):
        raise ValueError(f"paired_difference needs pairs, not {len(x)} and {len(y)} values")
    d = (x - y)[~(np.isnan(x) | np.isnan(y))]
    if len(d) == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(d.mean())
    if len(d) < 2:
        return Interval(mean, math.nan, math.nan, len(d))
    if np.ptp(d) < TIES:  # every pair differs alike
        return Interval(mean, mean, mean, len(d), 0.0, len(d) - 1.0)
    se = float(d.std(ddof=1)) / math.sqrt(len(d))
    half = t_quantile(0.5 + level / 2, len(d) - 1) * se
    return Interval(mean, mean - half, mean + half, len(d), se, len(d) - 1.0)


def t_p(d: Interval) -> float:
    """Two-sided p-value of a difference with its standard error and degrees of freedom
    (paired_difference or difference); 0 or 1 when there is no spread."""
    if not d.known:
        return math.nan
    if d.sd == 0:
        return 1.0 if d.mean == 0 else 0.0
    from scipy import stats

    return float(2 * stats.t.sf(abs(d.mean / d.sd), d.df))


def welch_p(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of Welch's t-test; 0 or 1 when both samples have no spread."""
    return t_p(difference(a, b))


def _power(effect: float, se: float, df: float, alpha: float) -> float:
    """Probability that a two-sided t-test at `alpha` finds a true difference `effect`
    measured with standard error `se` (noncentral t)."""
    from scipy import stats

    critical = stats.t.ppf(1 - alpha / 2, df)
    shift = effect / se
    # the far tail is tiny for effect > 0, and scipy's nct returns NaN for some of it
    return float(stats.nct.sf(critical, df, shift) +
                 np.nan_to_num(stats.nct.cdf(-critical, df, shift)))


def detectable(se: float, df: float, *, alpha: float = 1 - LEVEL, power: float = POWER) -> float:
    """The smallest true difference a two-sided t-test at `alpha` finds with probability
    `power`, for a comparison with standard error `se` and `df` degrees of freedom; NaN
    when either is unknown or zero."""
    if not (se > 0 and df > 0):
        return math.nan
    from scipy.optimize import brentq

    high = se
    while _power(high, se, df, alpha) < power:
        high *= 2
    return float(brentq(lambda e: _power(e, se, df, alpha) - power, 0.0, high, xtol=1e-10))


def seeds_to_detect(effect: float, spread: Callable[[int], tuple[float, float]], *,
                    alpha: float = 1 - LEVEL, power: float = POWER,
                    most: int = 1000) -> int | None:
    """The fewest seeds per arm with which a difference `effect` is found with
    probability `power`: `spread(n)` gives the comparison's standard error and degrees of
    freedom at n seeds (from the spread observed). None beyond `most`."""
    for n in range(2, most + 1):
        se, df = spread(n)
        if se == 0 or _power(effect, se, df, alpha) >= power:
            return n
    return None


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (both maximised)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(ox >= x and oy >= y and (ox > x or oy > y) for ox, oy in points)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])
