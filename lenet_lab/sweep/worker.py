"""A worker: the loop that claims and runs trials, and the pool of worker processes."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue as queue_module
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import optuna

from lenet_lab import store
from lenet_lab.data import Dataset
from lenet_lab.engines import Device, use_threads
from lenet_lab.errors import LabError, SweepError, quiet_library_warnings
from lenet_lab.results import arm_keys, load_study, study_answer
from lenet_lab.results.arms import SUMMARY_HEADER, arm_legend, summary_rows
from lenet_lab.spec import Status
from lenet_lab.store import Database
from lenet_lab.sweep import queue
from lenet_lab.sweep.estimate import rough_seconds
from lenet_lab.sweep.plan import SweepPlan, load_cached
from lenet_lab.sweep.trial import fuse_key_of, run_group
from lenet_lab.urls import redact

__all__ = ["Worker", "WorkerPool", "check_jobs", "run_sweep", "run_workers", "stop_on_signals",
           "summary", "undecided_arms", "watch", "workers_for"]

JOBS_PER_CPU = 4
AUTO_JOBS_MAX = 8  # --jobs auto on a CPU: a worker per core, up to this many
STOP_S = 8.0  # how long stopped workers get to record their trials before they are killed
# A worker with nothing queued checks whether others finished or died: soon at first (the
# last trials often end together), then less and less often, up to every 2 s.
IDLE_POLL_S = (0.2, 2.0)


class Worker:
    """Holds the plan (and through it the database), the study, the device and the data."""

    def __init__(self, plan: SweepPlan, *, index: int = 0, data_dir: str | None = None) -> None:
        self.plan, self.data_dir = plan, data_dir
        self.study = optuna.load_study(
            study_name=plan.study_name, storage=plan.db.optuna(on_stale=queue.on_stale(plan.db)),
            sampler=plan.sampler(), pruner=plan.pruner())
        self.device = plan.device
        if plan.device.kind == "gpu" and plan.gpu_count > 1:
            self.device = Device("gpu", index % plan.gpu_count)  # spread workers over GPUs
        self.datasets: dict[str, Dataset] = {}

    def dataset(self, name: str) -> Dataset:
        """The study's data: its subset, with its validation split held out."""
        if name not in self.datasets:
            data = load_cached(name, self.data_dir)
            run = self.plan.sweep.run
            data = data.subset(run.subset) if run.subset else data
            self.datasets[name] = data.hold_out(run.held_out(len(load_cached(
                name, self.data_dir).train_labels)))
        return self.datasets[name]

    def tell(self, trial, status: Status, values: list[float] | None = None) -> None:
        # skip_if_finished: a tell retried after a lost acknowledgement is not an error.
        self.study.tell(trial, values, skip_if_finished=True,
                        state=None if values else queue.OPTUNA_STATE[status])

    def next_trials(self) -> list:
        """Queued trials (a fused group, or one), else a new one from a search's sampler,
        else [] when all is done.

        With nothing queued, another worker may have died mid-trial: take its arm x seed
        over, or wait while others are still running, or stop when all is done.
        """
        plan, study = self.plan, self.study
        pause = IDLE_POLL_S[0]
        while True:
            trials = self._claim() or queue.ask(plan, study)
            if trials:
                return trials
            queue.reconcile(plan, study)
            if trials := self._claim():
                return trials
            if not store.running_workers(plan.db, plan.study_name):
                return []
            time.sleep(pause)
            pause = min(2 * pause, IDLE_POLL_S[1])

    def _claim(self) -> list:
        plan = self.plan
        key = (lambda t: fuse_key_of(plan, t)) if plan.fuse > 1 else None
        return queue.claim(plan, self.study, key)

    def run(self) -> int:
        """Run trials until the queue (and a search's budget) is exhausted; returns how many."""
        count = 0
        while trials := self.next_trials():
            run_group(self, trials)
            count += len(trials)
        return count


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP (its terminal closed) stop this process as Ctrl-C does,
    once: the KeyboardInterrupt records the running trial as interrupted and stops every
    helper (WorkerPool), and a second signal cannot cut that short. The previous handlers
    come back afterwards."""
    kinds = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    before = {kind: signal.getsignal(kind) for kind in kinds}

    def stop(*_: object) -> None:
        for kind in kinds:
            signal.signal(kind, signal.SIG_IGN)
        raise KeyboardInterrupt

    for kind in kinds:
        signal.signal(kind, stop)
    try:
        yield
    finally:
        for kind, handler in before.items():
            signal.signal(kind, handler)


def _stop_with_parent() -> None:
    """Linux: the kernel sends this process SIGTERM when its parent dies, so a helper whose
    sweep was killed without a terminal stops (recording its trial as interrupted) instead
    of claiming and training trials for ever. Elsewhere the helper checks before each
    sweep (_helper_loop)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _helper_loop(index: int, threads: int, data_dir: str | None, parent: int, inbox,
                 outbox) -> None:
    """A helper process of a WorkerPool: runs a worker for each plan it is sent, until it
    is sent None. Its errors go to the parent (`outbox`), which says them in one line.
    It starts with SIGINT ignored (inherited) and SIGTERM at its default (the parent stops
    it with SIGTERM: a helper still starting just ends, having taken no trial); from then
    on SIGINT and SIGTERM stop it as Ctrl-C does."""
    # Each worker gets its share of the cores; set before any framework is imported.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    quiet_library_warnings()  # as the command that started it
    _stop_with_parent()
    plan = None
    try:
        with stop_on_signals():
            while os.getppid() == parent and (plan := inbox.get()) is not None:
                Worker(plan, index=index, data_dir=data_dir).run()
                outbox.put((index, None, 0))
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        message = str(exc) if isinstance(exc, LabError) else store.database_error(exc)
        if message is None:
            raise  # a bug: keep its traceback
        outbox.put((index, redact(message, plan.db.url), getattr(exc, "exit_code", 1)))
        sys.exit(1)
    finally:
        if plan is not None:
            plan.db.close()


WORKER_START_S = 3.0  # a helper's start: a fresh interpreter importing a framework


class WorkerPool:
    """`jobs` workers, each with its share of the cores: this process is the first, the
    others are helper processes, started when a sweep's work is worth their start-up and
    kept for the sweeps after it (`sweep all` imports each framework once per helper).

    Use as a context manager; on leaving it by an exception (Ctrl-C, SIGTERM, an error)
    every helper is stopped and gets STOP_S to record its trial as interrupted."""

    def __init__(self, jobs: int, *, data_dir: str | None = None) -> None:
        check_jobs(jobs)
        self.jobs, self.data_dir = jobs, data_dir
        self.threads = max(1, len(os.sched_getaffinity(0)) // jobs)
        self.context = multiprocessing.get_context("spawn")  # frameworks do not survive fork
        self.outbox = self.context.Queue()
        self.helpers: list[tuple[Any, Any]] = []  # (process, its inbox)

    def __enter__(self) -> WorkerPool:
        return self

    def _grow(self, helpers: int) -> None:
        with _sigint_ignored():  # inherited by the helpers until they set their own handlers
            while len(self.helpers) < helpers:
                inbox = self.context.Queue()
                process = self.context.Process(
                    target=_helper_loop, name=f"lenet-lab-worker-{len(self.helpers) + 1}",
                    args=(len(self.helpers) + 1, self.threads, self.data_dir, os.getpid(),
                          inbox, self.outbox))
                process.start()
                self.helpers.append((process, inbox))

    def run(self, plan: SweepPlan, *, work_s: float | None = None) -> None:
        """Run the plan's workers until its queue (and a search's budget) is done. With
        `work_s`, the estimated seconds of what is left, no helper is started for less
        work than its start-up is worth (the helpers already running join in)."""
        wanted = self.jobs - 1
        if work_s is not None and work_s / self.jobs < WORKER_START_S:
            wanted = min(wanted, len(self.helpers))
        self._grow(wanted)
        running = self.helpers[:wanted]
        for _, inbox in running:
            inbox.put(plan)
        with use_threads(self.threads if self.jobs > 1 else len(os.sched_getaffinity(0))):
            Worker(plan, data_dir=self.data_dir).run()
        self._wait([process for process, _ in running])

    def _wait(self, processes: list) -> None:
        """Until each helper reports its worker done; one that failed says why."""
        waiting = set(range(1, len(processes) + 1))
        while waiting:
            try:
                index, message, code = self.outbox.get(timeout=0.5)
            except queue_module.Empty:
                dead = [p for p in processes if not p.is_alive()]
                if dead:
                    raise LabError(f"{len(dead)} of {self.jobs} workers stopped with an error "
                                   f"(exit codes {', '.join(str(p.exitcode) for p in dead)}); "
                                   f"run the same command again to continue the study")
                continue
            if message is not None:  # what the first worker to fail said, as its own line
                error = LabError(message)
                error.exit_code = code
                raise error
            waiting.discard(index)

    def __exit__(self, kind, *_: Any) -> None:
        processes = [process for process, _ in self.helpers]
        if kind is None:
            for _, inbox in self.helpers:
                inbox.put(None)
        else:  # Ctrl-C or an error: stop every helper, none is left alone
            for process in processes:
                if process.is_alive():
                    os.kill(process.pid, signal.SIGTERM)  # each records its trial as interrupted
        deadline = time.monotonic() + (STOP_S if kind else 30.0)
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():  # its trial is found dead by its pid on the next run
                process.kill()
                process.join()


def run_workers(plan: SweepPlan, *, jobs: int, data_dir: str | None = None,
                work_s: float | None = None) -> None:
    """Run `jobs` workers on one plan (a WorkerPool of its own)."""
    with WorkerPool(jobs, data_dir=data_dir) as pool:
        pool.run(plan, work_s=work_s)


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # (signal handlers belong to the main thread)
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def workers_for(jobs: str | int, plan: SweepPlan) -> int:
    """`--jobs auto|N` -> how many workers: auto is one per core on a CPU (at most
    AUTO_JOBS_MAX, each with one thread: on two cores two one-thread workers train more
    trials per hour than one with two threads, docs/performance.md), and one per GPU."""
    text = str(jobs).strip().lower()
    if text == "auto":
        cores = len(os.sched_getaffinity(0))
        return max(1, plan.gpu_count if plan.device.kind == "gpu" else min(cores, AUTO_JOBS_MAX))
    if not text.isdigit():
        raise SweepError(f"--jobs takes auto or a number of workers, not {jobs!r}")
    check_jobs(int(text))
    return int(text)


def check_jobs(jobs: int) -> None:
    """A sane number of worker processes: each trains a network of its own."""
    limit = JOBS_PER_CPU * len(os.sched_getaffinity(0))
    if not 1 <= jobs <= limit:
        raise SweepError(f"--jobs {jobs} is more workers than this machine can run (1 to "
                         f"{limit}: {JOBS_PER_CPU} per CPU core)" if jobs > 1 else
                         f"--jobs {jobs}: give at least 1 worker")


def run_sweep(plan: SweepPlan, *, jobs: int = 1, data_dir: str | None = None,
              on_queue: Callable[[int, int], None] | None = None,
              pool: WorkerPool | None = None, work_s: float | None = None) -> None:
    """Open the study (`on_queue(queued, of)` while its queue is filled), then run its
    workers until every trial is done (and, with until_decided, until the answer is
    decided): those of `pool`, else `jobs` of its own. `work_s`: see WorkerPool.run."""
    check_jobs(jobs)  # before the study is opened: a refused start leaves nothing behind
    with contextlib.ExitStack() as stack:
        if pool is None:
            pool = stack.enter_context(WorkerPool(jobs, data_dir=data_dir))
        queue.open_study(plan, on_queue)
        if work_s is None:
            work_s = rough_seconds(plan.sweep, plan.db, device_name=plan.device_name,
                                   done=store.finished_trials(plan.db, plan.study_name))
        pool.run(plan, work_s=work_s)
        while plan.sweep.run.until_decided and (arms := undecided_arms(plan)):
            study = optuna.load_study(study_name=plan.study_name, storage=plan.db.optuna())
            for arm in arms:
                queue.add_seed(plan, study, arm)
            pool.run(plan, work_s=work_s)


def undecided_arms(plan: SweepPlan) -> list[str]:
    """`--until-decided`: the arms that get one more seed, or none when the answer is
    decided (see results/answer.py) or the control and the leading arm have MAX seeds.

    The two are the book's network and the arm that leads it; they are brought to the
    same number of seeds, then grow together.
    """
    found = study_answer(load_study(plan.db, plan.study_name))
    lead, most = found.leader, plan.sweep.run.until_decided
    if lead is None or lead.decision.decided:
        return []
    control = next(a for a in found.arms if a.is_control)
    counts = {control.arm: control.test_acc.n, lead.arm.arm: lead.arm.test_acc.n}
    target = max(counts.values()) if len(set(counts.values())) > 1 else min(counts.values()) + 1
    return [arm for arm, n in counts.items() if n < min(target, most)]


@contextmanager
def watch(plan: SweepPlan, on_update: Callable[[int, str], None], *,
          enabled: bool = True) -> Iterator[None]:
    """Poll the study once a second from a thread: `on_update(finished trials, detail)`.

    Works for any number of workers and machines, since it reads the database.
    """
    stop = threading.Event()
    epochs = "" if "epochs" in plan.sweep.space else f"/{plan.sweep.control()['epochs']}"

    def poll() -> None:
        db = None
        while not stop.wait(1.0):
            try:  # connect anew until the database has its tables: a reader opened
                # before the file existed would read an empty one for ever
                db = db or Database(plan.db.where, read_only=True)
                now = store.progress(db, plan.study_name)
            except Exception:  # tables not created yet, or a busy database: try again
                if db is not None:
                    db.close()
                db = None
                continue
            done = sum(n for state, n in now["states"].items()
                       if state not in (Status.RUNNING, Status.WAITING))
            keys = arm_keys(now["arms"])  # the report's keys: book, A1, ...
            running = ", ".join(f"{keys.get(arm, '#' + str(n))} epoch {e + 1}{epochs}"
                                for n, arm, e in now["running"])
            best = f"best trial {now['best']:.3f}" if now["best"] is not None else ""
            on_update(done, f"{running}  {best}".strip())
        if db is not None:
            db.close()

    thread = threading.Thread(target=poll, daemon=True)
    if enabled:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if enabled:
            thread.join()


def summary(plan: SweepPlan) -> tuple[list[str], list[list[str]], str, list[str], list[str],
                                      str]:
    """The end-of-sweep table (header, rows, title), what each arm's key stands for, the
    answer's lines (the report's headline and each arm's verdict, from the same code) and
    how to query the results: a line of Python to paste, whatever the study's name."""
    found = study_answer(load_study(plan.db, plan.study_name))
    literal = "'" + plan.study_name.replace("'", "''") + "'"  # SQL's own quoting
    query = (f"query: pandas.read_sql({'SELECT * FROM lab_results WHERE study = ' + literal!r}, "
             f"{plan.db.safe!r})")
    return (SUMMARY_HEADER, summary_rows(found.arms),
            f"{plan.study_name}: test accuracy after the last epoch", arm_legend(found.arms),
            [found.headline, *(f"- {line}" for line in found.verdicts)], query)
