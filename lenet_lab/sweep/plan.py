"""Planning a sweep: every check that can be made before the database is touched."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from lenet_lab import store
from lenet_lab.data import Dataset, load_dataset
from lenet_lab.engines import Device, get_engine, parse_device
from lenet_lab.errors import StorageError
from lenet_lab.spec import field_kind, format_widths, parse_widths
from lenet_lab.sweep_file import Sweep

__all__ = ["SweepPlan", "TPE_SETTINGS", "decode_param", "default_study_name", "encode_param",
           "load_cached", "plan_sweep"]

# TPE's defaults changed in Optuna 5; these are spelled out and stored with every study.
TPE_SETTINGS = {"n_startup_trials": 10, "multivariate": True, "constant_liar": True}
PRUNER = {"n_startup_trials": 5, "n_warmup_steps": 1}


def encode_param(value: Any) -> Any:
    """Optuna params must be scalars: width lists become their text form ("6,16")."""
    return format_widths(value) if isinstance(value, (list, tuple)) else value


def decode_param(key: str, value: Any) -> Any:
    return parse_widths(value, key) if field_kind(key) == "widths" else value


_loaded: dict[tuple[str, str | None], Dataset] = {}


def load_cached(name: str, data_dir: str | None) -> Dataset:
    """A dataset parsed once per process (planning checks it, the worker then trains on it)."""
    key = (name, data_dir)
    if key not in _loaded:
        _loaded[key] = load_dataset(name, data_dir=data_dir)
    return _loaded[key]


@dataclass(frozen=True)
class SweepPlan:
    """Everything a worker needs; picklable so --jobs can hand it to other processes."""

    sweep: Sweep
    study_name: str
    storage: str
    device: Device
    device_name: str
    engine_version: str
    gpu_count: int
    command: str = ""

    @property
    def directions(self) -> list[str]:
        return ["maximize"] * len(self.sweep.run.objectives)

    def sampler(self):
        import optuna

        run = self.sweep.run
        if run.sampler == "tpe":
            return optuna.samplers.TPESampler(seed=run.sampler_seed, **TPE_SETTINGS)
        if run.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=run.sampler_seed)
        return optuna.samplers.RandomSampler(seed=run.sampler_seed)  # grid trials are all enqueued

    def sampler_record(self) -> dict[str, Any]:
        run = self.sweep.run
        name = {"tpe": "TPESampler", "nsga2": "NSGAIISampler"}.get(run.sampler, "RandomSampler")
        settings = TPE_SETTINGS if run.sampler == "tpe" else {}
        pruner = "MedianPruner(" + ", ".join(f"{k}={v}" for k, v in PRUNER.items()) + ")"
        return {"sampler": run.sampler, "class": name, "seed": run.sampler_seed, **settings,
                "pruner": pruner if run.prune else None}

    def pruner(self):
        import optuna

        if self.sweep.run.prune:
            return optuna.pruners.MedianPruner(**PRUNER)
        return optuna.pruners.NopPruner()

    def describe(self, jobs: int) -> str:
        run = self.sweep.run
        return (f"{self.sweep.expected_trials()} trials ({run.sampler}, {run.seeds} seed(s)), "
                f"{run.engine} on {self.device}, {jobs} worker(s)")

    def settings(self) -> dict[str, Any]:
        """What must match for a rerun to continue a study rather than mix two experiments."""
        run = self.sweep.run
        return {"engine": run.engine, "epochs": self.sweep.control()["epochs"],
                "subset": run.subset, "sampler": run.sampler, "objectives": list(run.objectives),
                "fixed": {k: encode_param(v) for k, v in sorted(self.sweep.fixed.items())}}


def default_study_name(sweep: Sweep, *, epochs: int | None, subset: int | None) -> str:
    """`<sweep>-<engine>`, plus the overrides that make it a different experiment."""
    name = f"{sweep.name}-{sweep.run.engine}"
    if epochs is not None:
        name += f"-e{epochs}"
    if subset is not None:
        name += f"-n{subset}"
    return name


def plan_sweep(sweep: Sweep, *, storage: str | None = None, study: str | None = None,
               device: str = "auto", data_dir: str | None = None, command: str = "",
               name_overrides: dict[str, int | None] | None = None) -> SweepPlan:
    """Check everything that can be checked before the database is touched."""
    store.check_environment()
    backend = get_engine(sweep.run.engine)
    chosen = backend.resolve_device(parse_device(device))
    for name in sorted(sweep.datasets()):
        load_cached(name, data_dir)  # missing or corrupt data fails here, not mid-sweep
    where = store.parse_storage(storage)
    folder = os.path.dirname(os.path.abspath(where.sqlite_path)) if where.sqlite_path else None
    if folder and not os.path.isdir(folder):
        raise StorageError(f"--storage {where}: folder {os.path.dirname(where.sqlite_path)} "
                           f"does not exist")
    overrides = name_overrides or {"epochs": None, "subset": None}
    plan = SweepPlan(sweep, study or default_study_name(sweep, **overrides), where.url, chosen,
                     backend.device_name(chosen), backend.version(), backend.gpu_count(),
                     store.redact(command, where.url))
    _check_existing(plan)
    return plan


def _check_existing(plan: SweepPlan) -> None:
    """Refuse to continue a study that was run with other settings (read-only)."""
    where = store.parse_storage(plan.storage)
    if not store.has_studies(where):
        return
    db = store.connect(where, read_only=True)
    try:
        row = store.study_row(db, plan.study_name)
    finally:
        db.dispose()
    if row is None:
        return
    if row["sweep"] != plan.sweep.name:
        raise StorageError(f"study {plan.study_name!r} belongs to sweep {row['sweep']!r}: "
                           f"choose another --study name")
    before, now = json.loads(row["settings"]), plan.settings()
    changed = [f"{k} {before.get(k)!r} -> {now[k]!r}" for k in now if before.get(k) != now[k]]
    if changed:
        raise StorageError(f"study {plan.study_name!r} was run with other settings "
                           f"({'; '.join(changed)}): rerun with the same options to continue "
                           f"it, or pass --study NEW_NAME to start another")
