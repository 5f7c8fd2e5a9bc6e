"""The one "best network", chosen by `arms.ranked` wherever it is needed:

- confirmation: a search's best configurations, rerun with fresh seeds;
- exercise 9's `best_of`: the best configuration that a study of another sweep confirmed;
- exercise 10's maps (and the figures): the book's network and the best arm the answer
  names.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from lenet_lab import store
from lenet_lab.results.answer import study_answer
from lenet_lab.results.arms import BOOK, arm_stats, best_learned, ranked, small_limit
from lenet_lab.results.study import StudyData, load_study
from lenet_lab.fields import field_value
from lenet_lab.status import Status
from lenet_lab.store import Database
from lenet_lab.sweep_file import FIELDS

__all__ = ["best_configuration", "best_network", "confirmation_choice"]

# Fields a configuration carries from one study to another: not the data or its length.
CARRIED = sorted(FIELDS - {"dataset", "epochs", "num_classes"})


def _values(row: pd.Series, keys: list[str]) -> dict[str, Any]:
    return {k: field_value(k, row[k]) for k in keys if k in row and not pd.isna(row[k])}


def confirmation_choice(data: StudyData, keys: list[str], count: int, *,
                        book_params: int | None = None) -> list[dict[str, Any]]:
    """The values (of `keys`, the searched fields) of a search's best `count`
    configurations that are not the control; with `book_params`, also the best one at
    most twice that size (when the parameter count is an objective)."""
    stage = data.results.get("stage")
    searched = data.results[stage == "search"] if stage is not None else data.results[:0]
    arms = ranked(arm_stats(searched, data.epochs))
    chosen = arms[:count]
    if book_params is not None:
        small = next((a for a in arms if a.param_count is not None
                      and a.param_count <= small_limit(book_params)), None)
        if small is not None and small not in chosen:
            chosen.append(small)
    return [_values(searched[searched.arm == arm.arm].iloc[0], keys) for arm in chosen]


def best_configuration(db: Database, sweep: str, *, engine: str, budget: str | None = None,
                       subset: int | None = None) -> tuple[str, str, dict[str, Any]] | None:
    """The best configuration that a study of `sweep` confirmed with seeds, as (study,
    its label as the report shows it, field values), from a finished confirmation stage,
    among the studies on `engine` of the same `budget` (full or quick; None: any) and
    `subset`. None when the database holds no such study."""
    if not store.has_results(db):
        return None
    found = []
    for row in store.list_studies(db):
        if row["sweep"] != sweep:
            continue
        data = load_study(db, row["study"])
        if row["engine"] != engine or data.settings.get("subset") != subset or (
                budget is not None and data.budget_name != budget):
            continue  # another experiment: its best network answers another question
        stage = data.results.get("stage")
        confirm = data.results[stage == "confirm"] if stage is not None else data.results[:0]
        if not len(confirm) or confirm.state.isin([Status.WAITING, Status.RUNNING]).any():
            continue  # not confirmed yet, or still running
        best = best_learned(study_answer(data).arms)
        if best is not None:
            first = confirm[confirm.arm == best.arm].iloc[0]
            found.append((-best.chosen_by.mean, row["study"],
                          str(best.name.label if best.name else best.arm),
                          _values(first, CARRIED)))
    return min(found)[1:] if found else None


def best_network(data: StudyData) -> list[tuple[int, str, str]]:
    """(trial, label, key) of the networks exercise 10 shows for a study: the book's
    network (its first completed trial) and the best arm of the answer (its trial most
    accurate on validation; on test only in studies from before validation splits)."""
    done = data.results[data.results.state == Status.COMPLETE]
    arms = study_answer(data).arms
    picks = []
    control = next((a for a in arms if a.is_control and a.test_acc.n), None)
    if control is not None:
        rows = done[done.arm == control.arm]
        picks.append((int(rows.trial.min()), f"book: {BOOK}", "book"))
    best = ranked(arms)[:1]
    if best:
        rows = done[done.arm == best[0].arm]
        valid = rows.get("valid_acc")
        accuracy = valid if valid is not None and valid.notna().any() else rows.test_acc
        trial = int(rows.loc[accuracy.idxmax()].trial)
        label = best[0].name.label if best[0].name else best[0].arm
        picks.append((trial, f"{best[0].key}, the best other arm: {label}", best[0].key))
    return picks
