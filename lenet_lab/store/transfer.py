"""Studies leaving a database: copied to another storage, or exported to a file."""

from __future__ import annotations

import contextlib
import glob
import io
import os
from pathlib import Path

import sqlalchemy as sa

from lenet_lab.errors import StorageError
from lenet_lab.files import atomic_write, output_folder, slug
from lenet_lab.processes import pid_alive
from lenet_lab.store.database import Database
from lenet_lab.store.queries import list_studies, read_results
from lenet_lab.store.schema import ensure_schema, lab_epochs, lab_studies, lab_trials, lab_weights

__all__ = ["EXPORT_FORMATS", "copy_study", "export_study", "known_studies"]

EXPORT_FORMATS = ("csv", "parquet")


def known_studies(db: Database, chosen: list[str] | None = None) -> list[str]:
    """The chosen studies (default: every study lenet-lab ran), each checked to exist and
    to be lenet-lab's: a plain Optuna study beside them has none of our records."""
    rows = {row["study"]: row for row in list_studies(db)}
    ours = [name for name, row in rows.items() if row["sweep"] is not None]
    for name in chosen or []:
        if name not in rows:
            raise StorageError(f"no study {name!r} in {db.safe}: known studies are "
                               f"{', '.join(rows) or 'none'} (`lenet-lab studies`)")
        if name not in ours:
            raise StorageError(f"study {name!r} in {db.safe} was made by Optuna, not by "
                               f"`lenet-lab sweep`, so it has no lenet-lab results: read it with "
                               f"optuna.load_study(study_name={name!r}, storage=...)")
    if not (chosen or ours):
        raise StorageError(f"no lenet-lab studies in {db.safe}: run `lenet-lab sweep pooling` "
                           f"first, or pass --storage")
    return chosen or ours


def export_study(db: Database, study: str, folder: str | Path, fmt: str = "csv", *,
                 rows=None) -> tuple[Path, int]:
    """Write a study's lab_results rows (`rows`, else as stored) to
    <folder>/<study>.<fmt>; returns (path, rows)."""
    known_studies(db, [study])
    folder = output_folder(folder, create=False)
    stored = read_results(db, study)
    results = stored if rows is None else rows[list(stored.columns)]
    buffer = io.BytesIO()
    if fmt == "csv":
        results.to_csv(buffer, index=False)
    else:
        results.to_parquet(buffer, index=False)
    path = atomic_write(folder / f"{slug(study)}.{fmt}", buffer.getvalue())
    return path, len(results)


def copy_study(source: Database, target: Database, study: str,
               target_name: str | None = None) -> int:
    """Copy a study, Optuna's part and ours, between storages (SQLite <-> PostgreSQL).

    Returns the number of trials copied. Trial ids differ between databases, so our rows
    are matched to the copies by trial number, which optuna.copy_study keeps. Whole or
    not at all: a new SQLite target is written under a temporary name and renamed when
    complete, so a copy killed part-way leaves no target (and the next copy removes its
    temporary file); into an existing database, a copy
    that fails part-way is removed again.
    """
    name = target_name or study
    known_studies(source, [study])
    if target.sqlite_path:
        target.folder(writable=True, option="--to")
    with target.lock():
        if target.sqlite_path and not os.path.exists(target.sqlite_path):
            return _copy_to_new_file(source, target, study, name)
        return _copy_into(source, target, study, name)


def _copy_to_new_file(source: Database, target: Database, study: str, name: str) -> int:
    path = Path(target.sqlite_path)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp*"):  # from a killed copy
        pid = stale.name[len(path.name) + 2:].split(".")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            stale.unlink(missing_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with Database(f"sqlite:///{temporary}") as scratch:
            count = _copy_into(source, scratch, study, name)
        os.replace(temporary, path)
    finally:
        for leftover in (temporary, *(Path(f"{temporary}{end}") for end in ("-wal", "-shm"))):
            leftover.unlink(missing_ok=True)
    return count


def _copy_into(source: Database, target: Database, study: str, name: str) -> int:
    import optuna

    rdb = target.optuna()
    if name in optuna.get_all_study_names(storage=rdb):
        raise StorageError(f"{target.safe} already has a study {name!r}: pass --as NEW_NAME")
    try:  # whole or not at all: a copy that fails part-way is removed again
        optuna.copy_study(from_study_name=study, to_storage=rdb, to_study_name=name,
                          from_storage=source.optuna())
        new_ids = {t.number: t._trial_id for t in optuna.load_study(
            study_name=name, storage=rdb).get_trials(deepcopy=False)}
        _copy_our_rows(source, target, study, name, new_ids)
    except BaseException:
        with contextlib.suppress(Exception):
            optuna.delete_study(study_name=name, storage=rdb)
        raise
    return len(new_ids)


def _copy_our_rows(source: Database, target: Database, study: str, name: str,
                   new_ids: dict[int, int]) -> None:
    """Our rows of a study (record, trials, epochs, weights) in one transaction."""
    ensure_schema(target)
    with source.transaction() as read:
        if not sa.inspect(read).has_table("lab_trials"):
            return
        trials = [dict(r._mapping) for r in read.execute(
            sa.select(lab_trials).where(lab_trials.c.study_name == study))]
        ids = {row["trial_id"]: new_ids[row["number"]] for row in trials}
        epochs = [dict(r._mapping) for r in read.execute(
            sa.select(lab_epochs).where(lab_epochs.c.trial_id.in_(list(ids))))]
        weights = [dict(r._mapping) for r in read.execute(
            sa.select(lab_weights).where(lab_weights.c.trial_id.in_(list(ids))))]
        meta = read.execute(sa.select(lab_studies)
                            .where(lab_studies.c.study_name == study)).first()
    with target.transaction() as write:
        if meta is not None:
            write.execute(lab_studies.insert().values({**dict(meta._mapping), "study_name": name}))
        for rows, table in ((trials, lab_trials), (epochs, lab_epochs), (weights, lab_weights)):
            if rows:
                write.execute(table.insert(), [
                    {**row, "trial_id": ids[row["trial_id"]],
                     **({"study_name": name} if table is lab_trials else {})} for row in rows])
