"""The arm x seed queue: create the study, enqueue, claim atomically, reconcile the dead.

Every arm x seed of a grid (and the control arm's seeds of a search) is enqueued as a
WAITING trial before any worker starts; workers claim waiting trials one at a time,
which the storage hands out atomically, so no arm x seed runs twice. When a search has
used its budget, its best configurations are enqueued with fresh seeds (the
confirmation stage), by whichever worker reconciles first; a resume continues it.

Dead workers are found two ways. Optuna's RDB storage records each running trial's
heartbeat with the database's clock and reports trials silent for longer than the grace
period ($LENET_LAB_GRACE_S, default 120 s); its stale-trial callback here records why
and queues the arm x seed again. On the worker's own host the pid says more, and
sooner: a dead pid fails its trial at once, and a live one is never declared dead (its
heartbeat is renewed on its behalf) even when its writes were held up.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import warnings
from pathlib import Path
from typing import Any

from lenet_lab import store
from lenet_lab.spec import Status
from lenet_lab.errors import LabError
from lenet_lab.sweep.plan import SweepPlan, decode_param, encode_param, grid_choices
from lenet_lab.sweep_file import Arm, build

__all__ = ["add_seed", "claim", "fail_dead_trials", "on_stale", "open_study", "reconcile",
           "searched_left"]

DONE_STATES = ("COMPLETE", "PRUNED")
KEPT_FAILURES = (Status.DIVERGED.value, Status.INFEASIBLE.value)  # results: not rerun


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


def open_study(plan: SweepPlan, db):
    """Create or load the study, fail stale trials, enqueue missing work; returns Optuna's
    storage (with heartbeats) for a worker in this process to use.

    Runs once before the workers start, under the creation lock (concurrent schema
    creation on a fresh database races, and Optuna's storage creates its schema).
    """
    import optuna

    with store.creation_lock(plan.storage):
        rdb = store.optuna_storage(plan.storage, on_stale=on_stale(db))
        store.ensure_schema(db)
        new = plan.study_name not in optuna.get_all_study_names(storage=rdb)
        try:
            study = optuna.create_study(storage=rdb, study_name=plan.study_name,
                                        load_if_exists=True, directions=plan.directions)
            if store.study_row(db, plan.study_name) is None:
                store.record_study(db, _study_record(plan))
            run = plan.sweep.run
            with warnings.catch_warnings():  # set_metric_names is "experimental" in Optuna 5
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(list(run.objectives))  # optuna-dashboard shows them
            study.set_user_attr("exercise", plan.sweep.exercise)
            study.set_user_attr("title", plan.sweep.title)
            if plan.arm_sources:
                study.set_user_attr("arm_sources", plan.arm_sources)
            if run.until_decided:  # the answer's intervals depend on how many looks it may take
                study.set_user_attr("until_decided", {"max_seeds": run.until_decided,
                                                      "start_seeds": run.seeds,
                                                      "margin": run.margin})
            _reconcile_locked(plan, study, rdb, db)
        except BaseException:  # a study that failed to start is not left half-made
            if new:
                with contextlib.suppress(Exception):
                    optuna.delete_study(study_name=plan.study_name, storage=rdb)
                    store.forget_study(db, plan.study_name)
            raise
    return rdb


def _study_record(plan: SweepPlan) -> dict[str, Any]:
    sweep = plan.sweep
    return {"study_name": plan.study_name, "sweep": sweep.name, "title": sweep.title,
            "exercise": sweep.exercise, "sweep_file": sweep.text, "sweep_sha256": sweep.sha256,
            "engine": sweep.run.engine, "engine_version": plan.engine_version,
            "device": str(plan.device), "device_name": plan.device_name,
            "sampler": json.dumps(plan.sampler_record()),
            "settings": json.dumps(plan.settings()),
            "packages": json.dumps(_package_versions()), "command": plan.command}


def _enqueue_missing(plan: SweepPlan, study, db) -> None:
    """Queue every arm x seed that is neither done, kept as a result, queued nor running."""
    sweep = plan.sweep
    trials = study.get_trials(deepcopy=False)
    statuses = store.trial_statuses(db, [t._trial_id for t in trials])
    taken = set()
    for t in trials:
        status = statuses.get(t._trial_id, (None, None))[0]
        failed_for_good = t.state.name == "FAIL" and status in KEPT_FAILURES
        if "arm" in t.user_attrs and (t.state.name in (*DONE_STATES, "WAITING", "RUNNING")
                                      or failed_for_good):
            taken.add((t.user_attrs["arm"], t.user_attrs["seed"]))
    grid = sweep.run.sampler == "grid"
    stages = [(arm, sweep.queued_stage, range(sweep.run.seeds))
              for arm in (sweep.grid_arms() if grid else [Arm(())])]
    if not grid and sweep.run.confirmations and _search_done(plan, db, trials):
        # fresh seeds: the searched trial ran seed 0, and its luck is what confirmation removes
        stages += [(arm, "confirm", range(1, sweep.run.seeds + 1))
                   for arm in _best_configurations(plan, trials, statuses)]
    for arm, stage, seeds in stages:
        for seed in seeds:
            if (arm.label, seed) not in taken:
                _enqueue(plan, study, arm, seed, stage)


def _queued_params(sweep, values: dict[str, Any]) -> dict[str, Any]:
    """The params a queued arm fixes: a grid's varying fields, a search's space."""
    keys = grid_choices(sweep) or sweep.space
    return {key: encode_param(values.get(key, sweep.control()[key])) for key in keys}


def _enqueue(plan: SweepPlan, study, arm: Arm, seed: int, stage: str) -> None:
    sweep, values = plan.sweep, arm.as_dict()
    study.enqueue_trial(_queued_params(sweep, values), user_attrs={
        "arm": arm.label, "seed": seed, "control": sweep.is_control(values), "stage": stage,
        "values": json.dumps({k: encode_param(v) for k, v in values.items()})})


def _search_done(plan: SweepPlan, db, trials) -> bool:
    searched = [t for t in trials if "arm" not in t.user_attrs]
    unfinished = any(t.state.name in ("RUNNING", "WAITING") for t in searched)
    return not unfinished and _searched_left(plan, searched, db) <= 0


def _best_configurations(plan: SweepPlan, trials, statuses) -> list[Arm]:
    """The search's best configurations by test accuracy (distinct, not the control);
    with the parameter count as an objective, also the best one at most twice the
    control's size. Trial number breaks ties, so a resume picks the same ones."""
    run, sweep = plan.sweep.run, plan.sweep
    complete = [t for t in trials if "arm" not in t.user_attrs and t.state.name == "COMPLETE"
                and statuses.get(t._trial_id, (None,))[0] == Status.COMPLETE]
    accuracy = run.objectives.index("test_acc")
    ranked = []
    for t in sorted(complete, key=lambda t: (-t.values[accuracy], t.number)):
        values = {k: decode_param(k, v) for k, v in t.params.items()}
        if not sweep.is_control(values):
            ranked.append((Arm(tuple(sorted(values.items()))), t))
    chosen: list[Arm] = []
    for arm, _ in ranked:
        if arm not in chosen and len(chosen) < run.confirmations:
            chosen.append(arm)
    if "param_count" in run.objectives:
        limit = 2 * build(sweep.control(), seed=0)[0].param_count
        size = run.objectives.index("param_count")
        small = next((arm for arm, t in ranked if t.values[size] <= limit), None)
        if small is not None and small not in chosen:
            chosen.append(small)
    return chosen


@store.retrying
def add_seed(plan: SweepPlan, study, arm_label: str) -> None:
    """One more seed of an arm (`--until-decided`), after the highest it has."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("arm") == arm_label]
    if not trials:
        raise LabError(f"arm {arm_label!r} has no queued trials to add a seed to")
    last = max(trials, key=lambda t: t.user_attrs["seed"])
    values = {k: decode_param(k, v) for k, v in json.loads(last.user_attrs["values"]).items()}
    _enqueue(plan, study, Arm(tuple(sorted(values.items())), name=arm_label),
             last.user_attrs["seed"] + 1, last.user_attrs.get("stage", plan.sweep.queued_stage))


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


WORKER_STOPPED = "worker stopped"


def _fail(db, trial_id: int, why: str) -> None:
    store.finish_trial(db, trial_id, Status.FAILED,
                       reason=f"{WORKER_STOPPED} ({why}) before the trial finished; "
                              f"its arm x seed runs again")


def _cut_short(status: str | None, reason: str | None) -> bool:
    """A trial stopped from outside (its worker died, or Ctrl-C), not by its own values."""
    return status == Status.FAILED and (reason == "interrupted"
                                        or (reason or "").startswith(WORKER_STOPPED))


def on_stale(db):
    """Optuna's stale-trial callback: record why the trial failed (it is requeued next)."""
    def record(study, trial) -> None:
        _fail(db, trial._trial_id, f"no heartbeat for over {store.grace_seconds():g} s")

    return record


def _reconcile_locked(plan: SweepPlan, study, rdb, db) -> None:
    """Fail the trials of dead workers, then queue every missing arm x seed again."""
    _fail_dead_locked(plan.study_name, study, rdb, db)
    _enqueue_missing(plan, study, db)


def fail_dead_trials(storage: str, names: list[str]) -> None:
    """Fail the running trials of dead workers in these studies, as a resumed sweep does
    first, so that readers (the report) never show them running for ever. Queueing them
    again is left to the next `lenet-lab sweep`. A database this process may not write
    (a read-only copy) is left as it is."""
    import optuna

    reader, db = store.connect(storage, read_only=True), None
    try:
        if not any(store.running_workers(reader, name) for name in names):
            return  # the usual case: nothing to write
        db = store.connect(storage)
        with store.creation_lock(storage):
            rdb = store.optuna_storage(storage, on_stale=on_stale(db))
            for name in names:
                _fail_dead_locked(name, optuna.load_study(study_name=name, storage=rdb), rdb, db)
    except Exception as exc:  # read-only, or no lab tables: nothing of ours to reconcile
        if not isinstance(exc, OSError) and store.database_error(exc) is None:
            raise
    finally:
        for handle in (reader, db):
            if handle is not None:
                handle.dispose()


def _fail_dead_locked(study_name: str, study, rdb, db) -> None:
    import optuna

    host = socket.gethostname()
    for trial_id, (worker_host, pid) in store.running_workers(db, study_name).items():
        if worker_host != host or pid is None:
            continue
        if _pid_alive(pid):
            rdb.record_heartbeat(trial_id)  # seen alive here: never declared dead
        elif rdb.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL):
            _fail(db, trial_id, f"pid {pid} on {worker_host}")
    with warnings.catch_warnings():  # fail_stale_trials is "experimental" in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # calls on_stale for each


@store.retrying
def reconcile(plan: SweepPlan, study, rdb, db) -> None:
    """`_reconcile_locked` under the creation lock, so that two workers queue once."""
    with store.creation_lock(plan.storage):
        _reconcile_locked(plan, study, rdb, db)


def _fix_params(plan: SweepPlan, rdb, trial) -> None:
    """A grid trial queued before grids had params (no fixed params) fixes its arm's values
    now, as enqueue_trial would have: else the sampler makes up the values it registers."""
    attrs = trial.user_attrs
    if "arm" in attrs and not trial.system_attrs.get("fixed_params") and \
            (params := _queued_params(plan.sweep, json.loads(attrs["values"]))):
        rdb.set_trial_system_attr(trial._trial_id, "fixed_params", params)


@store.retrying
def claim(plan: SweepPlan, study, rdb, db, key=None) -> list:
    """Queued trials, taken atomically: the first waiting one, and with `key` (a frozen
    trial's fuse key, None: not fusable) up to plan.fuse more that share its key, to
    train as one fused model. Empty when the queue is; unlike study.ask(), this never
    makes up a new trial.

    Optuna moves WAITING -> RUNNING for one caller only on PostgreSQL (SELECT ... FOR
    UPDATE); Python's SQLite driver reads outside a transaction, so two processes could
    both see WAITING and both take the trial. The creation lock serialises claims.
    """
    import optuna

    with store.creation_lock(plan.storage):
        waiting = {t._trial_id: t for t in study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.WAITING,))}
        group, wanted = [], None
        for trial_id in store.waiting_trial_ids(db, plan.study_name):
            if trial_id not in waiting:
                continue  # queued after the read above: the next claim sees it
            found = key(waiting[trial_id]) if key else None
            if group and (found is None or found != wanted):
                continue
            try:
                if rdb.set_trial_state_values(trial_id, state=optuna.trial.TrialState.RUNNING):
                    rdb.record_heartbeat(trial_id)  # from now on its worker can be seen to die
                    _fix_params(plan, rdb, waiting[trial_id])
                    group.append(optuna.Trial(study, trial_id))
                    wanted = found
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            if group and (wanted is None or len(group) >= plan.fuse):
                break
    if group:  # the trials will suggest (a grid's too) or report: Optuna's trial cache
        # must know them (an incremental read of the unfinished)
        study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    return group


@store.retrying
def searched_left(plan: SweepPlan, study, db) -> int:
    """How many more trials a search may ask its sampler for.

    Trials cut short from outside (a dead worker, Ctrl-C) do not count: the search asks
    for others in their place. A trial that failed by its own values counts.
    """
    searched = [t for t in study.get_trials(deepcopy=False) if "arm" not in t.user_attrs]
    return _searched_left(plan, searched, db)


def _searched_left(plan: SweepPlan, searched, db) -> int:
    budget = plan.sweep.run.trials or 0
    if plan.sweep.run.sampler == "grid" or not budget:
        return 0
    statuses = store.trial_statuses(db, [t._trial_id for t in searched])
    lost = sum(1 for t in searched if t.state.name == "FAIL"
               and _cut_short(*statuses.get(t._trial_id, (None, None))))
    return budget - (len(searched) - lost)
