"""One trial, in small steps: its values -> spec -> train -> record.

Objective: test accuracy after the last epoch (and examples/sec for Pareto sweeps).
Diverged and infeasible trials are told to Optuna as FAIL, with the reason in
`lab_trials`; they are results, so resuming does not rerun them. A trial that trained
all its epochs is complete even where the pruner would have stopped it.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from lenet_lab import store
from lenet_lab.data import Dataset
from lenet_lab.engines import Device
from lenet_lab.errors import InfeasibleSpec, SpecError, StorageError
from lenet_lab.spec import LeNetSpec, Status, TrainConfig
from lenet_lab.sweep.plan import SweepPlan, decode_param, encode_param
from lenet_lab.sweep_file import Arm, Distribution, build
from lenet_lab.train import EpochMetrics, TrainResult

__all__ = ["TrialHost", "TrialValues", "run_trial", "trial_values"]


class TrialHost(Protocol):
    """What a trial needs from the worker running it (sweep.worker.Worker is one)."""

    plan: SweepPlan
    db: Any  # our tables (a SQLAlchemy Engine)
    rdb: Any  # Optuna's RDBStorage, for heartbeats
    device: Device
    trainer: Any  # lenet_lab.train.train or a stand-in

    def dataset(self, name: str) -> Dataset: ...

    def tell(self, trial, values: list[float] | None = None, *, state: str | None = None) -> None: ...


@dataclass(frozen=True)
class TrialValues:
    values: dict[str, Any]  # the fields this trial sets on top of the control arm
    seed: int
    arm: str
    is_control: bool


def _suggest(trial, key: str, dimension: list[Any] | Distribution) -> Any:
    if isinstance(dimension, Distribution):
        if dimension.integer:
            return trial.suggest_int(key, int(dimension.low), int(dimension.high),
                                     step=int(dimension.step or 1), log=dimension.log)
        return trial.suggest_float(key, dimension.low, dimension.high, step=dimension.step,
                                   log=dimension.log)
    return decode_param(key, trial.suggest_categorical(key, [encode_param(v) for v in dimension]))


def trial_values(worker: TrialHost, trial) -> TrialValues:
    """An enqueued arm x seed, or values asked from the sampler (seed 0)."""
    sweep = worker.plan.sweep
    attrs = trial.user_attrs
    if "arm" in attrs:
        if sweep.run.sampler != "grid":
            for key, dimension in sweep.space.items():
                _suggest(trial, key, dimension)  # registers the fixed params with Optuna
        values = {k: decode_param(k, v) for k, v in json.loads(attrs["values"]).items()}
        return TrialValues(values, attrs["seed"], attrs["arm"], attrs["control"])
    values = {key: _suggest(trial, key, dim) for key, dim in sorted(sweep.space.items())}
    return TrialValues(values, 0, Arm(tuple(sorted(values.items()))).label,
                       sweep.is_control(values))


@dataclass
class _Heartbeat:
    """Optuna's heartbeat for one running trial, recorded every HEARTBEAT_S seconds."""

    rdb: Any
    trial_id: int
    stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> _Heartbeat:
        self.thread = threading.Thread(target=self._beat, daemon=True)
        self.thread.start()
        return self

    def _beat(self) -> None:
        while not self.stop.wait(store.HEARTBEAT_S):
            try:
                self.rdb.record_heartbeat(self.trial_id)
            except Exception:  # a missed beat only makes the trial look older
                pass

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()


def run_trial(worker: TrialHost, trial) -> Status:
    """Run one claimed or asked trial to its end and record it; returns its status."""
    sweep, trial_id = worker.plan.sweep, trial._trial_id
    chosen = trial_values(worker, trial)
    fields = {**sweep.control(), **chosen.values, "seed": chosen.seed}
    spec = config = problem = None
    try:
        spec, config = build(fields, chosen.seed)
    except SpecError as exc:  # e.g. three unpadded convs: a result, recorded as such
        problem = exc
    store.start_trial(worker.db, trial_id=trial_id, study_name=worker.plan.study_name,
                      number=trial.number, arm=chosen.arm, is_control=chosen.is_control,
                      columns=store.trial_columns(fields, spec, config),
                      run={"engine": sweep.run.engine, "device": str(worker.device),
                           "subset": sweep.run.subset})
    if problem is not None:
        status = Status.INFEASIBLE if isinstance(problem, InfeasibleSpec) else Status.FAILED
        store.finish_trial(worker.db, trial_id, status, reason=f"{status}: {problem}")
        worker.tell(trial, state="FAIL")
        return status
    return _train_and_record(worker, trial, spec, config)


def _train_and_record(worker: TrialHost, trial, spec: LeNetSpec, config: TrainConfig) -> Status:
    import optuna

    run, trial_id = worker.plan.sweep.run, trial._trial_id
    epochs: list[EpochMetrics] = []

    def on_epoch(m: EpochMetrics) -> None:
        epochs.append(m)
        store.add_epoch(worker.db, trial_id, epoch=m.epoch, train_loss=m.train_loss,
                        train_acc=m.train_acc, test_acc=m.test_acc,
                        examples_per_sec=m.examples_per_sec, seconds=m.seconds)
        if run.prune and m.epoch < config.epochs:  # the last epoch is a result, not a guess
            store.retrying(trial.report)(m.test_acc, m.epoch)
            if store.retrying(trial.should_prune)():
                raise optuna.TrialPruned(f"pruned after epoch {m.epoch}: test acc "
                                         f"{m.test_acc:.3f} below the median of earlier trials")

    try:
        with _Heartbeat(worker.rdb, trial_id):
            result = worker.trainer(spec, config, engine=run.engine, device=str(worker.device),
                                    data=worker.dataset(config.dataset), keep_weights=True,
                                    on_epoch=on_epoch)
    except optuna.TrialPruned as exc:
        store.finish_trial(worker.db, trial_id, Status.PRUNED, reason=str(exc), **finals(epochs))
        worker.tell(trial, state="PRUNED")
        return Status.PRUNED
    except StorageError:  # the database is gone: nothing more can be recorded
        raise
    except BaseException as exc:  # interrupted or crashed: record, then let it propagate
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else \
            f"{type(exc).__name__}: {exc}"
        store.finish_trial(worker.db, trial_id, Status.FAILED, reason=reason, **finals(epochs))
        worker.tell(trial, state="FAIL")
        raise
    return _record(worker, trial, result)


def _record(worker: TrialHost, trial, result: TrainResult) -> Status:
    values = {**finals(result.epochs), "engine_version": result.engine_version,
              "device_name": result.device_name}
    if result.status is Status.DIVERGED:
        store.finish_trial(worker.db, trial._trial_id, Status.DIVERGED, reason=result.reason,
                           **values)
        worker.tell(trial, state="FAIL")
        return Status.DIVERGED
    store.finish_trial(worker.db, trial._trial_id, Status.COMPLETE, weights=result.weights,
                       **values)
    objective = {"test_acc": result.final.test_acc, "examples_per_sec": result.examples_per_sec}
    worker.tell(trial, [objective[name] for name in worker.plan.sweep.run.objectives])
    return Status.COMPLETE


def finals(epochs: list[EpochMetrics]) -> dict[str, Any]:
    """The last epoch's metrics; examples/sec and seconds over all epochs."""
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
