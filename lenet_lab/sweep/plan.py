"""Planning a sweep: every check that can be made before the database is touched."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from lenet_lab import store
from lenet_lab.data import DATASET_INFO, SPLIT_SEED, load_cached
from lenet_lab.engines import Device, get_engine, parse_device
from lenet_lab.errors import StorageError, SweepError
from lenet_lab.results import best_configuration
from lenet_lab.fields import field_param, field_value
from lenet_lab.store import Database
from lenet_lab.sweep_file import OBJECTIVES, Sweep
from lenet_lab.urls import redact

__all__ = ["SweepPlan", "TPE_SETTINGS", "check_fuse", "check_settings", "default_study_name",
           "fuse_size", "grid_choices", "plan_sweep"]

# TPE's defaults changed in Optuna 5; these are spelled out and stored with every study.
TPE_SETTINGS = {"n_startup_trials": 10, "multivariate": True, "constant_liar": True}
# No trial is pruned before its third epoch: the book's sigmoid settings are still at
# chance after one (in the 2026-11-28 training search, 17 of 21 trials pruned after epoch 1
# were at 0.100, slow starters rather than bad settings). Median: a trial behind the median
# of earlier trials at the same epoch stops. Halving (successive halving): at epochs 3, 9,
# 27, ... only the best third of the trials that reached that epoch go on.
WARMUP_EPOCHS = 3
PRUNERS = {"median": ("MedianPruner", {"n_startup_trials": 5, "n_warmup_steps": WARMUP_EPOCHS}),
           "halving": ("SuccessiveHalvingPruner", {"min_resource": WARMUP_EPOCHS,
                                                   "reduction_factor": 3})}


def grid_choices(sweep: Sweep) -> dict[str, list[Any]]:
    """A grid's Optuna params: each field that varies between its arms (the control's
    values included), with the values it takes, encoded, in the order the arms first take
    them. Grid trials register these, so optuna-dashboard's parallel coordinates, slices
    and importances work for grids too; the same choices for every trial of a study, as
    Optuna requires. Empty for a search (its params are its space)."""
    if sweep.run.sampler != "grid":
        return {}
    control = sweep.control()
    resolved = [{**control, **arm.as_dict()} for arm in sweep.grid_arms()]
    choices: dict[str, list[Any]] = {}
    for key in dict.fromkeys(k for arm in sweep.grid_arms() for k in arm.as_dict()):
        values = list(dict.fromkeys(field_param(values[key]) for values in resolved))
        if len(values) > 1:
            choices[key] = values
    return choices


@dataclass(frozen=True)
class SweepPlan:
    """Everything a worker needs; picklable so --jobs can hand it to other processes."""

    sweep: Sweep
    study_name: str
    db: Database  # picklable: each worker process opens its own connections
    device: Device
    device_name: str
    engine_version: str
    gpu_count: int
    command: str = ""
    arm_sources: dict[str, str] = field(default_factory=dict)  # arm name -> where it came from
    fuse: int = 1  # queued trials of one shape trained together (1: each alone)
    record: dict[str, Any] = field(default_factory=dict)  # what a rerun needs (rerun_record)

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[name] for name in self.sweep.run.objectives]

    def sampler(self, *, trials: int = 0):
        """The sampler for the next ask in a study holding `trials` trials.

        Its seed is sampler_seed + trials: reproducible for one worker, and workers that
        share a study (--jobs, other machines) do not draw the same configurations."""
        import optuna

        run = self.sweep.run
        seed = (run.sampler_seed + trials) % 2**32
        if run.sampler == "tpe":
            return optuna.samplers.TPESampler(seed=seed, **TPE_SETTINGS)
        if run.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        return optuna.samplers.RandomSampler(seed=seed)  # grid trials are all enqueued

    def sampler_record(self) -> dict[str, Any]:
        run = self.sweep.run
        name = {"tpe": "TPESampler", "nsga2": "NSGAIISampler"}.get(run.sampler, "RandomSampler")
        settings = TPE_SETTINGS if run.sampler == "tpe" else {}
        pruner = None
        if run.pruner:
            kind, options = PRUNERS[run.pruner]
            pruner = f"{kind}(" + ", ".join(f"{k}={v}" for k, v in options.items()) + ")"
        return {"sampler": run.sampler, "class": name, "seed": run.sampler_seed,
                "seeding": "seed + trials in the study, at each ask", **settings,
                "pruner": pruner}

    def pruner(self):
        import optuna

        if self.sweep.run.pruner:
            kind, options = PRUNERS[self.sweep.run.pruner]
            return getattr(optuna.pruners, kind)(**options)
        return optuna.pruners.NopPruner()

    def describe(self, jobs: int) -> str:
        run = self.sweep.run
        stages = f", then the best {run.confirmations} rerun with {run.seeds} seed(s)" \
            if run.confirmations else ""
        until = f", adding seeds until decided (at most {run.until_decided})" \
            if run.until_decided else ""
        sources = "".join(f"\n{name} is {source}" for name, source in self.arm_sources.items())
        fused = f", fused in groups of up to {self.fuse}" if self.fuse > 1 else ""
        return (f"{self.sweep.expected_trials()} trials ({run.sampler}, {run.seeds} seed(s)"
                f"{stages}{until}), {run.engine} on {self.device}{fused}, {jobs} worker(s)"
                f"{sources}")

    def settings(self) -> dict[str, Any]:
        """What must match for a rerun to continue a study rather than mix two experiments."""
        run = self.sweep.run
        return {"engine": run.engine, "budget": self.sweep.budget,
                "epochs": self.sweep.control()["epochs"],
                "subset": run.subset, "validation": run.validation, "split_seed": SPLIT_SEED,
                "sampler": run.sampler, "objectives": list(run.objectives),
                **({"small": True} if run.confirm_small else {}),
                "fixed": {k: field_param(v) for k, v in sorted(self.sweep.fixed.items())},
                **({"arms": {a.name: {k: field_param(v) for k, v in a.values}
                             for a in self.sweep.arms if a.best_of}} if self.arm_sources else {})}


def default_study_name(sweep: Sweep, *, epochs: int | None, subset: int | None) -> str:
    """`<sweep>-<engine>`, plus the budget and overrides that make it another experiment."""
    name = f"{sweep.name}-{sweep.run.engine}" + ("-quick" if sweep.budget == "quick" else "")
    if epochs is not None:
        name += f"-e{epochs}"
    if subset is not None:
        name += f"-n{subset}"
    return name


FUSE_AUTO_GPU = 12  # not yet measured on a GPU: scripts/gpu-check.sh measures K = 1..24
MAX_FUSE = 256


def check_fuse(text: str | int) -> int | None:
    """`--fuse auto|off|N` checked before anything is loaded: the size, None for auto."""
    text = str(text).strip().lower()
    if text == "auto":
        return None
    size = 1 if text == "off" else int(text) if text.isascii() and text.isdigit() else 0
    if not 1 <= size <= MAX_FUSE:
        raise SweepError(f"--fuse takes auto, off or a number of trials from 1 to {MAX_FUSE}, "
                         f"not {text!r}")
    return size


def fuse_size(text: str | int, *, engine: str, device: Device) -> int:
    """`--fuse auto|off|N` -> how many trials train together (1: each alone).

    auto fuses on GPUs only: on CPUs a fused model trained slower than its members one
    after another (0.63x for 3 book LeNets on 2 cores; docs/performance.md)."""
    size = check_fuse(text)
    if size is None:
        return FUSE_AUTO_GPU if engine == "torch" and device.kind == "gpu" else 1
    if size > 1 and engine != "torch":
        raise SweepError(f"--fuse {size} needs the torch engine (torch.func): add --engine "
                         f"torch, or drop --fuse")
    return size


def plan_sweep(sweep: Sweep, db: Database, *, study: str | None = None, device: str = "auto",
               data_dir: str | None = None, command: str = "",
               name_overrides: dict[str, int | None] | None = None,
               fuse: str | int = "auto") -> SweepPlan:
    """Check everything that can be checked before the database is touched."""
    store.check_environment()
    backend = get_engine(sweep.run.engine)
    chosen = backend.resolve_device(parse_device(device))
    fused = fuse_size(fuse, engine=sweep.run.engine, device=chosen)
    for name in sorted(sweep.datasets()):
        load_cached(name, data_dir)  # missing or corrupt data fails here, not mid-sweep
    if db.sqlite_path:
        db.folder(writable=True)  # a database that cannot be written fails here
    overrides = name_overrides or {"epochs": None, "subset": None}
    name = study or default_study_name(sweep, **overrides)
    sweep, sources = _resolve_best_of(sweep, db, name)
    plan = SweepPlan(sweep, name, db, chosen,
                     backend.device_name(chosen), backend.version(), backend.gpu_count(),
                     redact(command, db.url), sources, fused,
                     rerun_record(sweep, data_dir, engine=sweep.run.engine))
    check_settings(plan)
    return plan


def rerun_record(sweep: Sweep, data_dir: str | None, *, engine: str) -> dict[str, Any]:
    """What a rerun of any trial needs beyond the study's settings and the trial's own
    record: each dataset's files (the SHA-256 of their content: the loader refuses any
    other) and its validation split (seed, size, SHA-256 of the held-out indices), the
    framework's determinism settings and the platform."""
    import platform
    import sys

    datasets = {}
    for name in sorted(sweep.datasets()):
        data = load_cached(name, data_dir)
        run = sweep.run
        split = (data.subset(run.subset) if run.subset else data).hold_out(
            run.held_out(len(data.train_labels)))
        datasets[name] = {"files": DATASET_INFO[name].raw_sha256, "subset": run.subset,
                          "split": {"seed": SPLIT_SEED, "validation": split.validation,
                                    "sha256": split.split_sha256}}
    determinism = {}
    if engine == "torch" and "torch" in sys.modules:
        torch = sys.modules["torch"]
        determinism = {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
                       "cudnn_deterministic": torch.backends.cudnn.deterministic,
                       "cudnn_benchmark": torch.backends.cudnn.benchmark}
    return {"datasets": datasets, "determinism": determinism,
            "platform": {"system": platform.platform(), "machine": platform.machine(),
                         "python": platform.python_version()}}


def _resolve_best_of(sweep: Sweep, db: Database, study: str) -> tuple[Sweep, dict[str, str]]:
    """Arms with `best_of` take the best configuration that a study of that sweep
    confirmed, of the same engine, budget and subset (exercise 9 runs what exercise 2
    found in the same experiment), else keep the file's values, saying so. A study that
    already exists keeps the values it started with, whatever has been confirmed since,
    so that it can always be continued."""
    if not any(arm.best_of for arm in sweep.arms):
        return sweep, {}
    started = _started_arms(db, study)
    arms, sources = [], {}
    control = sweep.control()
    run = sweep.run
    for arm in sweep.arms:
        if arm.best_of and arm.name in started:
            values, sources[arm.name] = started[arm.name]
            arms.append(replace(arm, values=tuple(sorted(values.items()))))
            continue
        found = best_configuration(db, arm.best_of, engine=run.engine, budget=sweep.budget,
                                   subset=run.subset) if arm.best_of else None
        if found:
            name, label, values = found
            values = {k: v for k, v in values.items() if control.get(k) != v}
            arm = replace(arm, values=tuple(sorted(values.items())))
            sources[arm.name] = (f"the best configuration that study {name!r} confirmed "
                                 f"({label})")
        elif arm.best_of:
            how = f"lenet-lab sweep {arm.best_of} --engine {run.engine}" + \
                (" --budget quick" if sweep.budget == "quick" else "") + \
                (f" --subset {run.subset}" if run.subset else "")
            sources[arm.name] = (f"the fixed recipe in {sweep.path.name}: this database holds "
                                 f"no {arm.best_of!r} study of the {sweep.budget} budget on "
                                 f"{run.engine}" + (f" with --subset {run.subset}" if run.subset
                                                    else "") +
                                 f" whose confirmed best learned (`{how}` makes one)")
        arms.append(arm)
    return replace(sweep, arms=tuple(arms)), sources


def _started_arms(db: Database, study: str) -> dict[str, tuple[dict[str, Any], str]]:
    """{arm name: (its values, where they came from)} of the best_of arms an existing
    study started with (its settings and its Optuna attribute arm_sources)."""
    if not store.has_results(db) or (row := store.study_row(db, study)) is None:
        return {}
    arms = json.loads(row["settings"]).get("arms", {})
    sources = store.study_attrs(db, study).get("arm_sources", {})
    return {name: ({k: field_value(k, v) for k, v in values.items()}, sources.get(name, ""))
            for name, values in arms.items()}


def check_settings(plan: SweepPlan) -> None:
    """Refuse to continue a study that was run with other settings (read-only). Planning
    checks it early; opening the study checks it again under the creation lock, so that of
    two commands started together with other settings one runs and the other is refused."""
    if not store.has_results(plan.db):
        return
    row = store.study_row(plan.db, plan.study_name)
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
