"""One trial, in small steps: its values -> spec -> train -> record; or a group of
queued trials with one fuse key, trained as one fused model and recorded one by one.

Objective: validation accuracy after the last epoch (and examples/sec or the parameter
count for Pareto sweeps); pruning reads validation accuracy every epoch. The test set
only measures, after the last epoch (a trial stopped earlier has no test accuracy): its
accuracy is recorded beside, never told to Optuna.
Diverged and infeasible trials are told to Optuna as FAIL, with the reason in
`lab_trials`; they are results, so resuming does not rerun them. A trial that trained
all its epochs is complete even where the pruner would have stopped it.
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from lenet_lab import store
from lenet_lab.data import Dataset
from lenet_lab.engines import Device, fuse_key
from lenet_lab.errors import InfeasibleSpec, SpecError, StorageError
from lenet_lab.processes import this_host
from lenet_lab.spec import LeNetSpec, TrainConfig
from lenet_lab.fields import field_param, field_value
from lenet_lab.status import Status
from lenet_lab.sweep.plan import SweepPlan, grid_choices
from lenet_lab.sweep_file import Arm, Distribution, specs_from
from lenet_lab.train import EpochMetrics, TrainResult, throughput, train_members

__all__ = ["TrialHost", "TrialValues", "finals", "fuse_key_of", "run_group", "run_trial",
           "trial_values"]


class TrialHost(Protocol):
    """What a trial needs from the worker running it (sweep.worker.Worker is one)."""

    plan: SweepPlan
    device: Device

    def dataset(self, name: str) -> Dataset: ...

    def tell(self, trial, status: Status, values: list[float] | None = None) -> None: ...


@dataclass(frozen=True)
class TrialValues:
    values: dict[str, Any]  # the fields this trial sets on top of the control arm
    seed: int
    arm: str
    is_control: bool
    stage: str  # grid; or in a search: control, search, confirm


def _suggest(trial, key: str, dimension: list[Any] | Distribution) -> Any:
    if isinstance(dimension, Distribution):
        if dimension.integer:
            return trial.suggest_int(key, int(dimension.low), int(dimension.high),
                                     step=int(dimension.step or 1), log=dimension.log)
        return trial.suggest_float(key, dimension.low, dimension.high, step=dimension.step,
                                   log=dimension.log)
    return field_value(key, trial.suggest_categorical(key, [field_param(v) for v in dimension]))


def fuse_key_of(plan: SweepPlan, trial) -> tuple | None:
    """The fuse key (engines.fuse_key) of a queued trial, from its enqueued values."""
    attrs = trial.user_attrs
    if "arm" not in attrs:
        return None
    values = {k: field_value(k, v) for k, v in json.loads(attrs["values"]).items()}
    try:
        return fuse_key(*specs_from({**plan.sweep.control(), **values}, attrs["seed"]))
    except SpecError:
        return None


def trial_values(worker: TrialHost, trial) -> TrialValues:
    """An enqueued arm x seed, or values asked from the sampler (seed 0)."""
    sweep = worker.plan.sweep
    attrs = trial.user_attrs
    if "arm" in attrs:  # register the queued params with Optuna (a grid's: its choices)
        for key, dimension in (grid_choices(sweep) or sweep.space).items():
            try:
                _suggest(trial, key, dimension)
            except ValueError:  # Optuna keeps a param's first choices: a grid whose values
                if sweep.run.sampler != "grid":  # changed since its study began goes on
                    raise  # without the param (its values are in the user attrs)
        values = {k: field_value(k, v) for k, v in json.loads(attrs["values"]).items()}
        return TrialValues(values, attrs["seed"], attrs["arm"], attrs["control"],
                           attrs.get("stage", sweep.queued_stage))
    values = {key: _suggest(trial, key, dim) for key, dim in sorted(sweep.space.items())}
    return TrialValues(values, 0, Arm(tuple(sorted(values.items()))).label,
                       sweep.is_control(values), "search")


@dataclass
class _Heartbeat:
    """Optuna's heartbeat for running trials, recorded every HEARTBEAT_S seconds."""

    rdb: Any  # Optuna's storage
    trial_ids: list[int]
    stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> _Heartbeat:
        self.thread = threading.Thread(target=self._beat, daemon=True)
        self.thread.start()
        return self

    def _beat(self) -> None:
        from optuna.trial import TrialState

        while not self.stop.wait(store.HEARTBEAT_S):
            for trial_id in self.trial_ids:
                try:  # a trial taken over (failed by another worker) is not ours to beat
                    if self.rdb.get_trial(trial_id).state == TrialState.RUNNING:
                        self.rdb.record_heartbeat(trial_id)
                except Exception:  # a missed beat only makes the trial look older
                    pass

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()


@dataclass
class _Member:
    """A claimed trial, recorded as running, with its spec and its epochs so far."""

    trial: Any
    chosen: TrialValues
    spec: LeNetSpec | None
    config: TrainConfig | None
    epochs: list[EpochMetrics] = field(default_factory=list)
    workers: int = 1  # the most trials training on this host at once, seen at its epochs
    loads: list[float] = field(default_factory=list)  # the host's 1-minute load, per epoch
    fused: int = 1  # trained as one model with this many trials (1: alone)

    def conditions(self) -> dict[str, Any]:
        """How its speed was measured, stored beside it (see store.schema)."""
        threads = os.environ.get("OMP_NUM_THREADS", "")
        return {"workers": self.workers,
                "threads": int(threads) if threads.isascii() and threads.isdigit() else
                len(os.sched_getaffinity(0)),
                "cpu_load": sum(self.loads) / len(self.loads) if self.loads else None,
                "fused": self.fused}


def _start(worker: TrialHost, trial) -> _Member | Status:
    """Record a trial as running; an arm that cannot be built ends here as a result."""
    sweep, trial_id = worker.plan.sweep, trial._trial_id
    chosen = trial_values(worker, trial)
    fields = {**sweep.control(), **chosen.values, "seed": chosen.seed}
    spec = config = problem = None
    try:
        spec, config = specs_from(fields, chosen.seed)
    except SpecError as exc:  # e.g. three unpadded convs: a result, recorded as such
        problem = exc
    store.start_trial(worker.plan.db, trial_id=trial_id, study_name=worker.plan.study_name,
                      number=trial.number, arm=chosen.arm, is_control=chosen.is_control,
                      stage=chosen.stage,
                      columns=store.trial_columns(fields, spec, config),
                      run={"engine": sweep.run.engine, "device": str(worker.device),
                           "subset": sweep.run.subset,
                           "validation": worker.dataset(fields["dataset"]).validation})
    if problem is None:
        return _Member(trial, chosen, spec, config)
    status = Status.INFEASIBLE if isinstance(problem, InfeasibleSpec) else Status.FAILED
    store.finish_trial(worker.plan.db, trial_id, status, reason=f"{status}: {problem}",
                       owner=_me())
    worker.tell(trial, status)
    return status


def run_trial(worker: TrialHost, trial) -> Status:
    """Run one claimed or asked trial to its end and record it; returns its status."""
    return run_group(worker, [trial])[0]


def run_group(worker: TrialHost, trials: list) -> list[Status]:
    """Run claimed trials to their end and record each: one alone, several of one fuse
    key (engines.fuse_key) as one fused model; returns their statuses in order."""
    started = [_start(worker, trial) for trial in trials]
    members = [m for m in started if isinstance(m, _Member)]
    done = _train(worker, members) if members else []
    return [m if isinstance(m, Status) else done.pop(0) for m in started]


def _epoch_done(worker: TrialHost, member: _Member, m: EpochMetrics) -> str | None:
    """Record an epoch and the conditions it ran in; a searched trial that falls behind
    gets the reason it is pruned.

    Only searched trials are pruned: the control and confirmations are the answer, and
    the last epoch is a result, not a guess.
    """
    trial, db = member.trial, worker.plan.db
    member.epochs.append(m)
    store.add_epoch(db, trial._trial_id, owner=_me(), epoch=m.epoch, train_loss=m.train_loss,
                    train_acc=m.train_acc, valid_acc=_finite(m.valid_acc),
                    test_acc=_finite(m.test_acc), examples_per_sec=m.examples_per_sec,
                    seconds=m.seconds)
    member.workers = max(member.workers, store.trials_training_on(db, this_host()))
    member.loads.append(os.getloadavg()[0])
    pruner = worker.plan.sweep.run.pruner
    if pruner and member.chosen.stage == "search" and m.epoch < member.config.epochs:
        trial.report(m.valid_acc, m.epoch)
        if trial.should_prune():
            behind = "the median of earlier trials" if pruner == "median" else \
                "the best third of the trials that got this far"
            return (f"pruned after epoch {m.epoch}: validation accuracy {m.valid_acc:.3f} "
                    f"below {behind}")
    return None


def _train(worker: TrialHost, members: list[_Member]) -> list[Status]:
    plan, first = worker.plan, members[0]
    pruned: dict[int, str] = {}
    for member in members:
        member.fused = len(members)

    def on_epoch(k: int, m: EpochMetrics) -> bool:
        if (reason := _epoch_done(worker, members[k], m)) is not None:
            pruned[k] = reason
        return k in pruned

    try:
        with _Heartbeat(plan.db.optuna(), [m.trial._trial_id for m in members]):
            results = train_members(first.spec, [m.config for m in members],
                                    engine=plan.sweep.run.engine, device=str(worker.device),
                                    data=worker.dataset(first.config.dataset),
                                    keep_weights=True, test_each_epoch=False,
                                    on_epoch=on_epoch)
    except StorageError:  # the database is gone, or the trial is no longer ours (taken
        raise  # over): nothing more is recorded
    except BaseException as exc:  # interrupted or crashed: record, then let it propagate
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else \
            f"{type(exc).__name__}: {exc}"
        for member in members:
            store.finish_trial(plan.db, member.trial._trial_id, Status.FAILED, reason=reason,
                               owner=_me(), **finals(member.epochs), **member.conditions())
            worker.tell(member.trial, Status.FAILED)
        raise
    statuses = []
    for k, (member, result) in enumerate(zip(members, results)):
        if k in pruned:
            store.finish_trial(plan.db, member.trial._trial_id, Status.PRUNED, reason=pruned[k],
                               owner=_me(), **finals(member.epochs), **member.conditions())
            worker.tell(member.trial, Status.PRUNED)
            statuses.append(Status.PRUNED)
        else:
            statuses.append(_record(worker, member, result))
    return statuses


def _record(worker: TrialHost, member: _Member, result: TrainResult) -> Status:
    db, trial = worker.plan.db, member.trial
    values = {**finals(result.epochs), **member.conditions(),
              "engine_version": result.engine_version, "device_name": result.device_name}
    if result.status is Status.DIVERGED:
        store.finish_trial(db, trial._trial_id, Status.DIVERGED, reason=result.reason,
                           owner=_me(), **values)
        worker.tell(trial, Status.DIVERGED)
        return Status.DIVERGED
    store.finish_trial(db, trial._trial_id, Status.COMPLETE, weights=result.weights,
                       owner=_me(), **values)
    objective = {"valid_acc": result.final.valid_acc, "examples_per_sec": result.examples_per_sec,
                 "param_count": result.spec.param_count}
    worker.tell(trial, Status.COMPLETE,
                [objective[name] for name in worker.plan.sweep.run.objectives])
    return Status.COMPLETE


def _me() -> tuple[str, int]:
    """This worker, as start_trial recorded it: the owner of the trials it runs."""
    return this_host(), os.getpid()


def finals(epochs: list[EpochMetrics]) -> dict[str, Any]:
    """The last epoch's metrics; examples/sec and seconds over all epochs."""
    if not epochs:
        return {"epochs_done": 0}
    last = epochs[-1]
    return {"train_loss": _finite(last.train_loss), "train_acc": last.train_acc,
            "valid_acc": _finite(last.valid_acc), "test_acc": _finite(last.test_acc),
            "examples_per_sec": throughput(epochs) or None, "epochs_done": len(epochs),
            "seconds": sum(e.seconds for e in epochs)}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
