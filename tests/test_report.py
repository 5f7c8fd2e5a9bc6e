"""`lenet-lab report` from real small sweeps, checked in a real browser (Debian's chromium)."""

from __future__ import annotations

import html
import re
import shutil
import socket
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from lenet_lab.engines import get_engine
from lenet_lab.report.activations import parse_classes, sample_images
from lenet_lab.spec import LeNetSpec, TrainConfig
from lenet_lab.train import train
from tests.conftest import lenet_lab, look_at

pytestmark = pytest.mark.slow

XSS = "<script>alert(1)</script>"
LINK = "<a href='https://example.invalid/'>click</a>"
QUICK = ["--subset", "500", "--epochs", "2", "--seeds", "2", "-q"]
# A grid that learns at a small budget (ReLU and Adam), with markup in its title and in
# an arm's name; a TPE search of 10 trials (and its confirmation).
GRID = f"""title = "A small grid <img src=x onerror=alert(2)>"
exercise = 3
[fixed]
activation = "relu"
optimizer = "adam"
lr = 0.01
[[arms]]
name = "{LINK}"
pooling = "max"
[[arms]]
kernel_size = 3
"""
SEARCH = """title = "A small search"
exercise = 8
[run]
sampler = "tpe"
trials = 10
[space]
lr = { low = 0.001, high = 1.0, log = true }
optimizer = ["sgd", "adam"]
activation = ["sigmoid", "relu"]
"""


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real small studies: the book's grid at chance on two engines (one study named like
    an attack), a grid that learns and a search of 10 trials."""
    folder = tmp_path_factory.mktemp("report")
    (folder / "grid.toml").write_text(GRID)
    (folder / "search.toml").write_text(SEARCH)
    for args in (["pooling", "--engine", "torch", *QUICK],
                 ["pooling", "--engine", "mxnet", "--study", XSS, *QUICK],
                 ["grid.toml", "--engine", "torch", *QUICK],
                 ["search.toml", "--engine", "torch", "--subset", "500", "--epochs", "2", "-q"]):
        done = lenet_lab("sweep", *args, cwd=folder)
        assert done.returncode == 0, done.stderr
    done = lenet_lab("report", cwd=folder)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("wrote reports/index.html")
    return folder / "reports"


@pytest.mark.parametrize("width", [1400, 390])
def test_every_page_reads_at_desktop_and_phone_width(reports: Path, width: int,
                                                     tmp_path_factory: pytest.TempPathFactory) -> None:
    copied = tmp_path_factory.mktemp(f"elsewhere-{width}")
    shutil.copytree(reports, copied, dirs_exist_ok=True)  # a copied folder renders on its own
    shots = tmp_path_factory.mktemp(f"screenshots-{width}")
    pages = sorted(copied.glob("*.html"))
    assert len(pages) == 5  # the index and four studies
    seen, problems, outside = look_at(pages, width, shots)
    print(f"screenshots at {width} px: {shots}")
    assert problems == [] and outside == []
    assert len(list(shots.glob("*.png"))) == len(pages)
    for name, look in seen.items():
        assert all(share >= 0.4 for share in look["figures"]), (name, look["figures"])
        assert not re.findall(r"\d\.\d{7,}", look["text"]), name  # no 17-digit floats
        assert look["width"] <= width, name  # wide tables and figures scroll in their box
        assert look["injected"] == [] and look["scripts"] == 0, name
    study_pages = {n: look for n, look in seen.items() if n != "index.html"}
    # bars, curves, accuracy vs speed, inputs and two activation layers on every study page;
    # the search adds its history, parallel coordinates and importances.
    assert all(len(look["figures"]) >= 6 for look in study_pages.values())
    assert max(len(look["figures"]) for look in study_pages.values()) >= 9
    for text in (LINK, "<img src=x onerror=alert(2)>", XSS):  # shown as the text it is
        assert any(text in look["text"] for look in seen.values()), text


def test_index_is_the_exercise_checklist(reports: Path) -> None:
    index = html.unescape((reports / "index.html").read_text())
    assert '<meta name="viewport"' in index
    for number, sweep in ((2, "improve"), (4, "channels"), (9, "mnist")):
        assert f"<h3>{number}. " in index and f"not run yet: <code>lenet-lab sweep {sweep}</code>" in index
    assert "Replace the average pooling with max pooling" in index
    assert index.index("<h3>1. ") < index.index("<h3>3. ") < index.index("<h3>8. ") < index.index("<h3>10. ")
    assert "the book's network did not learn: it stays at chance" in index  # the run at chance
    assert ("2 epochs of 417 examples (83 more held out for validation), 2 seeds per arm, torch "
            "on cpu") in index
    assert "#activations" in index.split("<h3>10. ")[1]  # exercise 10 links its figures
    assert "Side by side: pooling" in index and "pooling-torch-e2-n500: test acc" in index
    assert ">nan<" not in index


def test_user_strings_are_text_not_markup(reports: Path) -> None:
    index = (reports / "index.html").read_text()
    assert XSS not in index and "&lt;script&gt;alert(1)&lt;/script&gt;" in index
    xss_pages = [p for p in reports.glob("study-*.html") if "alert(1)" in p.read_text()]
    assert len(xss_pages) == 1 and XSS not in xss_pages[0].read_text()
    grid = next(p for p in reports.glob("study-grid*.html")).read_text()
    assert LINK not in grid and "&lt;a href=&#39;https://example.invalid/&#39;&gt;" in grid
    figures = re.findall(r"<script[^>]*>(.*?)</script>", grid, re.S)
    assert len(figures) >= 6 and not any("example.invalid" in f for f in figures)  # keys only


def test_a_dead_worker_is_reconciled_before_the_report_reads(reports: Path, tmp_path: Path) -> None:
    """A trial left running by a killed worker reads as failed, not running for ever."""
    shutil.copy(reports.parent / "studies.db", tmp_path / "studies.db")
    with sqlite3.connect(tmp_path / "studies.db") as conn:
        trial_id, = conn.execute(
            "SELECT t.trial_id FROM trials t JOIN studies s USING (study_id) WHERE "
            "s.study_name = 'pooling-torch-e2-n500' ORDER BY t.number DESC LIMIT 1").fetchone()
        conn.execute("UPDATE trials SET state = 'RUNNING' WHERE trial_id = ?", (trial_id,))
        conn.execute("UPDATE lab_trials SET status = 'running', pid = 2147483646, host = ? "
                     "WHERE trial_id = ?", (socket.gethostname(), trial_id))
        # and one queued trial that no worker started: its arm comes from the queue
        conn.execute("UPDATE trials SET state = 'WAITING' WHERE trial_id = ?", (trial_id - 1,))
        conn.execute("DELETE FROM lab_trials WHERE trial_id = ?", (trial_id - 1,))
    done = lenet_lab("report", "pooling-torch-e2-n500", "--no-activations", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    index = (tmp_path / "reports" / "index.html").read_text()
    assert "1 failed" in index and "1 waiting" in index and "running" not in index
    page = (tmp_path / "reports" / "study-pooling-torch-e2-n500.html").read_text()
    arms = page.split('<h2 id="arms">')[1].split("</table>")[0]
    assert "nan" not in arms and re.search(r">A1</td>.*>1 failed, 1 waiting</td>", arms)


def test_report_errors_are_one_line(tmp_path: Path) -> None:
    done = lenet_lab("report", cwd=tmp_path)
    assert done.returncode == 1 and done.stderr.startswith("Error: no lenet-lab studies in sqlite:///studies.db")
    assert done.stderr.count("\n") == 1
    listing = lenet_lab("studies", cwd=tmp_path)
    assert listing.returncode == 0 and listing.stdout.startswith("no studies in sqlite:///studies.db")
    assert not (tmp_path / "studies.db").exists()  # looking created no database


def test_activations_agree_across_engines(fashion) -> None:
    # Weights trained by one engine give the same activations in the other.
    spec = LeNetSpec(batch_norm=True)
    weights = train(spec, TrainConfig(epochs=1), engine="torch", device="cpu",
                    data=fashion.subset(300), keep_weights=True).weights
    images, labels = sample_images(fashion, parse_classes("fashion-mnist", ["sweaters", "coats"]))
    assert labels[0].startswith("pullover") and labels[-1].startswith("coat")
    maps = [get_engine(e).activations(spec, weights, images, ("conv0", "conv1"))
            for e in ("torch", "mxnet")]
    assert maps[0]["conv0"].shape == (4, 6, 28, 28) and maps[0]["conv1"].shape == (4, 16, 10, 10)
    for layer in ("conv0", "conv1"):
        np.testing.assert_allclose(maps[0][layer], maps[1][layer], atol=1e-5)


def test_activations_command_trains_when_no_weights_are_named(tmp_path: Path) -> None:
    done = lenet_lab("activations", "--engine", "torch", "--subset", "300", "--epochs", "1",
                     "--classes", "dress,bag", "--out", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("no stored weights named: training the network first")
    assert (tmp_path / "out" / "activations.html").exists()
    assert (tmp_path / "out" / "plotly.min.js").exists()
    bad = lenet_lab("activations", "--classes", "hats", cwd=tmp_path)
    assert bad.returncode != 0 and "'hats' is not a Fashion-MNIST class" in bad.stderr
    lonely = lenet_lab("activations", "--study", "x", cwd=tmp_path)
    assert lonely.returncode != 0 and "--study and --trial go together" in lonely.stderr


def test_activations_command_uses_a_stored_trial(reports: Path) -> None:
    done = lenet_lab("activations", "--study", "pooling-torch-e2-n500", "--trial", "1",
                     "--classes", "coats", "--per-class", "1", cwd=reports.parent)
    assert done.returncode == 0, done.stderr
    page = (reports / "activations.html").read_text()
    assert "Activations of pooling-torch-e2-n500 (trial 1)" in page
    missing = lenet_lab("activations", "--study", "pooling-torch-e2-n500", "--trial", "99",
                        cwd=reports.parent)
    assert missing.returncode == 1 and "has no completed trial 99" in missing.stderr
