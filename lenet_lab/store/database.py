"""The database handle (`Database`, called `db` everywhere).

One place opens connections, runs transactions (commit, or roll back on an error),
retries, locks and disposes, as Optuna's `_create_scoped_session` does for its storage:

- `Database(url, read_only=...)`: a storage URL parsed once (settings.parse_storage:
  `--storage`, else `$LENET_LAB_STORAGE`, else `sqlite:///studies.db`), its engine and its
  Optuna storage, both made on first use and disposed by `close()`;
- `db.transaction()`: one transaction, committed at the end or rolled back;
- `@operation`: a store function that retries as a whole while the database is
  unreachable (a lost connection waits up to $LENET_LAB_DB_WAIT_S; a full disk does
  not). Store functions carry it; callers never wrap calls in retries. Optuna's
  storage retries the same way (`RetryingRDBStorage`);
- `db.lock()`: one process at a time creates schemas, studies and queued trials.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import math
import os
import re
import sqlite3
import threading
import time
import urllib.parse
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

import sqlalchemy as sa

from lenet_lab.errors import StorageError
from lenet_lab.store.settings import (DB_WAIT_S, HEARTBEAT_S, StorageUrl, env_seconds,
                                      grace_seconds, parse_storage)

__all__ = ["Database", "database_error", "operation"]

ADVISORY_KEY = 0x1E7E7  # lenet-lab's PostgreSQL advisory lock
SQLITE_TIMEOUT_S = 60  # writers wait this long for SQLite's lock before failing


def _reader_url(where: StorageUrl) -> str:
    """The URL to read a database without ever writing it. SQLite opens read-only
    (`mode=ro`); a database in a folder that cannot take SQLite's shared-memory file (a
    read-only folder or disk) opens as immutable: nobody can be writing there either."""
    if not where.sqlite_path:
        return where.url
    path = urllib.parse.quote(os.path.abspath(where.sqlite_path))
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as probe:
            probe.execute("SELECT count(*) FROM sqlite_master").fetchone()
        flags = "mode=ro"
    except sqlite3.OperationalError:
        flags = "mode=ro&immutable=1"
    except sqlite3.DatabaseError as exc:  # not a database, or a damaged one
        raise StorageError(_file_problem(str(exc)) or f"cannot read {where.safe}: {exc}") from None
    return f"sqlite:///file:{path}?{flags}&uri=true"


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    # In WAL mode, NORMAL syncs at checkpoints instead of at every commit: the database
    # stays consistent after a crash (only the last commits can be lost on power loss),
    # and each of a trial's small writes stops costing an fsync.
    connection.execute("PRAGMA synchronous=NORMAL")


class Database:
    """A study database: its URL, its SQLAlchemy engine and its Optuna storage.

    `read_only` never writes: SQLite opens read-only (see `_reader_url`), PostgreSQL
    sessions are read-only (optuna-dashboard's page has delete and rename buttons).
    Picklable by URL, so a plan that names it can go to worker processes.
    """

    def __init__(self, url: str | StorageUrl | None = None, *, read_only: bool = False,
                 option: str = "--storage") -> None:
        self.where = url if isinstance(url, StorageUrl) else parse_storage(url, option)
        self.read_only = read_only
        self._engine: sa.Engine | None = None
        self._optuna: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"where": self.where, "read_only": self.read_only,
                "reached": self.url in _reached}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A handle sent to a worker process: a database its sender reached can be lost
        (and waited for) there too, even before the worker first connects."""
        self.__init__(state["where"], read_only=state["read_only"])
        if state.get("reached"):
            _reached.add(self.url)

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({self.safe!r}{', read_only=True' if self.read_only else ''})"

    @property
    def url(self) -> str:
        return self.where.url

    @property
    def safe(self) -> str:
        """The URL with its password masked, for everything printed or stored."""
        return self.where.safe

    @property
    def sqlite_path(self) -> str | None:
        return self.where.sqlite_path

    def exists(self, option: str = "--storage") -> bool:
        """Whether there is a file to read (a server database always is); a path naming a
        folder or a device (/dev/null) is refused."""
        path = self.sqlite_path
        if path and os.path.exists(path) and not os.path.isfile(path):
            kind = "a folder" if os.path.isdir(path) else "a device or special file"
            raise StorageError(f"{option} {self.safe}: {path} is {kind}, not a database "
                               f"file: give the path of a file, such as studies.db")
        return not path or os.path.exists(path)

    def _connect_args(self) -> dict[str, Any]:
        if self.where.backend == "sqlite":
            return {"timeout": SQLITE_TIMEOUT_S}
        if self.read_only:
            return {"options": "-c default_transaction_read_only=on"}
        return {}

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            url = _reader_url(self.where) if self.read_only else self.url
            try:  # pre_ping replaces connections that died with a database restart
                self._engine = sa.create_engine(url, connect_args=self._connect_args(),
                                                pool_pre_ping=True)
            except (ImportError, sa.exc.NoSuchModuleError) as exc:
                hint = ' (pip install "lenet-lab[postgres]")' \
                    if self.where.backend == "postgresql" else ""
                raise StorageError(f"--storage {self.safe} needs a database driver that is "
                                   f"not installed{hint}: {exc}") from None
            if self.where.backend == "sqlite" and not self.read_only:
                sa.event.listen(self._engine, "connect", _sqlite_pragmas)
            _note_reached(self._engine, self.url)
        return self._engine

    def optuna(self, *, on_stale: Callable[..., None] | None = None) -> Any:
        """Optuna's storage on this database (one per handle), retrying as `operation` does.

        With `on_stale`, heartbeats are on: Optuna records running trials' heartbeats with
        the database's clock, and `optuna.storages.fail_stale_trials` fails the trials
        silent for longer than $LENET_LAB_GRACE_S and calls `on_stale(study, trial)`.
        """
        if self._optuna is None:
            self._optuna = _optuna_storage(self, on_stale)
        return self._optuna

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One process at a time creates schemas, studies and queued trials, and claims.

        Optuna's schema creation races on a fresh database, and two machines enqueueing
        the same grid at once would queue each arm x seed twice. PostgreSQL: an advisory
        lock. SQLite: an exclusive flock on the folder that holds the database's real path,
        so a symlink and the file it names share one lock and no lock file is left behind
        (databases in one folder take turns; these locks are held for moments). Never on
        the database file itself: closing any descriptor of it would drop SQLite's own
        POSIX locks.
        """
        if self.where.backend == "postgresql":
            with self.engine.connect() as conn:
                conn.exec_driver_sql(f"SELECT pg_advisory_lock({ADVISORY_KEY})")
                try:
                    yield
                finally:
                    conn.exec_driver_sql(f"SELECT pg_advisory_unlock({ADVISORY_KEY})")
            return
        folder = self.folder()
        handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            os.close(handle)

    def folder(self, *, writable: bool = False, option: str = "--storage") -> str:
        """The folder of a SQLite database's real path, checked to exist (and with
        `writable`, that a database can be created and written there)."""
        self.exists(option)
        folder = os.path.dirname(os.path.realpath(self.sqlite_path))
        if not os.path.isdir(folder):
            given = os.path.dirname(self.sqlite_path) or "."
            raise StorageError(f"{option} {self.safe}: folder {given} does not exist: create "
                               f"it first, or give another path")
        if writable and not os.access(folder, os.W_OK | os.X_OK):
            raise StorageError(f"{option} {self.safe}: folder {folder} is not writable: give "
                               f"a database in a folder you can write")
        return folder

    def now(self) -> Any:
        """The database clock's current time as naive UTC, as a SQL expression."""
        if self.where.backend == "postgresql":
            return sa.func.timezone("UTC", sa.func.now())
        return sa.func.datetime("now")

    def close(self) -> None:
        """Dispose of the connections. A SQLite database this handle wrote goes back to
        SQLite's default journal when nobody else has it open, so that readers (which open
        it read-only) leave no `-wal` and `-shm` files behind; the next writer turns WAL
        on again (schema.ensure_schema)."""
        used = self._engine is not None or self._optuna is not None
        if self._optuna is not None:
            self._optuna.engine.dispose()
            self._optuna = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if used and self.sqlite_path and not self.read_only and os.path.exists(self.sqlite_path):
            with contextlib.suppress(sqlite3.Error):  # busy: another process has it open
                with contextlib.closing(sqlite3.connect(self.sqlite_path, timeout=0.1)) as conn:
                    conn.execute("PRAGMA journal_mode=DELETE")


F = TypeVar("F", bound=Callable[..., Any])
_depth = threading.local()  # nested operations wait in the outermost one only
_reached: set[str] = set()  # URLs this process has connected to: only those can be lost


def _note_reached(engine: sa.Engine, url: str) -> None:
    sa.event.listen(engine, "connect", lambda *_: _reached.add(url))


def _url_of(args: tuple[Any, ...]) -> str | None:
    """The database an operation works on: its Database, or Optuna's storage (self)."""
    first = args[0] if args else None
    return first.url if isinstance(first, Database) else getattr(first, "url", None)


def _transient() -> tuple[type[BaseException], ...]:
    import optuna

    return (sa.exc.OperationalError, sa.exc.InterfaceError,
            optuna.exceptions.StorageInternalError)


def operation(call: F) -> F:
    """A database operation that waits, with backoff, while the database is unreachable.

    A lost connection (to a database this process reached before) is retried for
    $LENET_LAB_DB_WAIT_S (default 300 s); a database never reached, or a full disk, is
    not: waiting does not mend a wrong URL or free space. Our writes are idempotent
    (delete, then insert), so a retry after a lost acknowledgement is harmless.
    """
    @functools.wraps(call)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if getattr(_depth, "level", 0):
            return call(*args, **kwargs)
        limit = env_seconds("LENET_LAB_DB_WAIT_S", DB_WAIT_S)
        waited, delay = 0.0, 0.5
        while True:
            _depth.level = 1
            try:
                return call(*args, **kwargs)
            except _transient() as exc:
                reason = " ".join(str(getattr(exc, "orig", None) or exc.__cause__ or exc).split())
                if _disk_full(reason):
                    raise StorageError(full_disk(reason)) from None
                if not _lost(exc, reason) or _url_of(args) not in _reached:
                    raise  # waiting does not mend a damaged file, a wrong URL or a bug
                if waited >= limit:
                    raise StorageError(
                        f"lost the database for {waited:.0f} s ({reason[:200]}); everything "
                        f"finished so far is kept: run the same command again to continue"
                    ) from None
            finally:
                _depth.level = 0
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 10.0)

    return wrapper  # type: ignore[return-value]


_RETRIED = ("create_new_study", "get_study_id_from_name", "get_all_studies",
            "create_new_trial", "set_trial_param", "set_trial_state_values",
            "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
            "set_study_user_attr", "set_study_system_attr", "get_trial", "get_all_trials",
            "get_study_directions", "get_study_user_attrs", "record_heartbeat",
            "_get_stale_trial_ids", "get_n_trials", "get_best_trial")


@operation  # a worker process connects here first: a restart then is waited out too
def _optuna_storage(db: Database, on_stale: Callable[..., None] | None) -> Any:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    cls = _retrying_rdb_class()
    options: dict[str, Any] = {}
    if on_stale is not None:
        options = {"heartbeat_interval": HEARTBEAT_S, "grace_period": math.ceil(grace_seconds()),
                   "heartbeat_stale_trial_callback": on_stale}
    with warnings.catch_warnings():  # heartbeat_interval is "experimental" in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        rdb = cls(_reader_url(db.where) if db.read_only else db.url,
                  engine_kwargs={"connect_args": db._connect_args()}, **options)
    if db.where.backend == "sqlite" and not db.read_only:  # Optuna's commits get our pragmas
        sa.event.listen(rdb.engine, "connect", _sqlite_pragmas)
        rdb.engine.dispose()
    _reached.add(rdb.url)  # its constructor connected (and made or checked the schema)
    return rdb


@functools.cache
def _retrying_rdb_class() -> type:
    import optuna

    class RetryingRDBStorage(optuna.storages.RDBStorage):
        """Optuna's RDB storage whose calls wait for a lost database as `operation` does."""

    for name in _RETRIED:
        setattr(RetryingRDBStorage, name, operation(getattr(optuna.storages.RDBStorage, name)))
    return RetryingRDBStorage


def database_error(exc: BaseException) -> str | None:
    """One line for a database driver's error (drivers name no password), else None:
    what is wrong with a local file says so (not a database, damaged, a table missing),
    and only a server's trouble gets the server hint."""
    import sys

    optuna = sys.modules.get("optuna")
    if optuna is not None and isinstance(exc, optuna.exceptions.StorageInternalError):
        exc = exc.__cause__ or exc
    if not isinstance(exc, sa.exc.DBAPIError):
        return None
    reason = " ".join((str(exc.orig).strip() or type(exc.orig).__name__).split())
    local = type(exc.orig).__module__.startswith("sqlite3")
    missing = re.search(r'no such (?:table|column): (\S+)|relation "([^"]+)" does not exist',
                        reason)
    if _disk_full(reason):
        return full_disk(reason)
    if _file_problem(reason):
        return _file_problem(reason)
    if missing:
        return (f"the database lacks {missing[1] or missing[2]}: it was made by an older "
                f"lenet-lab or by another program ({reason}); run `lenet-lab sweep` on it to "
                f"upgrade an older one, or give lenet-lab a database of its own")
    if local:
        return f"cannot use the database file: {reason} (check --storage or LENET_LAB_STORAGE)"
    return (f"cannot use the database: {reason} (check --storage or LENET_LAB_STORAGE, and "
            f"that the server is up)")


def _file_problem(reason: str) -> str | None:
    """What SQLite's complaint about a file means, or None."""
    if "file is not a database" in reason:
        return (f"the file named by --storage is not an SQLite database ({reason}): give "
                f"lenet-lab's studies.db, or a new file name to start one")
    if "malformed" in reason or "disk image" in reason:
        return (f"the database file is damaged ({reason}): restore it from a copy, or start "
                f"a new one with another --storage")
    return None


def _disk_full(reason: str) -> bool:
    return "full" in reason.lower() and "disk" in reason.lower() or "No space left" in reason


# What a database that went away (or is busy) says; other errors are no reason to wait.
_LOST = ("database is locked", "connection", "server closed", "could not connect", "timeout",
         "timed out", "terminating", "shutting down", "unable to open database file",
         "disk i/o error", "starting up", "recovery mode")


def _lost(exc: BaseException, reason: str) -> bool:
    if getattr(exc, "connection_invalidated", False) or isinstance(exc, sa.exc.InterfaceError):
        return True
    return any(words in reason.lower() for words in _LOST)


def full_disk(reason: str) -> str:
    return (f"the disk holding the database is full ({reason}); free space, then run the same "
            f"command again: everything finished so far is kept")
