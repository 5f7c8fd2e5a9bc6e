"""A throwaway PostgreSQL cluster on 127.0.0.1 for tests (Debian's postgresql package).

Started once per test session on a free port, with password (SCRAM) authentication over
TCP so that tests can check that passwords never leak; stopped and deleted at the end.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

PASSWORD = "pw-Sup3r-s3cret-4u"  # tests grep every output for this string
USER = "lab"


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise FileNotFoundError(f"{name} not found: apt-get install postgresql")
    return found[-1]


def available() -> bool:
    try:
        _bin("initdb")
        return True
    except FileNotFoundError:
        return False


class Postgres:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="lenet-lab-pg-"))
        self.data, self.sockets = self.root / "data", self.root / "run"
        self.sockets.mkdir()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.as_root = os.geteuid() == 0
        if self.as_root:  # the server refuses to run as root: run it as postgres
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sockets, "postgres")
        password_file = self.root / "pw"
        password_file.write_text(PASSWORD)
        if self.as_root:
            shutil.chown(password_file, "postgres")
        self._run(_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
                  "--auth-host=scram-sha-256", "--pwfile", str(password_file))
        self.start()
        self.sql(f"CREATE ROLE {USER} LOGIN CREATEDB PASSWORD '{PASSWORD}'")

    def _run(self, *command: str) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_root else []
        return subprocess.run([*prefix, *command], check=True, capture_output=True, text=True,
                              timeout=120)

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
                   f"-c fsync=off -c max_connections=200")
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                  str(self.root / "server.log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def sql(self, statement: str, database: str = "postgres") -> str:
        return self._run(_bin("psql"), "-h", str(self.sockets), "-p", str(self.port), "-U",
                         "postgres", "-d", database, "-tAc", statement).stdout

    def new_database(self, name: str) -> str:
        """A fresh empty database owned by the test user; returns its URL (with password)."""
        self.sql(f'CREATE DATABASE "{name}" OWNER {USER}')
        return f"postgresql+psycopg://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.root, ignore_errors=True)
