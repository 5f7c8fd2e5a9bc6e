"""A user's install: the wheel, not the checkout, in a fresh venv, run from an empty folder."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from lenet_lab.sweep_file import load_sweeps
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def run(*command: str | Path, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True,
                          timeout=900, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a fresh venv with the wheel installed (dependencies from this Python's site)."""
    root = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
        root / "dist", ROOT, cwd=root)
    wheel = next((root / "dist").glob("lenet_lab-*.whl"))
    # The heavy dependencies (torch, optuna, ...) come from this interpreter's site-packages
    # to keep the test quick; lenet-lab itself comes only from the wheel (checked below).
    venv.create(root / "venv", system_site_packages=True, with_pip=True)
    run(root / "venv" / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", wheel,
        cwd=root)
    return root / "venv" / "bin"


def test_the_wheel_ships_every_sweep_and_runs_one_from_an_empty_folder(
        installed: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": ""}
    where = run(installed / "python", "-c", "import lenet_lab.sweep_file as f; print(f.__file__, "
                "f.bundled_dir())", cwd=tmp_path, env=env).stdout.split()
    assert all(str(installed.parent) in path for path in where), where  # not the checkout
    listing = run(installed / "lenet-lab", "sweeps", cwd=tmp_path, env=env).stdout
    names = [sweep.name for sweep in load_sweeps()[0]]
    assert len(names) == 9 and all(f" {name} " in f" {listing} " for name in names), listing
    done = run(installed / "lenet-lab", "sweep", "pooling", "--engine", "torch", "--subset", "300",
               "--epochs", "1", "-q", cwd=tmp_path, env=env)
    assert "\nA1    pooling=max\n" in done.stdout and "\n book " in done.stdout
    assert "studies.db" in {p.name for p in tmp_path.iterdir()}
    # the report's templates ship as package data
    report = run(installed / "lenet-lab", "report", "--no-activations", cwd=tmp_path, env=env)
    assert report.returncode == 0, report.stderr
    assert '<meta name="viewport"' in (tmp_path / "reports" / "index.html").read_text()
