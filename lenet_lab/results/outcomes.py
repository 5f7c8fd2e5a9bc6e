"""Did a run learn? An outcome for every trial and arm, decided before any comparison.

A trial that trained all its epochs is not yet a result worth comparing. It is:
- diverged: its training loss turned NaN or infinite, or an epoch's mean rose above twice
  ln(classes) (the loss of a uniform guess: 4.6 for ten classes; four times for the first
  epoch, whose mean includes the untrained network's), at any epoch, the first or the last
  (train.blew_up; the trainer stops such a run at once, and older records that ran on are
  read alike): tanh at lr 0.9 reaches a loss of 25-29 in its first epoch;
- unstable: its final training loss is far above the lowest it reached (more than
  twice the minimum and over 0.25 above it) without having diverged;
- at chance ("did not learn"): its test accuracy is within 0.02 of 1/classes and its
  training loss stays near ln(classes), not below 90% of it (early sigmoid runs sit at
  2.3-2.7);
- learned: anything else.
An arm learned when every one of its finished seeds learned; otherwise its outcome is
its most common other outcome, with the count ("at chance in 2 of 3 seeds").
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from dataclasses import dataclass

from lenet_lab.status import Status
from lenet_lab.train import diverged_loss

__all__ = ["CHANCE_MARGIN", "ArmOutcome", "Outcome", "arm_outcome", "trial_outcome"]

CHANCE_MARGIN = 0.02  # test accuracy this close to 1/classes is a guess
LOSS_MARGIN = 0.10  # ... when the loss is also no lower than 90% of ln(classes)
UNSTABLE_RATIO, UNSTABLE_GAP = 2.0, 0.25  # final loss > 2x its minimum and > minimum + 0.25


class Outcome(str, enum.Enum):
    LEARNED = "learned"
    AT_CHANCE = "at chance"
    DIVERGED = "diverged"
    UNSTABLE = "unstable"

    def __str__(self) -> str:
        return self.value


_SEVERITY = [Outcome.DIVERGED, Outcome.UNSTABLE, Outcome.AT_CHANCE]  # ties go to the first


def trial_outcome(*, state: str, test_acc: float | None, final_loss: float | None,
                  min_loss: float | None, classes: int,
                  blew_up: bool = False) -> Outcome | None:
    """One trial's outcome; None for a trial with no result (pruned, failed, running).
    `min_loss` is the lowest training loss of its epochs; `blew_up`, whether any epoch's
    loss diverged (train.blew_up). Without its epochs, a final loss above the first
    epoch's line (the higher) says it diverged."""
    if state == Status.DIVERGED or blew_up:
        return Outcome.DIVERGED
    if state != Status.COMPLETE or not _number(test_acc):
        return None
    if _number(final_loss) and not final_loss <= diverged_loss(classes, epoch=1):
        return Outcome.DIVERGED
    if _number(final_loss) and _number(min_loss) and \
            final_loss > UNSTABLE_RATIO * min_loss and final_loss - min_loss > UNSTABLE_GAP:
        return Outcome.UNSTABLE
    chance, guess_loss = 1.0 / classes, math.log(classes)
    if abs(test_acc - chance) <= CHANCE_MARGIN and \
            (not _number(final_loss) or final_loss >= (1 - LOSS_MARGIN) * guess_loss):
        return Outcome.AT_CHANCE
    return Outcome.LEARNED


def _number(value: float | None) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class ArmOutcome:
    outcome: Outcome | None  # None: no trial of the arm has a result yet
    count: int = 0  # trials with that outcome
    of: int = 0  # trials with any outcome

    @property
    def learned(self) -> bool:
        return self.outcome is Outcome.LEARNED

    @property
    def seeds(self) -> str:
        """'in every seed', 'in 2 of 3 seeds', or '' for a single seed."""
        if self.count == self.of:
            return "in every seed" if self.of > 1 else ""
        return f"in {self.count} of {self.of} seeds"

    def short(self) -> str:
        """'at chance 2/3', or 'learned' when every seed learned: for narrow tables."""
        if self.outcome is None:
            return "-"
        return str(self.outcome) + (f" {self.count}/{self.of}" if self.count < self.of else "")

    def describe(self) -> str:
        """'at chance in 2 of 3 seeds', or 'learned' / 'diverged' when every seed agrees."""
        if self.outcome is None:
            return "no result yet"
        return f"{self.outcome} {self.seeds}".strip()


def arm_outcome(outcomes: list[Outcome | None]) -> ArmOutcome:
    known = [o for o in outcomes if o is not None]
    if not known:
        return ArmOutcome(None)
    counts = Counter(known)
    if counts[Outcome.LEARNED] == len(known):
        return ArmOutcome(Outcome.LEARNED, len(known), len(known))
    worst = max(_SEVERITY, key=lambda o: (counts[o], -_SEVERITY.index(o)))
    return ArmOutcome(worst, counts[worst], len(known))
