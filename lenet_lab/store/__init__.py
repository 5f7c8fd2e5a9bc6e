"""The study database: the only package that writes SQL or imports sqlalchemy.

- settings: storage URLs (one parser) and timing settings from the environment;
- database: the handle (`Database`, called `db` everywhere): connecting, transactions,
  retries (`operation`), the creation lock, Optuna's storage;
- schema: our `lab_*` tables, the `lab_results` view and numbered migrations;
- writes: a study's record and a trial's start, epochs, end and weights;
- queries: every read, as plain rows, dicts and DataFrames;
- transfer: copying a study to another storage and exporting it to a file.
"""

from __future__ import annotations

from lenet_lab.store.database import Database, database_error, operation
from lenet_lab.store.queries import (FINISHED, WORKER_ATTR, finished_trials, has_results,
                                     has_studies, list_studies, load_weights, progress,
                                     read_results, running_trials, running_workers, study_attrs,
                                     study_frames, study_row, trial_epochs, trial_record,
                                     trial_statuses, trials_training_on, waiting_trial_ids)
from lenet_lab.store.schema import HYPERPARAMETERS, RESULT_COLUMNS, SCHEMA_VERSION, ensure_schema
from lenet_lab.store.settings import (DEFAULT_GRACE_S, DEFAULT_STORAGE, HEARTBEAT_S, StorageUrl,
                                      check_environment, env_seconds, grace_seconds, parse_storage)
from lenet_lab.store.transfer import EXPORT_FORMATS, copy_study, export_study, known_studies
from lenet_lab.store.writes import (add_epoch, enqueue_trials, finish_trial, forget_study,
                                    record_study, start_trial, trial_columns)

__all__ = [
    "DEFAULT_GRACE_S", "DEFAULT_STORAGE", "EXPORT_FORMATS", "HEARTBEAT_S", "HYPERPARAMETERS",
    "RESULT_COLUMNS", "SCHEMA_VERSION", "WORKER_ATTR", "Database", "FINISHED", "StorageUrl",
    "add_epoch", "enqueue_trials", "check_environment", "copy_study", "database_error",
    "ensure_schema", "env_seconds", "export_study", "finish_trial", "finished_trials",
    "forget_study", "grace_seconds",
    "has_results", "has_studies", "known_studies", "list_studies", "load_weights", "operation",
    "parse_storage", "progress", "read_results", "record_study", "running_trials",
    "running_workers", "start_trial", "study_attrs", "study_frames", "study_row",
    "trial_columns", "trial_epochs", "trial_record", "trial_statuses", "trials_training_on",
    "waiting_trial_ids",
]
