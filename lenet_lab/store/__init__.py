"""The study database: the only package that writes SQL or imports sqlalchemy.

- connection: storage URLs (one parser), connecting, password redaction, the creation
  lock and the one retry decorator;
- schema: our `lab_*` tables and the `lab_results` view;
- writes: a study's record and a trial's start, epochs, end and weights;
- queries: every read, as plain rows, dicts and DataFrames;
- transfer: copying a study to another storage and exporting it to a file.

Callers hold a database handle, called `db` everywhere (a SQLAlchemy Engine).
"""

from __future__ import annotations

from lenet_lab.store.connection import (DEFAULT_GRACE_S, DEFAULT_STORAGE, HEARTBEAT_S,
                                        StorageUrl, check_environment, connect, creation_lock,
                                        database_error, env_seconds, grace_seconds,
                                        optuna_storage, parse_storage, redact, retrying, safe_url,
                                        storage_url)
from lenet_lab.store.queries import (has_studies, list_studies, load_weights, progress,
                                     read_results, running_workers, study_attrs, study_frames,
                                     study_row,
                                     trial_record, trial_statuses, waiting_trial_ids)
from lenet_lab.store.schema import HYPERPARAMETERS, RESULT_COLUMNS, ensure_schema
from lenet_lab.store.transfer import EXPORT_FORMATS, copy_study, export_study, known_studies
from lenet_lab.store.writes import (add_epoch, finish_trial, forget_study, record_study, start_trial,
                                    trial_columns)

__all__ = [
    "DEFAULT_GRACE_S", "DEFAULT_STORAGE", "EXPORT_FORMATS", "HEARTBEAT_S", "env_seconds", "HYPERPARAMETERS", "RESULT_COLUMNS", "StorageUrl",
    "add_epoch", "check_environment", "connect", "copy_study", "creation_lock", "database_error", "ensure_schema", "export_study",
    "finish_trial", "forget_study", "known_studies", "grace_seconds", "has_studies", "list_studies", "load_weights", "optuna_storage",
    "parse_storage", "progress", "read_results", "record_study", "redact", "retrying",
    "running_workers", "safe_url", "start_trial", "storage_url",
    "study_attrs", "study_frames", "study_row", "trial_columns", "trial_record", "trial_statuses",
    "waiting_trial_ids",
]
