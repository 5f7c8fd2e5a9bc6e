"""Where the study database is and how long to wait for it: storage URLs (one parser)
and the timing settings from the environment, each checked before anything is written."""

from __future__ import annotations

import os
from dataclasses import dataclass

import sqlalchemy as sa

from lenet_lab.errors import LabError, StorageError
from lenet_lab.urls import safe_url

__all__ = ["DB_WAIT_S", "DEFAULT_GRACE_S", "DEFAULT_STORAGE", "HEARTBEAT_S", "StorageUrl",
           "check_environment", "env_seconds", "grace_seconds", "parse_storage"]

DEFAULT_STORAGE = "sqlite:///studies.db"
HEARTBEAT_S = 10  # Optuna records a running trial's heartbeat this often (whole seconds)
DEFAULT_GRACE_S = 120  # a running trial silent this long is taken as dead
DB_WAIT_S = 300  # a worker waits this long for a database that went away
BACKENDS = ("sqlite", "postgresql")


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


@dataclass(frozen=True)
class StorageUrl:
    url: str
    backend: str  # sqlite or postgresql
    sqlite_path: str | None  # the file behind a SQLite URL

    def __str__(self) -> str:
        return self.url

    @property
    def safe(self) -> str:
        return safe_url(self.url)


def parse_storage(url: str | None = None, option: str = "--storage") -> StorageUrl:
    """The one parser of storage URLs; raises StorageError for anything unusable."""
    text = url or os.environ.get("LENET_LAB_STORAGE") or DEFAULT_STORAGE
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
        # One file for every reader and writer: what SQLAlchemy, SQLite's URIs and the
        # file system would each read differently is refused, not guessed.
        problem = ("names a folder (it ends in /): give the database file, e.g. "
                   "sqlite:///studies.db" if path.endswith(("/", os.sep)) else
                   "has a '#' in its file name, which URLs read as a fragment: name the file "
                   "without it" if "#" in path else
                   f"has query arguments ({'&'.join(parsed.query)}): lenet-lab sets SQLite's "
                   f"options itself; drop the '?...'" if parsed.query else "")
        if problem:
            raise StorageError(f"{option} {safe_url(text)!r} {problem}")
    return StorageUrl(text, backend, path)
