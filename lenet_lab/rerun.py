"""`lenet-lab rerun`: retrain a recorded trial from its record and say whether it gives the
same numbers, epoch by epoch.

A trial's record holds its network and training settings (spec_json, config_json: the
seed among them), its data (dataset, subset, the validation split held out), the engine
and its version, the device and the CPU or GPU model, the framework threads it trained
with, and whether it was trained fused with other trials; the study's record holds the
datasets' file checksums and the split's (sweep.plan.rerun_record). A rerun trains the
same network on the same data with the same seed and threads, measuring the test set when
the trial did (every epoch, or after the last), and compares every number recorded.

On a CPU both engines are deterministic for a given engine version, CPU model and thread
count: then every number must be equal (EXACT). Otherwise (another machine, another
version, more threads, a GPU, or a trial trained fused) floating-point rounding differs
and grows over the epochs, so numbers are compared within TOLERANCE, and the differences
in versions and hardware are named.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from lenet_lab import store
from lenet_lab.data import load_dataset
from lenet_lab.engines import get_engine, parse_device, use_threads
from lenet_lab.errors import LabError
from lenet_lab.spec import LeNetSpec, TrainConfig
from lenet_lab.status import Status
from lenet_lab.store import Database
from lenet_lab.train import EpochMetrics, train

__all__ = ["METRICS", "TOLERANCE", "Rerun", "find_trial", "rerun_trial"]

METRICS = ("train_loss", "train_acc", "valid_acc", "test_acc")
TOLERANCE = {"train_loss": 0.02, "train_acc": 0.01, "valid_acc": 0.01, "test_acc": 0.01}


@dataclass
class Rerun:
    """A recorded trial beside its rerun: per epoch, each metric as recorded and anew."""

    study: str
    trial: int
    arm: str
    seed: int
    exact: bool  # every number must be equal (see the module's docstring)
    differences: list[str]  # what differs between the recording and this run's setting
    missing: list[str]  # what the record lacks (older studies), and what was assumed
    rows: list[dict[str, Any]] = field(default_factory=list)  # epoch, metric, recorded, new

    @property
    def mismatches(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if not row["match"]]

    @property
    def matches(self) -> bool:
        return bool(self.rows) and not self.mismatches

    def verdict(self) -> str:
        """One line: the same numbers, or where they differ first."""
        how = "equal to the last digit" if self.exact else \
            "within the tolerance (" + ", ".join(f"{m} {t:g}" for m, t in TOLERANCE.items()) + ")"
        if self.matches:
            return f"match: every recorded number of trial {self.trial} is {how}"
        if not self.rows:
            return f"nothing to compare: trial {self.trial} has no recorded epochs"
        first = self.mismatches[0]
        return (f"MISMATCH: {len(self.mismatches)} of {len(self.rows)} numbers differ beyond "
                f"{'none' if self.exact else 'the tolerance'}; first at epoch {first['epoch']}: "
                f"{first['metric']} recorded {first['recorded']:.6g}, rerun {first['new']:.6g}")


def find_trial(db: Database, study: str, *, trial: int | None = None, arm: str | None = None,
               seed: int | None = None) -> int:
    """The number of a study's trial, given as its number, or as arm and seed."""
    store.known_studies(db, [study])
    if trial is not None:
        if arm is not None or seed is not None:
            raise LabError("give a trial number, or --arm and --seed, not both")
        if store.trial_record(db, study, trial) is None:
            raise LabError(f"study {study!r} has no recorded trial {trial} (see `lenet-lab "
                           f"export {study}`)")
        return trial
    if arm is None or seed is None:
        raise LabError("name the trial: its number, or --arm ARM and --seed N")
    rows = store.read_results(db, study)
    found = rows[(rows.arm == arm) & (rows.seed == seed) & (rows.state == Status.COMPLETE)]
    if found.empty:
        arms = ", ".join(sorted(map(str, rows.arm.dropna().unique()))[:8])
        raise LabError(f"study {study!r} has no completed trial of arm {arm!r} with seed "
                       f"{seed} (arms: {arms})")
    return int(found.trial.iloc[0])


def _setting(row: dict[str, Any], meta: dict[str, Any], engine: str, device: str,
             threads: int) -> tuple[list[str], list[str]]:
    """(differences that rule out equal numbers, what the record lacks)."""
    differences, missing = [], []
    backend = get_engine(engine)
    version = backend.version()
    if row.get("engine_version") and row["engine_version"] != version:
        differences.append(f"{engine} {row['engine_version']} then, {version} now")
    here = backend.device_name(backend.resolve_device(parse_device(device)))
    if row.get("device_name") and row["device_name"] != here:
        differences.append(f"{row['device_name']} then, {here} now")
    if (row.get("device") or "cpu") != "cpu":
        differences.append(f"trained on {row['device']}: GPU kernels are not bit-reproducible")
    if row.get("threads") is None:
        missing.append(f"its thread count (rerun with {threads})")
    if (row.get("fused") or 1) > 1:
        differences.append(f"trained fused with {row['fused'] - 1} other trial(s); rerun alone")
    if row.get("fused") is None:
        missing.append("whether it was trained fused (assumed alone)")
    if not meta.get("record"):
        missing.append("the datasets' checksums and the validation split's (the study is "
                       "older than these records; the loader still checks every file)")
    return differences, missing


def rerun_trial(db: Database, study: str, trial: int, *, data_dir: str | None = None,
                on_epoch: Callable[[EpochMetrics], None] | None = None) -> Rerun:
    """Retrain a study's trial from its record and compare every recorded number."""
    row = store.trial_record(db, study, trial)
    if row is None or row.get("status") != Status.COMPLETE.value:
        raise LabError(f"trial {trial} of study {study!r} did not complete: only a completed "
                       f"trial's numbers can be checked")
    meta = store.study_row(db, study) or {}
    settings = json.loads(meta.get("settings") or "{}")
    spec = LeNetSpec.from_json(row["spec_json"])
    config = TrainConfig.from_dict(json.loads(row["config_json"]))
    engine, device = row["engine"], "cpu" if (row.get("device") or "cpu") == "cpu" else "auto"
    threads = int(row.get("threads") or len(os.sched_getaffinity(0)))
    differences, missing = _setting(row, meta, engine, device, threads)
    recorded = {int(e["epoch"]): e for e in store.trial_epochs(db, row["trial_id"])}
    validation = row.get("validation") or 0
    split = json.loads(meta.get("record") or "{}").get("datasets", {}).get(config.dataset, {})
    each_epoch = sum(1 for e in recorded.values() if e.get("test_acc") is not None) > 1
    data = load_dataset(config.dataset, data_dir=data_dir)
    subset = row.get("subset") or settings.get("subset")
    data = (data.subset(subset) if subset else data).hold_out(validation)
    if split.get("split", {}).get("sha256") not in (None, data.split_sha256):
        raise LabError(f"the validation split drawn now differs from the one study {study!r} "
                       f"recorded (SHA-256 {split['split']['sha256'][:12]}...): lenet-lab's "
                       f"split rule has changed since; the trial cannot be rerun on its data")
    with use_threads(threads):
        result = train(spec, config, engine=engine, device=device, data=data,
                       test_each_epoch=each_epoch, on_epoch=on_epoch)
    found = Rerun(study, trial, str(row["arm"]), config.seed, not differences, differences,
                  missing)
    for metrics in result.epochs:
        saved = recorded.get(metrics.epoch, {})
        for name in METRICS:
            then, now = saved.get(name), getattr(metrics, name)
            if then is None or (isinstance(now, float) and math.isnan(now)):
                continue
            match = now == then if found.exact else abs(now - then) <= TOLERANCE[name]
            found.rows.append({"epoch": metrics.epoch, "metric": name, "recorded": float(then),
                               "new": float(now), "match": bool(match)})
    if len(result.epochs) != len(recorded):
        found.rows.append({"epoch": len(result.epochs), "metric": "epochs",
                           "recorded": float(len(recorded)), "new": float(len(result.epochs)),
                           "match": False})
    return found
