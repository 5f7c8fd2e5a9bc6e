"""The arm x seed queue: create the study, enqueue, claim atomically, reconcile the dead.

Every arm x seed of a grid (and the control arm's seeds of a search) is enqueued as a
WAITING trial before any worker starts; workers claim waiting trials one at a time,
which the storage hands out atomically, so no arm x seed runs twice. When a search has
run its trials, its best configurations on validation (results.confirmation_choice) are
enqueued with fresh seeds, the control's (the confirmation stage), by whichever worker
reconciles first; a resume continues it. When the search varies epochs or batch size,
the control then runs again with the confirmed winner's (the `matched` stage), so that
the answer can tell the recipe's share of the gain from the compute's.

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
import sys
import warnings
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from lenet_lab import store
from lenet_lab.errors import LabError
from lenet_lab.processes import pid_alive, this_host
from lenet_lab.results import confirmation_choice, load_study, study_answer
from lenet_lab.results.arms import MATCHED, best_learned
from lenet_lab.results.study import cut_short, stopped_worker
from lenet_lab.fields import field_param, field_value
from lenet_lab.status import Status
from lenet_lab.store import Database
from lenet_lab.sweep.plan import SweepPlan, check_settings, grid_choices
from lenet_lab.sweep_file import Arm, Distribution, specs_from

__all__ = ["OPTUNA_STATE", "add_seed", "ask", "claim", "on_stale", "open_study", "reconcile",
           "searched_left", "take"]

# Our statuses as Optuna records them: diverged and infeasible are results, told as FAIL.
OPTUNA_STATE = {Status.COMPLETE: TrialState.COMPLETE, Status.PRUNED: TrialState.PRUNED,
                Status.DIVERGED: TrialState.FAIL, Status.INFEASIBLE: TrialState.FAIL,
                Status.FAILED: TrialState.FAIL}
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
UNFINISHED = (TrialState.WAITING, TrialState.RUNNING)
KEPT_FAILURES = (Status.DIVERGED.value, Status.INFEASIBLE.value)  # results: not rerun
CLAIM_WINDOW = 512  # queued trials a fusing claim looks through for members of its group


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


def open_study(plan: SweepPlan, progress: Callable[[int, int], None] | None = None) -> None:
    """Create or load the study, fail stale trials, enqueue missing work.

    Runs once before the workers start, under the creation lock (concurrent schema
    creation on a fresh database races, and Optuna's storage creates its schema).
    """
    db = plan.db
    with db.lock():
        rdb = db.optuna(on_stale=on_stale(db))
        store.ensure_schema(db)
        check_settings(plan)  # again, now that no other command can be creating the study
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
            _reconcile_locked(plan, study, progress)
        except BaseException:  # a study that failed to start is not left half-made
            if new:
                with contextlib.suppress(Exception):
                    optuna.delete_study(study_name=plan.study_name, storage=rdb)
                    store.forget_study(db, plan.study_name)
            raise


def _study_record(plan: SweepPlan) -> dict[str, Any]:
    sweep = plan.sweep
    return {"study_name": plan.study_name, "sweep": sweep.name, "title": sweep.title,
            "exercise": sweep.exercise, "sweep_file": sweep.text, "sweep_sha256": sweep.sha256,
            "engine": sweep.run.engine, "engine_version": plan.engine_version,
            "device": str(plan.device), "device_name": plan.device_name,
            "sampler": json.dumps(plan.sampler_record()),
            "settings": json.dumps(plan.settings()),
            "packages": json.dumps(_package_versions()), "command": plan.command,
            "record": json.dumps(plan.record)}


def _enqueue_missing(plan: SweepPlan, study,
                     progress: Callable[[int, int], None] | None = None) -> None:
    """Queue every arm x seed that is neither done, kept as a result, queued nor running."""
    sweep = plan.sweep
    trials = study.get_trials(deepcopy=False)
    statuses = store.trial_statuses(plan.db, [t._trial_id for t in trials])
    taken, finished = set(), set()
    for t in trials:
        status = statuses.get(t._trial_id, (None, None))[0]
        failed_for_good = t.state == TrialState.FAIL and status in KEPT_FAILURES
        if "arm" in t.user_attrs and (t.state in (*DONE, *UNFINISHED) or failed_for_good):
            taken.add((t.user_attrs["arm"], t.user_attrs["seed"]))
            if t.state not in UNFINISHED:
                finished.add((t.user_attrs["arm"], t.user_attrs["seed"]))
    grid = sweep.run.sampler == "grid"
    seeds = sweep.first_seeds
    stages = [(arm, sweep.queued_stage, seeds)
              for arm in (sweep.grid_arms() if grid else [Arm(())])]
    if not grid and sweep.run.confirmations and _search_done(plan, trials):
        # fresh seeds: the searched trial ran seed 0, and its luck is what confirmation removes
        confirmed = _best_configurations(plan)
        stages += [(arm, "confirm", seeds) for arm in confirmed]
        if sweep.compute_keys and all((arm.label, seed) in finished
                                      for arm in confirmed for seed in seeds):
            stages += [(arm, MATCHED, seeds) for arm in _matched_arm(plan)]
    keys, control = list(grid_choices(sweep) or sweep.space), sweep.control()
    store.enqueue_trials(plan.db, plan.study_name, [
        _queued(keys, control, arm, seed, stage) for arm, stage, seeds in stages
        for seed in seeds if (arm.label, seed) not in taken], progress=progress)


def _queued_params(keys: list[str], control: dict[str, Any],
                   values: dict[str, Any]) -> dict[str, Any]:
    """The params a queued arm fixes: a grid's varying fields, a search's space."""
    return {key: field_param(values.get(key, control[key])) for key in keys}


def _queued(keys: list[str], control: dict[str, Any], arm: Arm, seed: int,
            stage: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """An arm x seed as the queue holds it: (its fixed params, its user attributes)."""
    values = arm.as_dict()
    return _queued_params(keys, control, values), {
        "arm": arm.label, "seed": seed, "control": {**control, **values} == control,
        "stage": stage, "values": json.dumps({k: field_param(v) for k, v in values.items()})}


def _search_done(plan: SweepPlan, trials) -> bool:
    searched = [t for t in trials if "arm" not in t.user_attrs]
    unfinished = any(t.state in UNFINISHED for t in searched)
    return not unfinished and _searched_left(plan, searched) <= 0


def _best_configurations(plan: SweepPlan) -> list[Arm]:
    """The search's best configurations (results.confirmation_choice); with the
    parameter count as an objective, also the best one at most twice the book's size."""
    sweep = plan.sweep
    book = specs_from(sweep.control(), seed=0)[0].param_count
    chosen = confirmation_choice(
        load_study(plan.db, plan.study_name), sorted(sweep.space), sweep.run.confirmations,
        book_params=book if sweep.run.small else None)
    return [Arm(tuple(sorted(values.items()))) for values in chosen]


def _matched_arm(plan: SweepPlan) -> list[Arm]:
    """The control with the confirmed winner's epochs and batch size (Sweep.compute_keys),
    when they differ from the control's; the winner is the best on validation
    (results.best_learned)."""
    sweep = plan.sweep
    data = load_study(plan.db, plan.study_name)
    winner = best_learned(study_answer(data).arms)
    if winner is None:
        return []
    row = data.results[data.results.arm == winner.arm].iloc[0]
    control = sweep.control()
    values = {k: field_value(k, row[k]) for k in sweep.compute_keys}
    values = {k: v for k, v in values.items() if v != control[k]}
    return [Arm(tuple(sorted(values.items())))] if values else []


def add_seed(plan: SweepPlan, study, arm_label: str) -> None:
    """One more seed of an arm (`--until-decided`), after the highest it has."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("arm") == arm_label]
    if not trials:
        raise LabError(f"arm {arm_label!r} has no queued trials to add a seed to")
    last = max(trials, key=lambda t: t.user_attrs["seed"])
    values = {k: field_value(k, v) for k, v in json.loads(last.user_attrs["values"]).items()}
    sweep = plan.sweep
    store.enqueue_trials(plan.db, plan.study_name, [_queued(
        list(grid_choices(sweep) or sweep.space), sweep.control(),
        Arm(tuple(sorted(values.items())), name=arm_label), last.user_attrs["seed"] + 1,
        last.user_attrs.get("stage", sweep.queued_stage))])


def _fail(db: Database, trial_id: int, why: str) -> None:
    store.finish_trial(db, trial_id, Status.FAILED, reason=stopped_worker(why))


def on_stale(db: Database):
    """Optuna's stale-trial callback: record why the trial failed (it is requeued next)."""
    def record(study, trial) -> None:
        _fail(db, trial._trial_id, f"no heartbeat for over {store.grace_seconds():g} s")

    return record


def _reconcile_locked(plan: SweepPlan, study,
                      progress: Callable[[int, int], None] | None = None) -> None:
    """Fail the trials of dead workers, then queue every missing arm x seed again;
    `progress(queued, of)` while a long queue is filled."""
    _fail_dead_locked(plan, study)
    _enqueue_missing(plan, study, progress)


def _fail_dead_locked(plan: SweepPlan, study) -> None:
    db, host = plan.db, this_host()
    rdb = db.optuna(on_stale=on_stale(db))
    for trial_id, (worker_host, pid) in store.running_workers(db, plan.study_name).items():
        if worker_host != host or pid is None:
            continue
        if pid_alive(pid):
            rdb.record_heartbeat(trial_id)  # seen alive here: never declared dead
        elif rdb.set_trial_state_values(trial_id, state=TrialState.FAIL):
            _fail(db, trial_id, f"pid {pid} on {worker_host}")
    with warnings.catch_warnings():  # fail_stale_trials is "experimental" in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # calls on_stale for each


def reconcile(plan: SweepPlan, study) -> None:
    """`_reconcile_locked` under the creation lock, so that two workers queue once."""
    with plan.db.lock():
        _reconcile_locked(plan, study)


def _fix_params(plan: SweepPlan, rdb, trial) -> None:
    """A grid trial queued before grids had params (no fixed params) fixes its arm's values
    now, as enqueue_trial would have: else the sampler makes up the values it registers."""
    attrs = trial.user_attrs
    sweep = plan.sweep
    if "arm" in attrs and not trial.system_attrs.get("fixed_params") and \
            (params := _queued_params(list(grid_choices(sweep) or sweep.space), sweep.control(),
                                      json.loads(attrs["values"]))):
        rdb.set_trial_system_attr(trial._trial_id, "fixed_params", params)


def claim(plan: SweepPlan, study, key=None) -> list:
    """Queued trials, taken atomically: the first waiting one, and with `key` (a frozen
    trial's fuse key, None: not fusable) up to plan.fuse more that share its key, to
    train as one fused model. Empty when the queue is; unlike study.ask(), this never
    makes up a new trial.

    Optuna moves WAITING -> RUNNING for one caller only on PostgreSQL (SELECT ... FOR
    UPDATE); Python's SQLite driver reads outside a transaction, so two processes could
    both see WAITING and both take the trial. The creation lock serialises claims.

    A claim reads the few waiting trials it may take (the first, or with `key` the first
    CLAIM_WINDOW), never the whole queue, so its cost does not grow with a grid's size.
    """
    db = plan.db
    rdb = db.optuna(on_stale=on_stale(db))
    with db.lock():
        group, wanted = [], None
        window = CLAIM_WINDOW if key else 1
        for trial_id in store.waiting_trial_ids(db, plan.study_name, limit=window):
            frozen = rdb.get_trial(trial_id)
            if frozen.state != TrialState.WAITING:
                continue
            found = key(frozen) if key else None
            if group and (found is None or found != wanted):
                continue
            try:
                if rdb.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                    take(rdb, trial_id)
                    _fix_params(plan, rdb, frozen)
                    group.append(optuna.Trial(study, trial_id))
                    wanted = found
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            if group and (wanted is None or len(group) >= plan.fuse):
                break
    if group:  # the trials will suggest (a grid's too) or report: Optuna's trial cache
        # must know them (an incremental read of the unfinished)
        study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return group


def ask(plan: SweepPlan, study) -> list:
    """A new trial from a search's sampler, [] when it has run its trials: counting what
    is left, seeding the sampler and drawing every value happen under the creation lock,
    so workers sharing a search never run more trials than it asks for, nor draw at once
    from one state."""
    if plan.sweep.run.sampler == "grid":
        return []
    with plan.db.lock():
        if searched_left(plan, study) <= 0:
            return []
        study.sampler = plan.sampler(trials=len(study.get_trials(deepcopy=False)))
        with warnings.catch_warnings():  # Optuna warns that heartbeats are meant for
            warnings.simplefilter("ignore", UserWarning)  # optimize(); we beat ourselves
            trial = study.ask(search_distributions(plan.sweep))  # every value drawn now
        take(plan.db.optuna(), trial._trial_id)
    return [trial]


def search_distributions(sweep) -> dict[str, Any]:
    """A search's space as Optuna distributions (widths as text), so that `ask` draws
    every value at once; the trial's suggestions later return the same values."""
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)

    found = {}
    for key, dimension in sorted(sweep.space.items()):
        if isinstance(dimension, Distribution):
            kind = IntDistribution if dimension.integer else FloatDistribution
            low, high = (int(dimension.low), int(dimension.high)) if dimension.integer else \
                (dimension.low, dimension.high)
            step = (int(dimension.step or 1) if dimension.integer else dimension.step)
            found[key] = kind(low, high, log=dimension.log, step=step)
        else:
            found[key] = CategoricalDistribution([field_param(v) for v in dimension])
    return found


def take(rdb, trial_id: int) -> None:
    """Mark a trial this worker just took (claimed or asked): from now on its worker can be
    seen to die, by its heartbeat and, on this host, by its pid (store.running_trials),
    even before it records the trial in lab_trials."""
    rdb.record_heartbeat(trial_id)
    rdb.set_trial_system_attr(trial_id, store.WORKER_ATTR, [this_host(), os.getpid()])


def searched_left(plan: SweepPlan, study) -> int:
    """How many more trials a search may ask its sampler for.

    Trials cut short from outside (a dead worker, Ctrl-C) do not count: the search asks
    for others in their place. A trial that failed by its own values counts.
    """
    searched = [t for t in study.get_trials(deepcopy=False) if "arm" not in t.user_attrs]
    return _searched_left(plan, searched)


def _searched_left(plan: SweepPlan, searched) -> int:
    allowed = plan.sweep.run.trials or 0
    if plan.sweep.run.sampler == "grid" or not allowed:
        return 0
    statuses = store.trial_statuses(plan.db, [t._trial_id for t in searched])
    lost = sum(1 for t in searched if t.state == TrialState.FAIL
               and cut_short(*statuses.get(t._trial_id, (None, None))))
    return allowed - (len(searched) - lost)
