"""A study's data as read from the database, for every reader: the sweep's end, the
report, `best_of`, confirmation and the notebook.

Reading never writes. A trial that Optuna still holds as running but whose worker is
gone (no heartbeat for longer than the grace period by the database's clock, or a dead
pid on this host) reads as failed, with the reason, so that no page shows it running
for ever; the next `lenet-lab sweep` records the same and runs its arm x seed again.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lenet_lab import store
from lenet_lab.processes import pid_alive, this_host
from lenet_lab.status import Status
from lenet_lab.store import Database

__all__ = ["WORKER_STOPPED", "StudyData", "cut_short", "load_study", "stopped_worker",
           "study_list"]

WORKER_STOPPED = "worker stopped"


@dataclass
class StudyData:
    name: str
    meta: dict[str, Any]  # the lab_studies row (empty for a study lenet-lab did not run)
    results: pd.DataFrame  # lab_results rows
    epochs: pd.DataFrame  # trial, epoch, train_loss, train_acc, test_acc, ...
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)  # Optuna's study user attrs

    @property
    def title(self) -> str:
        return self.meta.get("title") or self.name

    @property
    def settings(self) -> dict[str, Any]:
        return json.loads(self.meta.get("settings") or "{}")

    @property
    def budget_name(self) -> str:
        """The sweep file's budget the study ran: full or quick (studies from before it
        was recorded: quick when named so, as `sweep --budget quick` names them)."""
        return self.settings.get("budget") or ("quick" if "-quick" in self.name else "full")


def stopped_worker(why: str) -> str:
    """The reason recorded for a trial whose worker stopped before it finished."""
    return f"{WORKER_STOPPED} ({why}) before the trial finished; its arm x seed runs again"


def cut_short(status: str | None, reason: str | None) -> bool:
    """A trial stopped from outside (its worker died, or Ctrl-C), not by its own values."""
    return status == Status.FAILED and (reason == "interrupted"
                                        or (reason or "").startswith(WORKER_STOPPED))


def load_study(db: Database, name: str) -> StudyData:
    results, epochs = store.study_frames(db, name)
    meta = store.study_row(db, name) or {}
    results = _as_of_now(db, name, results)
    # Ours, failed, and no reason: a worker stopped between taking the trial from the
    # queue and recording it (its heartbeat then ran out); nothing else leaves one so.
    unexplained = (results.state == Status.FAILED.value) & results.reason.isna()
    if meta and unexplained.any():
        results = results.copy()
        results.loc[unexplained, "reason"] = stopped_worker("as it took the trial")
    return StudyData(name, meta, results, epochs, store.study_attrs(db, name))


def study_list(db: Database) -> list[dict[str, Any]]:
    """store.list_studies with trials whose worker is gone counted as failed, as
    load_study reads them: every listing (`lenet-lab studies`, lenet_lab.studies()) says
    what the report says."""
    rows = store.list_studies(db)
    for row in rows:
        states = row["states"]
        if states.get(Status.RUNNING.value) and (gone := len(_gone(db, row["study"]))):
            states[Status.RUNNING.value] -= gone
            states[Status.FAILED.value] = states.get(Status.FAILED.value, 0) + gone
            if not states[Status.RUNNING.value]:
                del states[Status.RUNNING.value]
    return rows


def _gone(db: Database, name: str) -> dict[int, str]:
    """{trial number: why} of the trials Optuna holds as running whose worker is gone."""
    grace, host = store.grace_seconds(), this_host()
    gone = {}
    for row in store.running_trials(db, name):
        if row["host"] == host and row["pid"] is not None and not pid_alive(row["pid"]):
            gone[row["number"]] = f"pid {row['pid']} on {host}"
        elif row["silent_s"] is not None and row["silent_s"] > grace:
            gone[row["number"]] = f"no heartbeat for over {grace:g} s"
    return gone


def _as_of_now(db: Database, name: str, results: pd.DataFrame) -> pd.DataFrame:
    """Running trials whose worker is gone, as failed (see the module's docstring)."""
    if not (results.state == Status.RUNNING).any():
        return results
    gone = _gone(db, name)
    if gone:
        results = results.copy()
        stale = results.trial.isin(list(gone))
        results.loc[stale, "state"] = Status.FAILED.value
        results.loc[stale, "reason"] = results.trial[stale].map(
            lambda number: stopped_worker(gone[number]))
    return results
