"""Each arm against the control: the comparison, its decision, and what it could detect.

Fixed before any number is looked at: paired by seed when the two arms ran the same seeds
(every grid, and a search's control, confirmations and compute-matched control, by
design: a seed fixes the data order too), else Welch's unpaired t; Bonferroni's split of
alpha over the m arms compared and, with `--until-decided`, over its L looks: each
interval is at level 1 - alpha / (m L), so the intervals hold together with 95%
confidence and an arm is better or worse exactly when its interval excludes 0. An
undecided comparison states the smallest difference its seeds would have detected (80%
power at the level its decision needed, from the spread observed) and how many seeds
would detect one point.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from typing import Any

from lenet_lab.results.arms import MATCHED, ArmStats, ranked, shares_seeds, versus
from lenet_lab.results.stats import POWER, Interval, detectable, seeds_to_detect, t_p
from lenet_lab.sweep_file import (
    MARGIN_DEFAULT as MARGIN,  # inside +-MARGIN: no difference
)

__all__ = ["ALPHA", "MARGIN", "POINT", "Comparison", "Decision", "compare", "kind", "looks",
           "signed"]

ALPHA = 0.05
POINT = 0.01  # "one point" of accuracy: how many seeds would detect it


def signed(value: float) -> str:
    return f"{0.0 if abs(value) < 0.0005 else value:+.3f}"


def kind(paired: bool) -> str:
    """How a difference was measured, as answers say it."""
    return "paired by seed" if paired else "Welch"


class Decision(str, enum.Enum):
    BETTER = "better"
    WORSE = "worse"
    EQUIVALENT = "equivalent"
    TIE = "tie"
    UNDECIDED = "undecided"
    ONE_SEED = "one seed"

    @property
    def decided(self) -> bool:
        return self in (Decision.BETTER, Decision.WORSE, Decision.EQUIVALENT, Decision.TIE)


def looks(settings: dict[str, Any] | None) -> int:
    """How many looks `--until-decided` may take (1 without it)."""
    if not settings:
        return 1
    return max(1, settings["max_seeds"] - settings["start_seeds"] + 1)


@dataclass(frozen=True)
class Comparison:
    arm: ArmStats
    difference: Interval  # at `level`, 1 - ALPHA / (looks * arms)
    p_adjusted: float  # times looks and arms (Bonferroni), at most 1
    decision: Decision
    arms: int  # how many arms were compared with the control
    looks: int = 1
    paired: bool = False  # by seed (shares_seeds), else Welch's unpaired interval
    detectable: float = math.nan  # the smallest difference these seeds would find
    seeds_for_point: int | None = None  # seeds per arm that would find POINT

    @property
    def alpha(self) -> float:
        """The level a difference must reach to be declared: alpha split over the looks
        and the arms (Bonferroni)."""
        return ALPHA / self.looks / self.arms

    @property
    def level(self) -> float:
        """The confidence of `difference`'s interval: 1 - alpha."""
        return 1 - self.alpha

    def family(self) -> str:
        """What alpha is split over: '4 arms', '3 looks', '4 arms and 3 looks' or ''."""
        return " and ".join(f"{n} {what}" for n, what in ((self.arms, "arms"), (self.looks, "looks"))
                            if n > 1)

    def interval(self) -> str:
        d = self.difference
        text = (f"difference {signed(d.mean)}, {100 * self.level:.3g}% CI [{signed(d.low)}, "
                f"{signed(d.high)}], {kind(self.paired)}")
        if self.family() and not math.isnan(self.p_adjusted):
            text += f"; 95% together over {self.family()}, adjusted p = {self.p_adjusted:.2g}"
        return text

    def could_detect(self) -> str:
        """What an undecided comparison could have seen: 'its 3 seeds could detect a
        difference of 0.031 (80% power at the 5% level), and about 19 seeds one of 0.01'."""
        if math.isnan(self.detectable):
            return ""
        level = f"the {100 * self.alpha:.2g}% level" + (
            f" that {self.family()} need" if self.family() else "")
        point = f"about {self.seeds_for_point} seeds" if self.seeds_for_point else \
            "over 1,000 seeds"
        return (f"its {self.difference.n} seeds could detect a difference of "
                f"{self.detectable:.3f} ({100 * POWER:.0f}% power at {level}), and {point} one "
                f"of {POINT:g}")


def compare(arms: list[ArmStats], *, n_looks: int = 1, margin: float = MARGIN) -> list[Comparison]:
    """Every learned arm against the control that learned: the candidates best first
    (`ranked`), then any compute-matched control (never the leader)."""
    control = next((a for a in arms if a.is_control), None)
    if control is None or not control.outcome.learned:
        return []
    learned = [a for a in ranked(arms) if a.outcome.learned] + \
        [a for a in arms if a.stage == MATCHED and a.outcome.learned]
    split = n_looks * len(learned)
    differences = [versus(a, control, level=1 - ALPHA / split) for a in learned]
    p_values = [min(1.0, split * t_p(d)) for d in differences]
    found = []
    for arm, d, p in zip(learned, differences, p_values):
        paired = shares_seeds(arm, control)
        found.append(Comparison(arm, d, p, _decide(d, p, margin), len(learned), n_looks, paired))
    return [replace(c, **_power_of(c, control)) for c in found]


def _power_of(c: Comparison, control: ArmStats) -> dict[str, Any]:
    """The smallest difference the comparison could detect, and the seeds for POINT,
    from the spread observed (the per-seed differences', or each arm's)."""
    d = c.difference
    if not d.known or not d.sd:
        return {}
    if c.paired:
        spread = d.sd * math.sqrt(d.n)  # of the per-seed differences

        def at(n: int) -> tuple[float, float]:
            return spread / math.sqrt(n), n - 1.0
    else:
        variances = [a.test_acc.sd ** 2 for a in (c.arm, control)]

        def at(n: int) -> tuple[float, float]:
            se2 = sum(variances) / n
            return math.sqrt(se2), se2 ** 2 / sum((v / n) ** 2 / (n - 1) for v in variances)
    return {"detectable": detectable(d.sd, d.df, alpha=c.alpha),
            "seeds_for_point": seeds_to_detect(POINT, at, alpha=c.alpha)}


def _decide(d: Interval, p_adjusted: float, margin: float) -> Decision:
    if not d.known:
        return Decision.ONE_SEED
    if d.sd == 0 and d.mean == 0:
        return Decision.TIE
    if p_adjusted < ALPHA:
        return Decision.BETTER if d.mean > 0 else Decision.WORSE
    if -margin <= d.low and d.high <= margin:
        return Decision.EQUIVALENT
    return Decision.UNDECIDED
