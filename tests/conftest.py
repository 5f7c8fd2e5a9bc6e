"""Shared fixtures. Tests use the real dataset files from ../shared/data (or $LENET_LAB_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lenet_lab.data import Dataset, load_dataset

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("LENET_LAB_DATA") or ROOT.parent / "shared" / "data")
ENGINES = ("mxnet", "torch")
# For every test and every process a test starts: the shared data, and downloads sent to
# a loopback port where nothing listens, so no test ever reaches past this machine.
os.environ["LENET_LAB_DATA"] = str(DATA_DIR)
os.environ["LENET_LAB_MIRROR"] = "http://127.0.0.1:1/"
os.environ.pop("LENET_LAB_STORAGE", None)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Every test gets an empty cache of its own, never the user's.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def fashion() -> Dataset:
    if not (DATA_DIR / "fashion-mnist").is_dir():
        pytest.fail(f"real Fashion-MNIST files expected in {DATA_DIR}/fashion-mnist "
                    f"(set LENET_LAB_DATA)")
    return load_dataset("fashion-mnist", data_dir=DATA_DIR)
