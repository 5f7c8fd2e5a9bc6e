"""The Python API (lenet_lab.run_sweep, load_study, studies): the command's code paths,
so the same answers, rows and figures; an interrupted run resumes to every arm x seed once."""

from __future__ import annotations

import html
import re
import signal
import sqlite3
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import lenet_lab
from lenet_lab.errors import LabError, SweepError
from tests.conftest import done, lenet_lab as command

pytestmark = pytest.mark.slow

RELU = '[fixed]\nactivation = "relu"\noptimizer = "adam"\nlr = 0.002\n'  # learns in one epoch
SMALL = {"engine": "torch", "subset": 1000, "epochs": 1, "seeds": 2, "jobs": 1,
         "progress": False}


@pytest.fixture
def learning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pooling = Path(__file__).resolve().parents[1] / "sweeps" / "pooling.toml"
    (tmp_path / "learning.toml").write_text(pooling.read_text() + RELU)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "learning.toml"


def test_a_sweep_from_python_answers_as_the_command_and_the_report_do(learning: Path) -> None:
    study = lenet_lab.run_sweep(str(learning), **SMALL)
    assert study.name == "learning-torch-e1-n1000"
    answer = study.answer
    assert answer.headline.startswith(("A1 (pooling=max)", "No arm", "A1"))
    # the command, run again, trains nothing more and ends with the same answer
    again = command("sweep", str(learning), "--engine", "torch", "--subset", "1000",
                    "--epochs", "1", "--seeds", "2", "-q", cwd=learning.parent)
    assert again.returncode == 0, again.stderr
    assert str(answer) in again.stdout
    report = command("report", "--no-activations", cwd=learning.parent)
    assert report.returncode == 0, report.stderr
    page = html.unescape((learning.parent / "reports" / f"study-{study.name}.html").read_text())
    assert answer.headline in page
    rows = pd.read_sql(f"SELECT * FROM lab_results WHERE study = '{study.name}' "
                       f"ORDER BY study, trial", "sqlite:///studies.db")
    pd.testing.assert_frame_equal(study.results, rows)
    assert done(study.results) == [("pooling=avg", 0), ("pooling=avg", 1),
                                   ("pooling=max", 0), ("pooling=max", 1)]
    figures = study.figures()
    assert list(figures) == ["accuracy", "speed"]  # one epoch each: no curve to draw
    assert all(type(f).__name__ == "Figure" for f in figures.values())
    maps = study.activations(classes=["coat"], per_class=1)
    assert len(maps) == 3 and "Input images" in maps[0].layout.title.text
    # rich display: escaped HTML in a notebook, the paragraph in a terminal
    assert answer._repr_html_().startswith('<div class="lenet-lab-answer">')
    assert study._repr_html_().count("<tr>") == 3 and repr(study).endswith(str(answer))
    listing = lenet_lab.studies()
    assert listing.study.tolist() == [study.name] and listing.complete.tolist() == [4]
    assert lenet_lab.load_study(study.name).answer.headline == answer.headline


def test_names_and_options_are_checked_as_the_command_checks_them(learning: Path) -> None:
    with pytest.raises(LabError, match=re.escape("no study 'nope' in sqlite:///studies.db")):
        lenet_lab.load_study("nope")
    with pytest.raises(SweepError, match="no sweep named 'poolin': did you mean pooling?"):
        lenet_lab.run_sweep("poolin", **SMALL)
    with pytest.raises(SweepError, match="--epochs 1 conflicts with"):
        lenet_lab.run_sweep("training", **SMALL)
    assert not (learning.parent / "studies.db").exists()


INTERRUPTED = """
import sys
import lenet_lab
lenet_lab.run_sweep(sys.argv[1], engine="torch", subset=3000, epochs=8, seeds=3, jobs=2,
                    progress=False)
"""


def test_an_interrupted_run_resumes_to_every_arm_seed_once(learning: Path) -> None:
    """Interrupting the kernel is a SIGINT to it: the run stops every worker and keeps
    what finished; the same call again finishes the study."""
    import subprocess

    process = subprocess.Popen([sys.executable, "-c", INTERRUPTED, str(learning)],
                               cwd=learning.parent, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with sqlite3.connect(learning.parent / "studies.db", timeout=10) as conn:
                finished = conn.execute("SELECT count(*) FROM lab_trials WHERE status = "
                                        "'complete'").fetchone()[0]
        except sqlite3.Error:
            finished = 0
        if finished >= 1:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0 and "Interrupted: finished trials are kept" in stderr
    interrupted = pd.read_sql("SELECT * FROM lab_results", "sqlite:///studies.db")
    assert 1 <= (interrupted.state == "complete").sum() < 6
    study = lenet_lab.run_sweep(str(learning), engine="torch", subset=3000, epochs=8, seeds=3,
                                jobs=2, progress=False)
    after = study.results
    assert done(after) == sorted((f"pooling={p}", s) for p in ("avg", "max") for s in range(3))
    assert set(after.state) <= {"complete", "failed"}
    # interrupted, or (a worker stopped before it recorded its trial) worker stopped
    assert after[after.state == "failed"].reason.str.match("interrupted|worker stopped").all()
