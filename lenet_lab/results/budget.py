"""What a study spent: epochs, examples per epoch, seeds per arm, engines and devices;
every answer ends with it ("Budget: 2 epochs of 60,000 examples, 2 seeds per arm, ...")."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from lenet_lab.datasets import DATASET_INFO
from lenet_lab.results.arms import ArmStats

__all__ = ["Budget", "budget"]


@dataclass(frozen=True)
class Budget:
    epochs: tuple[int, ...]
    examples: int | None  # training examples per epoch; None when unknown
    seeds: tuple[int, int]  # fewest and most finished seeds of an arm
    engines: tuple[str, ...]
    devices: tuple[str, ...]

    def training(self) -> str:
        """'2 epochs of 2,000 examples'."""
        if len(self.epochs) > 1:
            epochs = f"{self.epochs[0]}-{self.epochs[-1]}"
        else:
            epochs = str(self.epochs[0]) if self.epochs else "?"
        plural = "" if epochs == "1" else "s"
        examples = f"{self.examples:,} examples" if self.examples else "the training set"
        return f"{epochs} epoch{plural} of {examples}"

    def describe(self) -> str:
        low, high = self.seeds
        seeds = f"{low} seed{'s' * (low != 1)}" if low == high else f"{low}-{high} seeds"
        return (f"{self.training()}, {seeds} per arm, {'/'.join(self.engines) or '?'} on "
                f"{'/'.join(self.devices) or '?'}")


def budget(results: pd.DataFrame, arms: list[ArmStats]) -> Budget:
    def values(column: str) -> list:
        return sorted(results[column].dropna().unique()) if column in results else []

    subsets, datasets = values("subset"), values("dataset")
    examples = int(subsets[0]) if len(subsets) == 1 else None
    if not subsets and len(datasets) == 1 and datasets[0] in DATASET_INFO:
        examples = DATASET_INFO[datasets[0]].sizes["train"]
    counts = [a.test_acc.n for a in arms if a.test_acc.n] or [0]
    return Budget(tuple(int(e) for e in values("epochs")), examples, (min(counts), max(counts)),
                  tuple(values("engine")), tuple(values("device")))
