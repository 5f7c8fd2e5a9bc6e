"""The queue, resume and dead-worker logic, in process, with a stand-in trainer (fast).

The stand-in (conftest.StandIn) returns made-up metrics instead of training, so each test
runs whole sweeps in seconds against a real SQLite file and Optuna's real storage;
tests/test_sweep.py runs the same paths with real training.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from lenet_lab import store
from lenet_lab.errors import LabError
from lenet_lab.results import best_configuration, load_study, study_answer
from lenet_lab.store import Database
from lenet_lab.sweep import Worker, plan_sweep, run_sweep
from lenet_lab.sweep.queue import claim, open_study, reconcile
from lenet_lab.sweep.trial import run_trial
from lenet_lab.sweep_file import load_sweep
from tests.conftest import done, plan_for

GRID = [("pooling=avg", 0), ("pooling=avg", 1), ("pooling=max", 0), ("pooling=max", 1)]


def search_plan(folder: Path, text: str, **options):
    """A plan of the sweep file `text`, written to <folder>/search.toml."""
    (folder / "search.toml").write_text(text)
    return plan_for(folder, str(folder / "search.toml"), **options)


def rows(folder: Path) -> pd.DataFrame:
    return pd.read_sql("SELECT * FROM lab_results ORDER BY trial", f"sqlite:///{folder}/studies.db")


def test_a_grid_runs_every_arm_seed_once_and_a_rerun_adds_nothing(tmp_path: Path,
                                                                   stand_in) -> None:
    plan, trainer = plan_for(tmp_path), stand_in()
    run_sweep(plan)
    assert sorted(trainer.calls) == [("avg", 0), ("avg", 1), ("max", 0), ("max", 1)]
    frame = rows(tmp_path)
    assert done(frame) == GRID and len(frame) == 4
    assert frame.test_acc.tolist() == pytest.approx([0.5, 0.51, 0.6, 0.61])
    assert (frame.epochs_done == 2).all() and frame.is_control.sum() == 2
    run_sweep(plan)
    assert len(trainer.calls) == 4 and len(rows(tmp_path)) == 4


def test_an_interrupted_sweep_resumes_without_duplicates(tmp_path: Path, stand_in) -> None:
    plan = plan_for(tmp_path)
    stand_in(stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(plan)
    frame = rows(tmp_path)
    assert len(done(frame)) == 2 and frame[frame.state == "failed"].reason.tolist() == ["interrupted"]
    trainer = stand_in()
    run_sweep(plan)
    assert len(trainer.calls) == 2  # only the missing two ran
    assert done(rows(tmp_path)) == GRID


@pytest.mark.parametrize("fuse, groups", [(3, [3, 3]), (2, [1, 1, 2, 2]), (1, [1] * 6)])
def test_fused_workers_claim_groups_of_one_network_shape(tmp_path: Path, stand_in, fuse: int,
                                                         groups: list[int]) -> None:
    plan, trainer = plan_for(tmp_path, seeds=3, fuse=fuse), stand_in()
    run_sweep(plan)
    assert sorted(len(g) for g in trainer.groups) == groups
    assert all(len({pooling for pooling, _ in g}) == 1 for g in trainer.groups)
    frame = rows(tmp_path)
    assert len(frame) == 6 and (frame.state == "complete").all()
    assert sorted(zip(frame.arm, frame.seed)) == sorted(
        (f"pooling={p}", s) for p in ("avg", "max") for s in range(3))


def _running_trial(plan, host: str, pid: int) -> tuple[Worker, int]:
    """A claimed trial recorded as run by (host, pid), as a worker leaves it mid-way."""
    open_study(plan)
    worker = Worker(plan)
    trial = claim(plan, worker.study)[0]
    store.start_trial(plan.db, trial_id=trial._trial_id, study_name=plan.study_name,
                      number=trial.number, arm=trial.user_attrs["arm"], is_control=True,
                      stage="grid", columns=store.trial_columns({"seed": 0}),
                      run={"engine": "torch"})
    with plan.db.transaction() as conn:
        conn.execute(sa.text("UPDATE lab_trials SET host = :h, pid = :p WHERE trial_id = :t"),
                     {"h": host, "p": pid, "t": trial._trial_id})
    return worker, trial._trial_id


def _age_heartbeat(worker: Worker, trial_id: int, seconds: int) -> None:
    with worker.plan.db.transaction() as conn:
        conn.execute(sa.text("UPDATE trial_heartbeats SET heartbeat = datetime('now', :age) "
                             "WHERE trial_id = :t"), {"age": f"-{seconds} seconds", "t": trial_id})


def test_a_dead_pid_on_this_host_is_failed_at_once_and_requeued(tmp_path: Path,
                                                                stand_in) -> None:
    plan = plan_for(tmp_path)
    dead = subprocess.Popen(["true"])
    dead.wait()
    worker, trial_id = _running_trial(plan, socket.gethostname(), dead.pid)
    reconcile(plan, worker.study)
    frame = rows(tmp_path)
    failed = frame[frame.state == "failed"]
    assert failed.reason.tolist() == [f"worker stopped (pid {dead.pid} on {socket.gethostname()}) "
                                      "before the trial finished; its arm x seed runs again"]
    assert (frame.state == "waiting").sum() == 4  # its arm x seed is queued again
    stand_in()
    run_sweep(plan)
    assert done(rows(tmp_path)) == GRID


def test_a_silent_worker_elsewhere_is_failed_by_optunas_heartbeat(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LENET_LAB_GRACE_S", "30")
    plan = plan_for(tmp_path)
    worker, trial_id = _running_trial(plan, "another-machine", 12345)
    _age_heartbeat(worker, trial_id, 20)  # within the grace period: alive
    reconcile(plan, worker.study)
    assert (rows(tmp_path).state == "running").sum() == 1
    _age_heartbeat(worker, trial_id, 40)  # silent for longer than the grace period
    reconcile(plan, worker.study)
    frame = rows(tmp_path)
    assert frame[frame.state == "failed"].reason.tolist() == [
        "worker stopped (no heartbeat for over 30 s) before the trial finished; "
        "its arm x seed runs again"]
    assert (frame.state == "waiting").sum() == 4


def test_a_live_worker_on_this_host_is_never_declared_dead(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LENET_LAB_GRACE_S", "11")
    plan = plan_for(tmp_path)
    worker, trial_id = _running_trial(plan, socket.gethostname(), os.getpid())
    _age_heartbeat(worker, trial_id, 3600)  # its writes were held up for an hour
    reconcile(plan, worker.study)
    frame = rows(tmp_path)
    assert (frame.state == "running").sum() == 1 and (frame.state == "failed").sum() == 0


@pytest.mark.parametrize("name, value, message", [
    ("LENET_LAB_GRACE_S", "5", "LENET_LAB_GRACE_S=5 must exceed the heartbeat interval (10 s)"),
    ("LENET_LAB_GRACE_S", "abc", "LENET_LAB_GRACE_S='abc' is not a positive number of seconds"),
    ("LENET_LAB_DB_WAIT_S", "-1", "LENET_LAB_DB_WAIT_S='-1' is not a positive number of seconds"),
])
def test_bad_timing_settings_are_refused_before_the_database_is_touched(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str,
        message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(LabError, match=re.escape(message)):
        plan_for(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_search_asks_its_sampler_then_confirms_its_best_with_fresh_seeds(tmp_path: Path,
                                                                          stand_in) -> None:
    (tmp_path / "search.toml").write_text(
        'title = "a search"\n[run]\nsampler = "random"\ntrials = 3\n'
        '[space]\npooling = ["avg", "max"]\nlr = { low = 0.1, high = 1.0 }\n')
    plan, trainer = plan_for(tmp_path, str(tmp_path / "search.toml")), stand_in()
    run_sweep(plan)
    frame = rows(tmp_path)
    assert frame.stage.value_counts().to_dict() == {"control": 2, "search": 3, "confirm": 6}
    assert frame.is_control.sum() == 2 and (frame.state == "complete").all()
    assert frame.lr.between(0.1, 1.0).all() and len(trainer.calls) == 11
    confirm, searched = frame[frame.stage == "confirm"], frame[frame.stage == "search"]
    assert set(confirm.arm) == set(searched.arm) and sorted(set(confirm.seed)) == [1, 2]
    run_sweep(plan)  # a rerun finds the stage done
    assert len(rows(tmp_path)) == 11 and len(trainer.calls) == 11


def test_confirmation_resumes_and_can_be_turned_off(tmp_path: Path, stand_in) -> None:
    (tmp_path / "search.toml").write_text(
        'title = "a search"\n[run]\nsampler = "random"\ntrials = 2\nconfirm = 1\n'
        '[space]\npooling = ["avg", "max"]\nlr = { low = 0.1, high = 1.0 }\n')
    plan = plan_for(tmp_path, str(tmp_path / "search.toml"))
    stand_in(stop_after=5)
    with pytest.raises(KeyboardInterrupt):  # control 2, search 2, the first confirmation
        run_sweep(plan)
    stand_in()
    run_sweep(plan)
    frame = rows(tmp_path)
    confirm = frame[(frame.stage == "confirm") & (frame.state == "complete")]
    assert sorted(confirm.seed) == [1, 2] and confirm.arm.nunique() == 1
    best = frame[frame.stage == "search"].sort_values("test_acc").arm.iloc[-1]
    assert confirm.arm.iloc[0] == best
    # the interrupted confirmation left a failed row: once rerun, the stage still counts
    assert (frame[frame.stage == "confirm"].state == "failed").sum() == 1
    study, label, values = best_configuration(plan.db, "search", engine="torch", subset=200)
    assert study == plan.study_name and values["pooling"] in ("avg", "max")
    # the label as the report shows it: the values at 4 significant digits
    assert set(label.split(", ")) == {f"lr={values['lr']:.4g}", f"pooling={values['pooling']}"}
    off = load_sweep(str(tmp_path / "search.toml")).with_run(engine="torch", epochs=1,
                                                             subset=200, confirm=0)
    other = plan_sweep(off, Database(f"sqlite:///{tmp_path}/off.db"), device="cpu")
    run_sweep(other)
    assert "confirm" not in set(pd.read_sql("SELECT stage FROM lab_results",
                                            f"sqlite:///{tmp_path}/off.db").stage)


def test_until_decided_adds_seeds_to_the_control_and_leader_up_to_max(tmp_path: Path,
                                                                      stand_in) -> None:
    """Paired by seed, the two arms differ by -0.04, +0.02, +0.02, -0.04: never decided."""
    (tmp_path / "lr.toml").write_text('title = "lr"\n[run]\nseeds = 2\n[space]\nlr = [0.9, 0.5]\n')
    sweep = load_sweep(str(tmp_path / "lr.toml")).with_run(engine="torch", epochs=1, subset=200,
                                                           until_decided=4)
    plan = plan_sweep(sweep, Database(f"sqlite:///{tmp_path}/studies.db"), device="cpu")
    stand_in(noise=lambda spec, config: 0.02 * ((7 * config.seed + int(10 * config.lr)) % 3 - 1))
    run_sweep(plan)
    frame = rows(tmp_path)
    assert frame.groupby("arm").seed.apply(sorted).to_dict() == {
        "lr=0.5": [0, 1, 2, 3], "lr=0.9": [0, 1, 2, 3]}
    text = study_answer(load_study(plan.db, plan.study_name)).headline
    assert "Until decided: reached the maximum of 4 seeds undecided." in text


@pytest.mark.parametrize("epochs", [4, 3])
def test_pruning_stops_trials_early_but_never_after_their_last_epoch(tmp_path: Path, stand_in,
                                                                    epochs: int) -> None:
    """Nothing is pruned before its third epoch (a slow starter is still at chance after
    one), nor at its last."""
    (tmp_path / "prune.toml").write_text(
        'title = "a pruned search"\n[run]\nsampler = "random"\ntrials = 8\nprune = true\n'
        'confirm = 0\nseeds = 2\n'
        '[space]\npooling = ["avg", "max"]\n')
    stand_in()
    run_sweep(plan_for(tmp_path, str(tmp_path / "prune.toml"), epochs, seeds=None))
    frame = rows(tmp_path)
    pruned = frame[frame.state == "pruned"]
    # avg pooling scores below the median of the earlier trials at every epoch
    assert len(frame) == 10 and (pruned.epochs_done < epochs).all()
    assert (pruned.epochs_done >= 3).all() and pruned.reason.str.startswith(
        "pruned after epoch 3: validation accuracy").all()
    assert (frame[frame.state != "pruned"].state == "complete").all()
    assert len(pruned) > 0 if epochs > 3 else pruned.empty


def test_a_search_replaces_a_trial_cut_short_and_keeps_its_budget(tmp_path: Path,
                                                                  stand_in) -> None:
    plan = search_plan(tmp_path, 'title = "a search"\n[run]\nsampler = "random"\ntrials = 3\n'
                       'confirm = 0\nseeds = 2\n[space]\npooling = ["avg", "max"]\n', seeds=None)
    stand_in(stop_after=3)
    with pytest.raises(KeyboardInterrupt):  # the control's 2 seeds, then Ctrl-C
        run_sweep(plan)
    stand_in()
    run_sweep(plan)
    frame = rows(tmp_path)
    # the control's 2 seeds and the search's budget of 3, despite the interruption
    assert (frame.state == "complete").sum() == 2 + 3 and len(frame) == 6
    assert frame[frame.state == "failed"].reason.tolist() == ["interrupted"]


def test_a_study_that_fails_to_start_is_not_left_half_made(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stand_in) -> None:
    import optuna

    from lenet_lab.sweep import queue

    plan, enqueue = plan_for(tmp_path), queue._enqueue_missing

    def broken(*_: object) -> None:
        raise KeyboardInterrupt  # Ctrl-C while the queue is being filled

    stand_in()
    monkeypatch.setattr(queue, "_enqueue_missing", broken)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(plan)
    assert optuna.get_all_study_names(storage=plan.db.url) == []
    assert rows(tmp_path).empty
    monkeypatch.setattr(queue, "_enqueue_missing", enqueue)
    run_sweep(plan)  # and the next start makes it whole
    assert done(rows(tmp_path)) == GRID


def test_a_copy_that_fails_part_way_leaves_nothing_in_the_target(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stand_in) -> None:
    import optuna

    from lenet_lab.store import transfer

    plan = plan_for(tmp_path)
    stand_in()
    run_sweep(plan)
    target = f"sqlite:///{tmp_path}/copy.db"
    copy_rows = transfer._copy_our_rows

    def disk_full(*_: object) -> None:
        raise sa.exc.OperationalError("INSERT", {}, Exception("database or disk is full"))

    monkeypatch.setattr(transfer, "_copy_our_rows", disk_full)
    with pytest.raises(sa.exc.OperationalError, match="disk is full"):
        store.copy_study(plan.db, Database(target), plan.study_name)
    assert optuna.get_all_study_names(storage=target) == []
    monkeypatch.setattr(transfer, "_copy_our_rows", copy_rows)
    assert store.copy_study(plan.db, Database(target), plan.study_name) == 4  # then it copies
    copied = pd.read_sql("SELECT * FROM lab_results", target)
    assert sorted(zip(copied.arm, copied.seed)) == GRID


def test_a_database_from_before_stages_is_upgraded_in_place(tmp_path: Path, stand_in) -> None:
    plan = plan_for(tmp_path)
    stand_in()
    run_sweep(plan)
    with plan.db.transaction() as conn:  # as lenet-lab 0.1 left it
        conn.exec_driver_sql("DROP VIEW lab_results")
        conn.exec_driver_sql("DROP TABLE lab_schema")
        for column in ("stage", "workers", "threads", "cpu_load"):
            conn.exec_driver_sql(f"ALTER TABLE lab_trials DROP COLUMN {column}")
        conn.exec_driver_sql(store.schema.RESULTS_VIEW.replace("lt.stage AS stage, ", "")
                             .replace("lt.workers AS workers, lt.threads AS threads, "
                                      "lt.cpu_load AS cpu_load, ", ""))
    assert "stage" not in rows(tmp_path)
    assert study_answer(load_study(plan.db, plan.study_name)).leader.arm.arm == "pooling=max"
    run_sweep(plan_for(tmp_path, seeds=3))  # the next run upgrades it
    frame = rows(tmp_path)
    assert frame.stage.tolist() == [None] * 4 + ["grid"] * 2 and frame.seed.max() == 2


def test_workers_sharing_a_search_draw_different_configurations(tmp_path: Path,
                                                                 stand_in) -> None:
    """Two workers with one sampler seed once drew the same random trials in lockstep."""
    plan = search_plan(tmp_path, 'title = "a search"\n[run]\nsampler = "tpe"\ntrials = 4\n'
                       'confirm = 0\nseeds = 1\n[space]\nlr = { low = 0.1, high = 1.0 }\n',
                       seeds=None)
    stand_in()
    open_study(plan)
    first, second = Worker(plan), Worker(plan)
    turn = 0  # the workers take turns, as two processes interleave
    while trials := (first, second)[turn % 2].next_trials():
        run_trial((first, second)[turn % 2], trials[0])
        turn += 1
    searched = rows(tmp_path).query("stage == 'search'")
    assert len(searched) == 4 and searched.lr.nunique() == 4
    again = tmp_path / "again"
    again.mkdir()
    plan_again = plan_for(again, str(tmp_path / "search.toml"), seeds=None)
    run_sweep(plan_again)  # one worker: the same draws, reproducibly
    assert rows(again).query("stage == 'search'").lr.tolist() == searched.lr.tolist()


def _claim_all(plan, out: str) -> None:
    """A worker process that only claims: every trial id it gets, until the queue is empty."""
    import optuna

    study = optuna.load_study(study_name=plan.study_name, storage=plan.db.optuna())
    taken = []
    while trials := claim(plan, study):
        taken += [t._trial_id for t in trials]
    Path(out).write_text(" ".join(map(str, taken)))


@pytest.mark.slow
def test_concurrent_claims_take_each_trial_once(tmp_path: Path) -> None:
    """On SQLite two processes could both read WAITING and both take one trial."""
    import multiprocessing

    plan = plan_for(tmp_path, seeds=150)  # long enough for all four to take part
    open_study(plan)
    context = multiprocessing.get_context("spawn")
    outs = [str(tmp_path / f"claims-{i}") for i in range(4)]
    workers = [context.Process(target=_claim_all, args=(plan, out)) for out in outs]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
    taken = [int(t) for out in outs for t in Path(out).read_text().split()]
    assert len(taken) == 300 and len(set(taken)) == 300
    assert min(len(Path(out).read_text().split()) for out in outs) > 0  # all took part


def test_two_workers_asking_a_search_at_once_never_draw_from_one_sampler_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers ask one TPE search at the same moment, with the sampler's creation
    slowed down to widen the gap: counting the trials, seeding the sampler and drawing
    are one step under the lock, so the second waits and draws anew, never the same
    values (before, both seeded with the same count and drew the same learning rate)."""
    import threading
    import time

    from lenet_lab.sweep.plan import SweepPlan

    plan = search_plan(tmp_path, 'title = "s"\n[run]\nsampler = "tpe"\ntrials = 4\nseeds = 1\n'
                       'confirm = 0\n[space]\nlr = { low = 0.001, high = 1.0, log = true }\n',
                       seeds=None)
    open_study(plan)
    claim(plan, Worker(plan).study)  # the control's seed: the queue is empty now
    sampler = SweepPlan.sampler

    def slow(self, *, trials: int = 0):
        time.sleep(0.3)
        return sampler(self, trials=trials)

    monkeypatch.setattr(SweepPlan, "sampler", slow)
    asked: list = []
    workers = [Worker(plan) for _ in range(2)]
    threads = [threading.Thread(target=lambda w=w: asked.extend(w.next_trials()))
               for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    values = [trial.params["lr"] for trial in asked]
    assert len(values) == 2 and values[0] != values[1]
