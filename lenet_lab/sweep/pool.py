"""Worker processes: a pool of them sharing the cores (this process the first), how
many to start, and the signals that stop them, so that no trial is left running.

A helper is started only when a sweep's work is worth its start-up and kept for the
sweeps after it; it stops with a signal from its parent (SIGTERM, even while it starts)
or, on Linux, when its parent dies; SIGINT, SIGTERM and SIGHUP stop this process as
Ctrl-C does, and every helper with it.
"""

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
from lenet_lab.engines import use_threads
from lenet_lab.errors import LabError, SweepError, quiet_library_warnings
from lenet_lab.results import load_study, seeds_to_add, study_answer
from lenet_lab.sweep import queue
from lenet_lab.sweep.estimate import rough_seconds
from lenet_lab.sweep.plan import SweepPlan
from lenet_lab.sweep.worker import Worker, work
from lenet_lab.urls import redact

__all__ = ["WorkerPool", "check_jobs", "parse_jobs", "run_sweep", "run_sweeps", "run_workers",
           "stop_on_signals", "workers_for"]

JOBS_PER_CPU = 4
AUTO_JOBS_MAX = 8  # --jobs auto on a CPU: a worker per core, up to this many
STOP_S = 8.0  # how long stopped workers get to record their trials before they are killed


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
    plan = plans = None
    try:
        with stop_on_signals():
            while os.getppid() == parent and (plans := inbox.get()) is not None:
                plan = plans[0]
                work([Worker(each, index=index, data_dir=data_dir) for each in plans])
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
        # inherited by the helpers until they set their own handlers; and a helper needs
        # lenet_lab only, never the user's script, which would run again in it
        with _sigint_ignored(), _main_not_imported():
            while len(self.helpers) < helpers:
                inbox = self.context.Queue()
                process = self.context.Process(
                    target=_helper_loop, name=f"lenet-lab-worker-{len(self.helpers) + 1}",
                    args=(len(self.helpers) + 1, self.threads, self.data_dir, os.getpid(),
                          inbox, self.outbox))
                process.start()
                self.helpers.append((process, inbox))

    def run(self, plans: SweepPlan | list[SweepPlan], *, work_s: float | None = None) -> None:
        """Run the plans' trials (see `work`: earlier plans first, no worker idle while
        any has work) until every queue (and a search's budget) is done. With `work_s`,
        the estimated seconds of what is left, no helper is started for less work than its
        start-up is worth (the helpers already running join in)."""
        plans = plans if isinstance(plans, list) else [plans]
        wanted = self.jobs - 1
        if work_s is not None and work_s / self.jobs < WORKER_START_S:
            wanted = min(wanted, len(self.helpers))
        self._grow(wanted)
        running = self.helpers[:wanted]
        for _, inbox in running:
            inbox.put(plans)
        with use_threads(self.threads if self.jobs > 1 else len(os.sched_getaffinity(0))):
            work([Worker(plan, data_dir=self.data_dir) for plan in plans])
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
def _main_not_imported() -> Iterator[None]:
    """Start processes without importing the parent's `__main__` in them: a helper runs
    lenet_lab's code on lenet_lab's objects, and a script that calls lenet_lab.run_sweep
    at its top level (no `if __name__ == "__main__":`) would otherwise call it again in
    every helper, which then fails to start processes of its own. (multiprocessing's spawn
    re-imports `__main__` from its __spec__ or __file__; hidden while helpers start.)"""
    main = sys.modules.get("__main__")
    saved = {name: getattr(main, name) for name in ("__spec__", "__file__")
             if main is not None and hasattr(main, name)}
    for name in saved:
        setattr(main, name, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(main, name, value)


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


def parse_jobs(jobs: str | int) -> int | None:
    """`--jobs auto|N` checked before anything is loaded: N, or None for auto."""
    text = str(jobs).strip().lower()
    if text == "auto":
        return None
    if not (text.isascii() and text.isdigit()):  # not ² or a digit of another script
        raise SweepError(f"--jobs takes auto or a number of workers, not {jobs!r}")
    check_jobs(int(text))
    return int(text)


def workers_for(jobs: str | int, plan: SweepPlan) -> int:
    """`--jobs auto|N` -> how many workers: auto is one per core on a CPU (at most
    AUTO_JOBS_MAX, each with one thread: on two cores two one-thread workers train more
    trials per hour than one with two threads, docs/performance.md), and one per GPU."""
    count = parse_jobs(jobs)
    if count is None:
        cores = len(os.sched_getaffinity(0))
        return max(1, plan.gpu_count if plan.device.kind == "gpu" else min(cores, AUTO_JOBS_MAX))
    return count


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
    """run_sweeps for one plan; `on_queue(queued, of)` while its queue is filled."""
    run_sweeps([plan], jobs=jobs, data_dir=data_dir, on_queue=on_queue, pool=pool,
               work_s=work_s)


def run_sweeps(plans: list[SweepPlan], *, jobs: int = 1, data_dir: str | None = None,
               on_queue: Callable[[int, int], None] | None = None,
               pool: WorkerPool | None = None, work_s: float | None = None) -> None:
    """Open each study (`on_queue(queued, of)` while a queue is filled), then run the
    trials of all of them (WorkerPool.run: earlier plans first, no worker idle while any
    has work) until every one is done (and, with until_decided, until its answer is
    decided): with the workers of `pool`, else `jobs` of their own. `work_s`: the
    estimated seconds of what is left (see WorkerPool.run)."""
    check_jobs(jobs)  # before the study is opened: a refused start leaves nothing behind
    with contextlib.ExitStack() as stack:
        if pool is None:
            pool = stack.enter_context(WorkerPool(jobs, data_dir=data_dir))
        for plan in plans:
            queue.open_study(plan, on_queue)
        if work_s is None:
            work_s = sum(rough_seconds(plan.sweep, plan.db, device_name=plan.device_name,
                                       done=store.finished_trials(plan.db, plan.study_name))
                         for plan in plans)
        pool.run(plans, work_s=work_s)
        for plan in plans:
            while plan.sweep.run.until_decided and (arms := seeds_to_add(
                    study_answer(load_study(plan.db, plan.study_name)),
                    plan.sweep.run.until_decided)):
                study = optuna.load_study(study_name=plan.study_name, storage=plan.db.optuna())
                for arm in arms:
                    queue.add_seed(plan, study, arm)
                pool.run(plan, work_s=work_s)
