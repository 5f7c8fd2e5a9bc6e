"""A user's install: the wheel, not the checkout, in a fresh venv, run from an empty folder."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from lenet_lab.sweep_file import load_sweeps
from tests.conftest import ROOT, look_at

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


EXECUTE = """
import json, sys
import nbformat
from nbclient import NotebookClient

path, out, parameters = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
notebook = nbformat.read(path, as_version=4)
at = next(i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", []))
injected = nbformat.v4.new_code_cell("\\n".join(f"{k} = {v!r}" for k, v in parameters.items()),
                                     metadata={"tags": ["injected-parameters"]})
notebook.cells.insert(at + 1, injected)  # as papermill injects them
NotebookClient(notebook, timeout=900, kernel_name="python3",
               resources={"metadata": {"path": str(__import__("pathlib").Path(out).parent)}}
               ).execute()
nbformat.write(notebook, out)
"""
TINY = {"ENGINE": "torch", "EPOCHS": 1, "SEEDS": 2, "SUBSET": 300, "TRIALS": 3}


def test_the_exercise_notebook_runs_with_a_tiny_budget_from_the_wheel(
        installed: Path, tmp_path: Path) -> None:
    """nbclient on a real kernel of the fresh venv (lenet-lab from the wheel), the budget
    injected after the `parameters` cell; then the executed notebook as HTML, screenshots
    at 1400 and 390 px (printed: look at them with pytest -s)."""
    import json

    import nbformat

    env = {**os.environ, "PYTHONPATH": ""}
    executed = tmp_path / "executed.ipynb"
    run(installed / "python", "-c", EXECUTE, ROOT / "notebooks" / "lenet-exercises.ipynb",
        executed, json.dumps(TINY), cwd=tmp_path, env=env)
    notebook = nbformat.read(executed, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)  # every cell ran
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o.text for o in outputs if o.get("name") == "stderr"]  # no library warnings
    answers = [o for o in outputs if 'class="lenet-lab-answer"' in o.get("data", {}).get(
        "text/html", "")]
    sweeps = [s for s in load_sweeps()[0] if s.exercise]
    assert len(answers) == len(sweeps)  # every exercise's answer, as HTML
    for sweep in sweeps:  # at least one plotly figure per sweep, in the cell after its run
        at = next(i for i, c in enumerate(code) if f'run("{sweep.name}"' in c.source)
        assert any("application/vnd.plotly.v1+json" in o.get("data", {})
                   for o in code[at + 1].outputs), sweep.name
    maps = next(c for c in code if ".activations(" in c.source)
    assert sum("application/vnd.plotly.v1+json" in o.get("data", {}) for o in maps.outputs) == 3
    run(sys.executable, "-m", "nbconvert", "--to", "html", executed, cwd=tmp_path)
    page = tmp_path / "executed.html"
    for width in (1400, 390):
        shots = tmp_path / f"screenshots-{width}"
        shots.mkdir()
        seen, problems, _ = look_at([page], width, shots)
        print(f"\nscreenshot of the executed notebook at {width} px: {shots}")
        assert len(seen["executed.html"]["figures"]) >= len(sweeps) + 3
        assert "Traceback" not in seen["executed.html"]["text"]
