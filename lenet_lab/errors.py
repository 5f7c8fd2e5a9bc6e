"""Typed errors. The CLI prints any LabError as one line `Error: ...` and exits non-zero."""

from __future__ import annotations

__all__ = ["DataError", "DeviceError", "EngineUnavailable", "InfeasibleSpec", "LabError", "SpecError",
           "StorageError", "SweepError", "TrialTakenOver", "quiet_library_warnings"]


class LabError(Exception):
    """A problem the user can fix; its message says what was wrong and how to fix it."""

    exit_code = 1


class SpecError(LabError, ValueError):
    """An invalid network or training setting."""

    exit_code = 2


class InfeasibleSpec(SpecError):
    """A well-typed spec whose feature maps would shrink away."""


class SweepError(LabError):
    """A sweep file or sweep option that cannot be run; the message names file and key."""

    exit_code = 2


class StorageError(LabError):
    """A study database that cannot be used as asked."""


class TrialTakenOver(StorageError):
    """A worker's trial is no longer its own (it was declared dead, and its arm x seed
    queued again): the worker writes nothing more."""


class DataError(LabError):
    """Dataset files missing, corrupt or not downloadable."""


class DeviceError(LabError):
    """A device that is not there or not usable by the engine."""


class EngineUnavailable(LabError):
    """An engine whose framework is not installed."""


def quiet_library_warnings() -> None:
    """Keep libraries' warnings (pandas' and numpy's FutureWarnings and deprecations,
    Optuna's "experimental" notes and its UserWarnings, such as importances' "Some regimes
    for parameter `pooling` have less than 2 trials") out of a command's output: they are
    for developers, whose tests fail on the ones our code triggers (pyproject.toml), not
    for users. "optuna" matches Optuna's modules and, on Python 3.12+, optuna-dashboard's."""
    import warnings

    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", message=r".*is experimental \(supported from")
    warnings.filterwarnings("ignore", category=UserWarning, module="optuna")

