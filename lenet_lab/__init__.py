"""lenet-lab: the LeNet exercises of Dive into Deep Learning (6.6) as measured runs.

`train` trains one network; `run_sweep`, `load_study` and `studies` (lenet_lab.api) run
and read the exercises' sweeps, in a notebook as in a script. Importing this package
loads no deep-learning framework; engines load theirs on first use.
"""

from __future__ import annotations

from lenet_lab.data import Dataset, load_dataset
from lenet_lab.errors import DataError, DeviceError, EngineUnavailable, LabError, SpecError
from lenet_lab.spec import LayerShape, LeNetSpec, TrainConfig
from lenet_lab.train import EpochMetrics, TrainResult, train

__version__ = "0.1.0"
__all__ = [
    "DataError",
    "Study",
    "Dataset",
    "DeviceError",
    "EngineUnavailable",
    "EpochMetrics",
    "LabError",
    "LayerShape",
    "LeNetSpec",
    "SpecError",
    "TrainConfig",
    "TrainResult",
    "__version__",
    "load_dataset",
    "load_study",
    "run_sweep",
    "studies",
    "train",
]

_API = ("Study", "load_study", "run_sweep", "studies")  # lenet_lab.api, loaded when first used


def __getattr__(name: str):
    """The study API (lenet_lab.api) is imported on first use: `import lenet_lab` stays
    light (the command line's start-up), and pulls in no database or plotting library."""
    if name in _API:
        from lenet_lab import api

        return getattr(api, name)
    raise AttributeError(f"module 'lenet_lab' has no attribute {name!r}")
