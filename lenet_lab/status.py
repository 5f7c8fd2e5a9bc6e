"""One vocabulary for a trial's state, from training to the database to the report."""

from __future__ import annotations

import enum

__all__ = ["Status"]


class Status(str, enum.Enum):
    """One vocabulary for a trial's state, from training to the database to the report."""

    WAITING = "waiting"
    RUNNING = "running"
    COMPLETE = "complete"
    PRUNED = "pruned"
    DIVERGED = "diverged"  # the loss blew up (train.diverged_loss): a result, not rerun
    INFEASIBLE = "infeasible"  # the spec's feature maps shrink away: a result, not rerun
    FAILED = "failed"  # crashed, killed or interrupted: its arm x seed runs again

    def __str__(self) -> str:
        return self.value
