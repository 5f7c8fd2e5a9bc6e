"""Storage URLs, connecting, redaction, the creation lock and the one retry decorator."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import math
import os
import sqlite3
import threading
import time
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lenet_lab.errors import LabError, StorageError
from lenet_lab.urls import redact, safe_url

__all__ = ["DEFAULT_GRACE_S", "DEFAULT_STORAGE", "HEARTBEAT_S", "StorageUrl", "check_environment",
           "connect", "creation_lock", "database_error", "env_seconds", "grace_seconds",
           "optuna_storage", "parse_storage", "reader_url", "redact", "retrying", "safe_url",
           "storage_url"]

DEFAULT_STORAGE = "sqlite:///studies.db"
ADVISORY_KEY = 0x1E7E7  # lenet-lab's PostgreSQL advisory lock
SQLITE_TIMEOUT_S = 60  # writers wait this long for SQLite's lock before failing
HEARTBEAT_S = 10  # Optuna records a running trial's heartbeat this often (whole seconds)
DEFAULT_GRACE_S = 120  # a running trial silent this long is taken as dead
DB_WAIT_S = 300  # a worker waits this long for a database that went away


def env_seconds(name: str, default: float) -> float:
    """A positive number of seconds from the environment, or one clear error."""
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise LabError(f"{name}={text!r} is not a positive number of seconds: "
                       f"unset it (default {default:g}) or give e.g. {name}={default:g}")
    return value


@dataclass(frozen=True)
class StorageUrl:
    url: str
    backend: str  # sqlite, postgresql, ...
    sqlite_path: str | None  # the file behind a SQLite URL

    def __str__(self) -> str:
        return self.url

    @property
    def safe(self) -> str:
        return safe_url(self.url)


def storage_url(url: str | None = None) -> str:
    """--storage, else $LENET_LAB_STORAGE, else sqlite:///studies.db."""
    return url or os.environ.get("LENET_LAB_STORAGE") or DEFAULT_STORAGE


BACKENDS = ("sqlite", "postgresql")


def parse_storage(url: str | None = None, option: str = "--storage") -> StorageUrl:
    """The one parser of storage URLs; raises StorageError for anything unusable."""
    text = storage_url(url)
    hint = "use e.g. sqlite:///studies.db or postgresql+psycopg://user@host/db"
    try:
        parsed = sa.engine.make_url(text)
        parsed.port  # a non-numeric port fails here  # noqa: B018
    except (sa.exc.ArgumentError, ValueError):
        raise StorageError(f"{option} {safe_url(text)!r} is not a database URL: {hint}") from None
    backend = parsed.get_backend_name()
    if backend not in BACKENDS:
        raise StorageError(f"{option} {safe_url(text)!r}: lenet-lab keeps studies in SQLite or "
                           f"PostgreSQL: {hint}")
    path = None
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise StorageError(f"{option} {text}: an in-memory SQLite database vanishes when the "
                               f"command ends: give a file, e.g. sqlite:///studies.db")
        path = parsed.database
    return StorageUrl(text, backend, path)


def reader_url(where: StorageUrl) -> str:
    """The URL to read a database without ever writing it.

    SQLite opens read-only (`mode=ro`); a database in a folder that cannot take SQLite's
    shared-memory file (a read-only folder or disk) opens as immutable, which is safe
    because nobody can be writing there either.
    """
    if not where.sqlite_path:
        return where.url
    path = urllib.parse.quote(os.path.abspath(where.sqlite_path))
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as probe:
            probe.execute("SELECT count(*) FROM sqlite_master").fetchone()
        flags = "mode=ro"
    except sqlite3.OperationalError:
        flags = "mode=ro&immutable=1"
    return f"sqlite:///file:{path}?{flags}&uri=true"


def connect(url: str | StorageUrl, *, read_only: bool = False) -> Engine:
    """A database handle (`db`) for a storage URL; `read_only` never writes (see reader_url)."""
    where = url if isinstance(url, StorageUrl) else parse_storage(url)
    connect_args = {"timeout": SQLITE_TIMEOUT_S} if where.backend == "sqlite" else {}
    try:
        # pre_ping replaces connections that died with a database restart.
        db = sa.create_engine(reader_url(where) if read_only else where.url,
                              connect_args=connect_args, pool_pre_ping=True)
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        hint = ' (pip install "lenet-lab[postgres]")' if where.backend == "postgresql" else ""
        raise StorageError(f"--storage {where.safe} needs a database driver that is not "
                           f"installed{hint}: {exc}") from None
    if where.backend == "sqlite" and not read_only:
        sa.event.listen(db, "connect", _sqlite_pragmas)
    return db


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    # In WAL mode, NORMAL syncs at checkpoints instead of at every commit: the database
    # stays consistent after a crash (only the last commits can be lost on power loss),
    # and each of a trial's small writes stops costing an fsync.
    connection.execute("PRAGMA synchronous=NORMAL")


def grace_seconds() -> float:
    """$LENET_LAB_GRACE_S, checked: it must exceed the heartbeat interval."""
    grace = env_seconds("LENET_LAB_GRACE_S", DEFAULT_GRACE_S)
    if grace <= HEARTBEAT_S:
        raise LabError(f"LENET_LAB_GRACE_S={grace:g} must exceed the heartbeat interval "
                       f"({HEARTBEAT_S} s), or live trials would be declared dead")
    return grace


def check_environment() -> None:
    """Fail on a bad $LENET_LAB_GRACE_S or $LENET_LAB_DB_WAIT_S before anything is written."""
    grace_seconds()
    env_seconds("LENET_LAB_DB_WAIT_S", DB_WAIT_S)


def optuna_storage(url: str | StorageUrl, *, on_stale: Callable[..., None] | None = None,
                   read_only: bool = False):
    """Optuna's RDBStorage on the same database.

    With `on_stale`, heartbeats are on: Optuna records running trials' heartbeats with
    the database's clock, and `optuna.storages.fail_stale_trials` fails the trials
    silent for longer than $LENET_LAB_GRACE_S and calls `on_stale(study, trial)`.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    where = url if isinstance(url, StorageUrl) else parse_storage(url)
    engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} \
        if where.backend == "sqlite" else {}
    if read_only and where.backend == "postgresql":  # SQLite: reader_url; here the server
        # refuses writes (optuna-dashboard's page has delete and rename buttons)
        engine_kwargs = {"connect_args": {"options": "-c default_transaction_read_only=on"}}
    options: dict[str, Any] = {}
    if on_stale is not None:
        options = {"heartbeat_interval": HEARTBEAT_S, "grace_period": math.ceil(grace_seconds()),
                   "heartbeat_stale_trial_callback": on_stale}
    import warnings

    with warnings.catch_warnings():  # heartbeat_interval is "experimental" in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        rdb = optuna.storages.RDBStorage(reader_url(where) if read_only else where.url,
                                         engine_kwargs=engine_kwargs, **options)
    if where.backend == "sqlite" and not read_only:  # Optuna's commits get our pragmas
        sa.event.listen(rdb.engine, "connect", _sqlite_pragmas)
        rdb.engine.dispose()
    return rdb


@contextmanager
def creation_lock(url: str | StorageUrl) -> Iterator[None]:
    """One process at a time creates tables, studies and queued trials in a database.

    Optuna's schema creation races on a fresh database, and two machines enqueueing the
    same grid at once would queue each arm x seed twice. PostgreSQL: an advisory lock;
    SQLite: an exclusive flock on `<database>-lock` beside the database file. Never on
    the database file itself: closing any descriptor of it would drop the POSIX locks
    SQLite holds in this process.
    """
    where = url if isinstance(url, StorageUrl) else parse_storage(url)
    if where.backend == "postgresql":
        db = connect(where)
        try:
            with db.connect() as conn:
                conn.exec_driver_sql(f"SELECT pg_advisory_lock({ADVISORY_KEY})")
                try:
                    yield
                finally:
                    conn.exec_driver_sql(f"SELECT pg_advisory_unlock({ADVISORY_KEY})")
        finally:
            db.dispose()
    elif where.sqlite_path:
        with open(f"{where.sqlite_path}-lock", "ab") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    else:
        yield


F = TypeVar("F", bound=Callable[..., Any])
_depth = threading.local()  # nested retrying calls wait in the outermost one only


def retrying(call: F) -> F:
    """Run a database call, waiting with backoff while the database is unreachable.

    A lost connection is retried for $LENET_LAB_DB_WAIT_S (default 300 s); a full disk
    is not, since waiting does not free space. Writes are idempotent, so a retry after a
    lost acknowledgement is harmless.
    """
    @functools.wraps(call)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if getattr(_depth, "level", 0):
            return call(*args, **kwargs)
        import optuna

        transient = (sa.exc.OperationalError, sa.exc.InterfaceError,
                     optuna.exceptions.StorageInternalError)
        limit = env_seconds("LENET_LAB_DB_WAIT_S", DB_WAIT_S)
        waited, delay = 0.0, 0.5
        while True:
            _depth.level = 1
            try:
                return call(*args, **kwargs)
            except transient as exc:
                reason = " ".join(str(getattr(exc, "orig", None) or exc.__cause__ or exc).split())
                if _disk_full(reason):
                    raise StorageError(full_disk(reason)) from None
                if waited >= limit:
                    raise StorageError(
                        f"lost the database for {waited:.0f} s ({reason[:200]}); everything "
                        f"finished so far is kept: run the same command again to continue") from None
            finally:
                _depth.level = 0
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 10.0)

    return wrapper  # type: ignore[return-value]


def database_error(exc: BaseException) -> str | None:
    """One line for a database driver's error (drivers name no password), else None."""
    import sys

    if "optuna" in sys.modules and isinstance(exc, sys.modules["optuna"].exceptions.StorageInternalError):
        exc = exc.__cause__ or exc
    if not isinstance(exc, sa.exc.DBAPIError):
        return None
    reason = " ".join((str(exc.orig).strip() or type(exc.orig).__name__).split())
    if _disk_full(reason):
        return full_disk(reason)
    return (f"cannot use the database: {reason} (check --storage or LENET_LAB_STORAGE, and "
            f"that the server is up)")


def _disk_full(reason: str) -> bool:
    return "full" in reason.lower() and "disk" in reason.lower() or "No space left" in reason


def full_disk(reason: str) -> str:
    return (f"the disk holding the database is full ({reason}); free space, then run the same "
            f"command again: everything finished so far is kept")

