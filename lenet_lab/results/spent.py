"""What a study spent: epochs, examples per epoch, the validation split held out, seeds
per arm, engines and devices; every answer ends with it ("Trained: 2 epochs of 50,000
examples (10,000 more held out for validation), 2 seeds per arm, ..."). Not the budget:
that word names the sweep file's full or quick [run] only."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from lenet_lab.datasets import DATASET_INFO
from lenet_lab.results.arms import ArmStats

__all__ = ["Spent", "spent"]


@dataclass(frozen=True)
class Spent:
    epochs: tuple[int, ...]
    examples: int | None  # training examples per epoch; None when unknown
    seeds: tuple[int, int]  # fewest and most finished seeds of an arm
    engines: tuple[str, ...]
    devices: tuple[str, ...]
    validation: int | None = None  # images held out of training for validation

    def training(self) -> str:
        """'2 epochs of 2,000 examples (400 more held out for validation)'."""
        if len(self.epochs) > 1:
            epochs = f"{self.epochs[0]}-{self.epochs[-1]}"
        else:
            epochs = str(self.epochs[0]) if self.epochs else "?"
        plural = "" if epochs == "1" else "s"
        examples = f"{self.examples:,} examples" if self.examples else "the training set"
        held = f" ({self.validation:,} more held out for validation)" if self.validation else ""
        return f"{epochs} epoch{plural} of {examples}{held}"

    def short(self) -> str:
        """'10 epochs, 3 seeds': for labels."""
        epochs = "-".join(str(e) for e in self.epochs[:1] + self.epochs[1:][-1:]) or "?"
        low, high = self.seeds
        seeds = str(low) if low == high else f"{low}-{high}"
        return f"{epochs} epoch{'s' * (epochs != '1')}, {seeds} seed{'s' * (seeds != '1')}"

    def describe(self) -> str:
        low, high = self.seeds
        seeds = f"{low} seed{'s' * (low != 1)}" if low == high else f"{low}-{high} seeds"
        return (f"{self.training()}, {seeds} per arm, {'/'.join(self.engines) or '?'} on "
                f"{'/'.join(self.devices) or '?'}")


def spent(results: pd.DataFrame, arms: list[ArmStats]) -> Spent:
    def values(column: str) -> list:
        return sorted(results[column].dropna().unique()) if column in results else []

    subsets, datasets, held = values("subset"), values("dataset"), values("validation")
    examples = int(subsets[0]) if len(subsets) == 1 else None
    if not subsets and len(datasets) == 1 and datasets[0] in DATASET_INFO:
        examples = DATASET_INFO[datasets[0]].sizes["train"]
    validation = int(held[0]) if len(held) == 1 else None
    if examples is not None and validation:
        examples -= validation
    counts = [a.test_acc.n for a in arms if a.test_acc.n] or [0]
    return Spent(tuple(int(e) for e in values("epochs")), examples, (min(counts), max(counts)),
                  tuple(values("engine")), tuple(values("device")), validation)
