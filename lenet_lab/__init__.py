"""lenet-lab: the LeNet exercises of Dive into Deep Learning (6.6) as measured runs.

Importing this package loads no deep-learning framework; engines load theirs on first use.
"""

from __future__ import annotations

from lenet_lab.data import Dataset, load_dataset
from lenet_lab.errors import DataError, DeviceError, EngineUnavailable, LabError, SpecError
from lenet_lab.spec import LayerShape, LeNetSpec, TrainConfig
from lenet_lab.train import EpochMetrics, TrainResult, train

__version__ = "0.1.0"
__all__ = [
    "DataError",
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
    "train",
]
