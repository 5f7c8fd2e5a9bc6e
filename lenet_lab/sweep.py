"""A sweep file run as an Optuna study: plan, enqueue, work, resume.

Every arm x seed of a grid (and the control arm's seeds of a search) is enqueued as a
WAITING trial before any worker starts; workers take waiting trials one at a time,
which the storage hands out atomically, so no arm x seed runs twice. A search then
asks the sampler for new trials until its budget is spent. Running the same command
again continues the study: finished arm x seed pairs are skipped, and trials left
RUNNING by a dead worker are marked failed and enqueued again.

Objective: test accuracy after the last epoch (and examples/sec for Pareto sweeps).
Diverged and infeasible trials are told to Optuna as FAIL, with the reason in
`lab_trials`; they are results, so resuming does not rerun them.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import sqlalchemy as sa

from lenet_lab import store
from lenet_lab.data import Dataset, load_dataset
from lenet_lab.engines import Device, get_engine, parse_device
from lenet_lab.errors import InfeasibleSpec, LabError, SpecError, StorageError
from lenet_lab.sweep_file import Arm, Distribution, Sweep, build
from lenet_lab.train import EpochMetrics, train

__all__ = ["SweepPlan", "plan_sweep", "run_sweep"]

HEARTBEAT_S = 10.0
# A RUNNING trial whose worker was silent this long is taken as dead (a worker on this
# machine is known dead at once, by its pid).
GRACE_S = float(os.environ.get("LENET_LAB_GRACE_S", 120))
# How long a worker waits for a database that went away before it gives up.
DB_WAIT_S = float(os.environ.get("LENET_LAB_DB_WAIT_S", 300))
IDLE_POLL_S = 2.0  # a worker with nothing queued checks this often whether others died
DONE_STATES = ("COMPLETE", "PRUNED")
KEPT_FAILURES = ("diverged", "infeasible")  # deterministic outcomes: not rerun


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna


def _encode(value: Any) -> Any:
    """Optuna params must be scalars: lists become '6,16' ('none' when empty)."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "none"
    return value


def _decode(key: str, value: Any) -> Any:
    if key in ("conv_channels", "dense_units"):
        return () if value == "none" else tuple(int(v) for v in str(value).split(","))
    return value


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
        optuna = _optuna()
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
        return {"sampler": run.sampler, "class": name, "seed": run.sampler_seed, **settings,
                "pruner": "MedianPruner(n_startup_trials=5, n_warmup_steps=1)" if run.prune else None}

    def pruner(self):
        optuna = _optuna()
        if self.sweep.run.prune:
            return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
        return optuna.pruners.NopPruner()

    def settings(self) -> dict[str, Any]:
        """What must match for a rerun to continue a study rather than mix two experiments."""
        run = self.sweep.run
        return {"engine": run.engine, "epochs": self.sweep.control()["epochs"],
                "subset": run.subset, "sampler": run.sampler, "objectives": list(run.objectives),
                "fixed": {k: _encode(v) for k, v in sorted(self.sweep.fixed.items())}}

    def expected_trials(self) -> int:
        run = self.sweep.run
        if run.sampler == "grid":
            return len(self.sweep.grid_arms()) * run.seeds
        return run.seeds + (run.trials or 0)


# TPE's defaults changed in Optuna 5; these are spelled out and stored with every study.
TPE_SETTINGS = {"n_startup_trials": 10, "multivariate": True, "constant_liar": True}


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
    backend = get_engine(sweep.run.engine)
    chosen = backend.resolve_device(parse_device(device))
    datasets = {sweep.control()["dataset"]} | set(sweep.space.get("dataset", [])) | {
        arm.as_dict()["dataset"] for arm in sweep.arms if "dataset" in arm.as_dict()}
    for name in sorted(datasets):
        load_dataset(name, data_dir=data_dir)  # missing or corrupt data fails here, not mid-sweep
    url = store.storage_url(storage)
    path = store.sqlite_path(url)
    if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise StorageError(f"--storage {url}: folder {os.path.dirname(path)} does not exist")
    study_name = study or default_study_name(sweep, **(name_overrides or {"epochs": None,
                                                                          "subset": None}))
    plan = SweepPlan(sweep, study_name, url, chosen, backend.device_name(chosen), backend.version(),
                     backend.gpu_count(), store.redact(command, url))
    _check_existing(plan)
    return plan


def _check_existing(plan: SweepPlan) -> None:
    """Refuse to continue a study that was run with other settings (read-only)."""
    path = store.sqlite_path(plan.storage)
    if path and not os.path.exists(path):
        return
    engine = store.connect(plan.storage)
    try:
        if not sa.inspect(engine).has_table("lab_studies"):
            return
        row = store.study_row(engine, plan.study_name)
    finally:
        engine.dispose()
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


# --- setting up the study ----------------------------------------------------------------

def _rdb(url: str):
    optuna = _optuna()
    engine_kwargs = {"connect_args": {"timeout": store.SQLITE_TIMEOUT_S}} \
        if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def _package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": sys.version.split()[0]}
    for name in ("lenet-lab", "optuna", "sqlalchemy", "numpy", "pandas", "mxnet", "mxnet-cu112",
                 "torch"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def open_study(plan: SweepPlan) -> None:
    """Create or load the study, fail stale trials, enqueue missing work.

    Runs in the main process before its workers start, under the creation lock
    (concurrent schema creation on a fresh database races).
    """
    optuna = _optuna()
    engine = store.connect(plan.storage)
    with store.creation_lock(plan.storage):
        rdb = _rdb(plan.storage)  # creates Optuna's schema on a fresh database: inside the lock
        _create_study(plan, optuna, rdb, engine)
        _fail_stale_and_enqueue(plan, optuna.load_study(study_name=plan.study_name, storage=rdb),
                                rdb, engine)
    engine.dispose()


def _create_study(plan: SweepPlan, optuna, rdb, engine) -> None:
    store.ensure_schema(engine)
    optuna.create_study(storage=rdb, study_name=plan.study_name, load_if_exists=True,
                        directions=plan.directions)
    if store.study_row(engine, plan.study_name) is None:
        sweep = plan.sweep
        store.record_study(engine, {
            "study_name": plan.study_name, "sweep": sweep.name, "title": sweep.title,
            "exercise": sweep.exercise, "sweep_file": sweep.text, "sweep_sha256": sweep.sha256,
            "engine": sweep.run.engine, "engine_version": plan.engine_version,
            "device": str(plan.device), "device_name": plan.device_name,
            "sampler": json.dumps(plan.sampler_record()),
            "settings": json.dumps(plan.settings()), "packages": json.dumps(_package_versions()),
            "command": plan.command})


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped is a zombie: dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def fail_stale_trials(study, rdb, engine) -> list[int]:
    """Mark RUNNING trials whose worker is gone as FAIL, with the reason."""
    optuna = _optuna()
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    rows = store.trial_rows(engine, [t._trial_id for t in running])
    host, now, failed = socket.gethostname(), store.utcnow(), []
    for trial in running:
        row = rows.get(trial._trial_id)
        if row is None:
            last = trial.datetime_start
            who = "a worker"
        else:
            last = row["heartbeat_at"]
            who = f"pid {row['pid']} on {row['host']}"
        dead = row is not None and row["host"] == host and not _pid_alive(row["pid"])
        silent = last is None or (now - last).total_seconds() > GRACE_S
        if dead or silent:
            reason = f"worker stopped ({who}) before the trial finished; its arm x seed runs again"
            rdb.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL)
            if row is not None:
                store.update_trial(engine, trial._trial_id, status="failed", reason=reason)
            failed.append(trial.number)
    return failed


def _enqueue_missing(plan: SweepPlan, study, engine) -> None:
    optuna = _optuna()
    sweep = plan.sweep
    arms = sweep.grid_arms() if sweep.run.sampler == "grid" else [Arm(())]
    trials = study.get_trials(deepcopy=False)
    statuses = {r["trial_id"]: r["status"] for r in
                store.trial_rows(engine, [t._trial_id for t in trials]).values()}
    State = optuna.trial.TrialState
    taken = set()
    for t in trials:
        if "arm" not in t.user_attrs:
            continue
        kept = (t.state.name in DONE_STATES or t.state in (State.WAITING, State.RUNNING)
                or (t.state == State.FAIL and statuses.get(t._trial_id) in KEPT_FAILURES))
        if kept:
            taken.add((t.user_attrs["arm"], t.user_attrs["seed"]))
    for arm in arms:
        for seed in range(sweep.run.seeds):
            if (arm.label, seed) in taken:
                continue
            values = arm.as_dict()
            params = {} if sweep.run.sampler == "grid" else {
                key: _encode(sweep.control()[key]) for key in sweep.space}
            study.enqueue_trial(params, user_attrs={
                "arm": arm.label, "seed": seed, "values": json.dumps(
                    {k: _encode(v) for k, v in values.items()}),
                "control": sweep.is_control(values)})


# --- working -----------------------------------------------------------------------------

@dataclass
class _Heartbeat:
    engine: Any
    trial_id: int
    stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> _Heartbeat:
        self.thread = threading.Thread(target=self._beat, daemon=True)
        self.thread.start()
        return self

    def _beat(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            try:
                store.update_trial(self.engine, self.trial_id, heartbeat_at=store.utcnow())
            except Exception:  # a missed beat only makes the trial look older
                pass

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()


def _pop_waiting(study, rdb):
    """The next enqueued trial, taken atomically, or None when the queue is empty.

    Unlike study.ask(), this never makes up a new trial when the queue is empty.
    """
    optuna = _optuna()
    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
        try:  # the storage moves WAITING -> RUNNING for one caller only
            if rdb.set_trial_state_values(frozen._trial_id, state=optuna.trial.TrialState.RUNNING):
                return optuna.Trial(study, frozen._trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def _db(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a database call, waiting with backoff while the database is unreachable."""
    optuna = _optuna()
    waited, delay = 0.0, 0.5
    while True:
        try:
            return call(*args, **kwargs)
        except (sa.exc.OperationalError, sa.exc.InterfaceError,
                optuna.exceptions.StorageInternalError) as exc:
            if waited >= DB_WAIT_S:
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                raise StorageError(
                    f"lost the database for {waited:.0f} s ({reason}); everything finished so far "
                    f"is kept: run the same command again to continue") from None
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 10.0)


def _reconcile(plan: SweepPlan, study, rdb, engine) -> None:
    """Fail trials of dead workers and queue their arm x seed again (under the lock)."""
    with store.creation_lock(plan.storage):
        _fail_stale_and_enqueue(plan, study, rdb, engine)


def _fail_stale_and_enqueue(plan: SweepPlan, study, rdb, engine) -> None:
    fail_stale_trials(study, rdb, engine)
    _enqueue_missing(plan, study, engine)


def _searched_count(study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if "arm" not in t.user_attrs)


def work(plan: SweepPlan, *, worker: int = 0, data_dir: str | None = None) -> int:
    """Run trials until the queue (and a search's budget) is exhausted; returns trials run."""
    optuna = _optuna()
    rdb = _rdb(plan.storage)
    study = optuna.load_study(study_name=plan.study_name, storage=rdb, sampler=plan.sampler(),
                              pruner=plan.pruner())
    engine = store.connect(plan.storage)
    device = plan.device
    if device.kind == "gpu" and plan.gpu_count > 1:
        device = Device("gpu", worker % plan.gpu_count)  # spread workers over the GPUs
    cache: dict[str, Dataset] = {}
    run = plan.sweep.run
    count = 0
    while True:
        trial = _db(_pop_waiting, study, rdb)
        if trial is None and run.sampler != "grid" and \
                _db(_searched_count, study) < (run.trials or 0):
            trial = _db(study.ask)
        if trial is None:
            # Nothing queued: another worker may have died mid-trial. Take its arm x seed
            # over, or wait while others are still running, or stop when all is done.
            _db(_reconcile, plan, study, rdb, engine)
            trial = _db(_pop_waiting, study, rdb)
            if trial is None:
                running = _db(study.get_trials, deepcopy=False,
                              states=(optuna.trial.TrialState.RUNNING,))
                if not running:
                    break
                time.sleep(IDLE_POLL_S)
                continue
        _run_trial(plan, study, trial, engine, device, cache, data_dir)
        count += 1
    engine.dispose()
    return count


def _suggest(trial, key: str, dimension: list[Any] | Distribution) -> Any:
    if isinstance(dimension, Distribution):
        if dimension.integer:
            return trial.suggest_int(key, int(dimension.low), int(dimension.high),
                                     step=int(dimension.step or 1), log=dimension.log)
        return trial.suggest_float(key, dimension.low, dimension.high, step=dimension.step,
                                   log=dimension.log)
    return _decode(key, trial.suggest_categorical(key, [_encode(v) for v in dimension]))


def _run_trial(plan: SweepPlan, study, trial, engine, device: Device, cache: dict[str, Dataset],
               data_dir: str | None) -> None:
    optuna = _optuna()
    sweep, run = plan.sweep, plan.sweep.run
    attrs = trial.user_attrs
    if "arm" in attrs:  # enqueued: an arm x seed
        values = {k: _decode(k, v) for k, v in json.loads(attrs["values"]).items()}
        seed, label, is_control = attrs["seed"], attrs["arm"], attrs["control"]
        if run.sampler != "grid":
            for key, dimension in sweep.space.items():
                _suggest(trial, key, dimension)  # registers the fixed params with Optuna
    else:  # asked from the sampler
        values = {key: _suggest(trial, key, dim) for key, dim in sorted(sweep.space.items())}
        seed, label, is_control = 0, Arm(tuple(sorted(values.items()))).label, \
            sweep.is_control(values)
    full = {**sweep.control(), **values}
    problem: SpecError | None = None
    try:
        spec, config = build(full, seed)
        columns = store.trial_columns(spec, config)
    except SpecError as exc:  # e.g. three unpadded convs: a result, recorded as such
        problem, columns = exc, store.raw_columns({**full, "seed": seed})
    meta = {"engine": run.engine, "device": str(device), "subset": run.subset}
    _db(store.start_trial, engine, trial_id=trial._trial_id, study_name=plan.study_name,
        number=trial.number, arm=label, is_control=is_control, spec_values=columns, run=meta)
    if problem is not None:
        kind = "infeasible" if isinstance(problem, InfeasibleSpec) else "failed"
        _db(store.update_trial, engine, trial._trial_id, status=kind, reason=f"{kind}: {problem}")
        _tell(study, trial, state=optuna.trial.TrialState.FAIL)
        return

    dataset = config.dataset
    if dataset not in cache:
        data = load_dataset(dataset, data_dir=data_dir)
        cache[dataset] = data.subset(run.subset) if run.subset else data

    def on_epoch(m: EpochMetrics) -> None:
        _db(store.add_epoch, engine, trial._trial_id, epoch=m.epoch, train_loss=m.train_loss,
            train_acc=m.train_acc, test_acc=m.test_acc, examples_per_sec=m.examples_per_sec,
            seconds=m.seconds)
        if run.prune:
            _db(trial.report, m.test_acc, m.epoch)
            if _db(trial.should_prune):
                raise optuna.TrialPruned(f"pruned after epoch {m.epoch}: test acc {m.test_acc:.3f} "
                                         f"below the median of earlier trials")

    epochs: list[EpochMetrics] = []
    try:
        with _Heartbeat(engine, trial._trial_id):
            result = train(spec, config, engine=run.engine, device=str(device),
                           data=cache[dataset], keep_weights=True,
                           on_epoch=lambda m: (epochs.append(m), on_epoch(m)))
    except optuna.TrialPruned as exc:
        _db(store.update_trial, engine, trial._trial_id, status="pruned", reason=str(exc),
            **_finals(epochs))
        _tell(study, trial, state=optuna.trial.TrialState.PRUNED)
        return
    except StorageError:  # the database is gone: nothing more can be recorded
        raise
    except BaseException as exc:  # interrupted or crashed: record, then let it propagate
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else \
            f"{type(exc).__name__}: {exc}"
        store.update_trial(engine, trial._trial_id, status="failed", reason=reason, **_finals(epochs))
        _tell(study, trial, state=optuna.trial.TrialState.FAIL)
        raise
    finals = {**_finals(result.epochs), "engine_version": result.engine_version,
              "device_name": result.device_name}
    if result.status == "diverged":
        _db(store.update_trial, engine, trial._trial_id, status="diverged", reason=result.reason,
            **finals)
        _tell(study, trial, state=optuna.trial.TrialState.FAIL)
        return
    _db(store.save_weights, engine, trial._trial_id, result.weights)
    _db(store.update_trial, engine, trial._trial_id, status="complete", **finals)
    objective = {"test_acc": result.final.test_acc, "examples_per_sec": result.examples_per_sec}
    _tell(study, trial, [objective[name] for name in run.objectives])


def _tell(study, trial, values=None, *, state=None) -> None:
    # skip_if_finished: a tell retried after a lost acknowledgement is not an error.
    _db(study.tell, trial, values, state=state, skip_if_finished=True)


def _finals(epochs: list[EpochMetrics]) -> dict[str, Any]:
    if not epochs:
        return {"epochs_done": 0}
    last = epochs[-1]
    seconds = sum(e.seconds for e in epochs)
    examples_per_sec = (sum(e.examples_per_sec * e.seconds for e in epochs) / seconds
                        if seconds else None)
    return {"train_loss": _finite(last.train_loss), "train_acc": last.train_acc,
            "test_acc": _finite(last.test_acc), "examples_per_sec": examples_per_sec,
            "epochs_done": len(epochs), "seconds": seconds}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _worker_process(plan: SweepPlan, worker: int, threads: int, data_dir: str | None) -> None:
    # Each worker gets its share of the cores; set before any framework is imported.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        work(plan, worker=worker, data_dir=data_dir)
    except KeyboardInterrupt:
        sys.exit(130)
    except LabError as exc:
        print(f"Error: worker {worker}: {exc}", file=sys.stderr)
        sys.exit(1)


def run_workers(plan: SweepPlan, *, jobs: int, data_dir: str | None = None) -> None:
    """Run `jobs` workers: in this process for 1, else as separate processes."""
    if jobs == 1:
        work(plan, data_dir=data_dir)
        return
    threads = max(1, len(os.sched_getaffinity(0)) // jobs)
    context = multiprocessing.get_context("spawn")  # frameworks do not survive fork
    processes = [context.Process(target=_worker_process, args=(plan, i, threads, data_dir),
                                 name=f"lenet-lab-worker-{i}") for i in range(jobs)]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            process.join(timeout=30)
        raise
    failed = [p for p in processes if p.exitcode not in (0, None)]
    if failed:
        raise LabError(f"{len(failed)} of {jobs} workers stopped with an error (exit codes "
                       f"{', '.join(str(p.exitcode) for p in failed)}); run the same command "
                       f"again to continue the study")


def run_sweep(plan: SweepPlan, *, jobs: int = 1, data_dir: str | None = None) -> None:
    open_study(plan)
    run_workers(plan, jobs=jobs, data_dir=data_dir)
