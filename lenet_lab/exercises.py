"""All ten exercises answered in one run (`lenet-lab sweep all`): every exercise sweep in
the book's order (sweep.book), then exercise 10's activation maps for the book's network
and the best network exercise 2 found, then the report, whose index lists every
exercise answered."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ContextManager

from lenet_lab.files import output_folder
from lenet_lab.report import build_report
from lenet_lab.report.activations import exercise_page
from lenet_lab.store import Database
from lenet_lab.sweep.book import Step, run_book

__all__ = ["answer_all"]

BEST_NETWORK_EXERCISE = 2  # "a better network": its search's best is exercise 10's second network


def answer_all(db: Database, steps: list[Step], *, jobs: int = 1, data_dir: str | None = None,
               out: str | Path = "reports",
               around: Callable[[list[Step]], ContextManager[Any]] | None = None) -> Path:
    """Run every step, write exercise 10's page and the report; returns the index's path."""
    ran = run_book(db, steps, jobs=jobs, data_dir=data_dir, around=around)
    folder = output_folder(out, create=True)
    best = next((step for step in ran if step.sweep.exercise == BEST_NETWORK_EXERCISE), None)
    if best is not None:
        exercise_page(db, best.plan.study_name, folder, data_dir)
    return build_report(db, out=folder, data_dir=data_dir)
