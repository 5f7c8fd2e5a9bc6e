"""Studies leaving a database: copied to another storage, or exported to a file."""

from __future__ import annotations

import io
from pathlib import Path

import sqlalchemy as sa

from lenet_lab.errors import StorageError
from lenet_lab.files import atomic_write, output_folder, slug
from lenet_lab.store.connection import connect, creation_lock, optuna_storage, parse_storage
from lenet_lab.store.queries import list_studies, read_results
from lenet_lab.store.schema import ensure_schema, lab_epochs, lab_studies, lab_trials, lab_weights

__all__ = ["EXPORT_FORMATS", "copy_study", "export_study"]

EXPORT_FORMATS = ("csv", "parquet")


def _known(storage: str, study: str) -> None:
    known = [row["study"] for row in list_studies(storage)]
    if study not in known:
        raise StorageError(f"no study {study!r} in {parse_storage(storage).safe}: known studies "
                           f"are {', '.join(known) or 'none'} (`lenet-lab studies`)")


def export_study(storage: str | None, study: str, folder: str | Path, fmt: str = "csv") -> tuple[Path, int]:
    """Write a study's lab_results rows to <folder>/<study>.<fmt>; returns (path, rows)."""
    _known(storage, study)
    folder = output_folder(folder, create=False)
    results = read_results(storage, study)
    buffer = io.BytesIO()
    if fmt == "csv":
        results.to_csv(buffer, index=False)
    else:
        results.to_parquet(buffer, index=False)
    path = atomic_write(folder / f"{slug(study)}.{fmt}", buffer.getvalue())
    return path, len(results)


def copy_study(source: str | None, target: str, study: str, target_name: str | None = None) -> int:
    """Copy a study, Optuna's part and ours, between storages (SQLite <-> PostgreSQL).

    Returns the number of trials copied. Trial ids differ between databases, so our rows
    are matched to the copies by trial number, which optuna.copy_study keeps.
    """
    import optuna

    name = target_name or study
    source = parse_storage(source).url
    _known(source, study)
    destination = parse_storage(target, "--to")
    with creation_lock(destination):
        rdb = optuna_storage(destination)
        try:
            optuna.copy_study(from_study_name=study, from_storage=optuna_storage(source, read_only=True),
                              to_storage=rdb, to_study_name=name)
        except optuna.exceptions.DuplicatedStudyError:
            raise StorageError(f"{destination.safe} already has a study {name!r}: "
                               f"pass --as NEW_NAME") from None
        src, dst = connect(source, read_only=True), connect(destination)
        try:
            ensure_schema(dst)
            new_ids = {t.number: t._trial_id for t in optuna.load_study(
                study_name=name, storage=rdb).get_trials(deepcopy=False)}
            with src.connect() as read:
                if not sa.inspect(read).has_table("lab_trials"):
                    return len(new_ids)
                trials = [dict(r._mapping) for r in read.execute(
                    sa.select(lab_trials).where(lab_trials.c.study_name == study))]
                ids = {row["trial_id"]: new_ids[row["number"]] for row in trials}
                epochs = [dict(r._mapping) for r in read.execute(
                    sa.select(lab_epochs).where(lab_epochs.c.trial_id.in_(list(ids))))]
                weights = [dict(r._mapping) for r in read.execute(
                    sa.select(lab_weights).where(lab_weights.c.trial_id.in_(list(ids))))]
                meta = read.execute(sa.select(lab_studies)
                                    .where(lab_studies.c.study_name == study)).first()
            with dst.begin() as write:
                if meta is not None:
                    write.execute(lab_studies.insert().values(
                        {**dict(meta._mapping), "study_name": name}))
                for rows, table in ((trials, lab_trials), (epochs, lab_epochs),
                                    (weights, lab_weights)):
                    if rows:
                        write.execute(table.insert(), [
                            {**row, "trial_id": ids[row["trial_id"]],
                             **({"study_name": name} if table is lab_trials else {})}
                            for row in rows])
        finally:
            src.dispose()
            dst.dispose()
    return len(new_ids)
