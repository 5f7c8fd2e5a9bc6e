"""`lenet-lab report` from real small sweeps, checked in a real browser (Debian's chromium)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from lenet_lab.engines import get_engine
from lenet_lab.report.activations import parse_classes, sample_images
from lenet_lab.spec import LeNetSpec, TrainConfig
from lenet_lab.train import train
from tests.conftest import lenet_lab

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
XSS = "<script>alert(1)</script>"
QUICK = ["--subset", "500", "--epochs", "2", "--seeds", "2", "-q"]


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three real studies (a grid on two engines, one named like an attack, and a search)."""
    folder = tmp_path_factory.mktemp("report")
    (folder / "search.toml").write_text(
        'title = "A small lr search"\nexercise = 8\n[run]\nsampler = "tpe"\ntrials = 3\n'
        'prune = true\n[space]\nlr = { low = 0.05, high = 1.0, log = true }\n'
        'pooling = ["avg", "max"]\n')
    for args in (["pooling", "--engine", "torch"], ["pooling", "--engine", "mxnet", "--study", XSS],
                 ["search.toml", "--engine", "torch", "--seeds", "1"]):
        done = lenet_lab("sweep", *args, *QUICK, cwd=folder)
        assert done.returncode == 0, done.stderr
    done = lenet_lab("report", cwd=folder)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("wrote reports/index.html")
    return folder / "reports"


def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    return sync_playwright()


def test_every_page_renders_without_errors_offline(reports: Path, tmp_path: Path) -> None:
    copied = tmp_path / "elsewhere"
    shutil.copytree(reports, copied)  # a copied folder must render on its own
    pages = sorted(copied.glob("*.html"))
    assert len(pages) == 4  # the index and three studies
    with browser() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = chromium.new_page(viewport={"width": 1300, "height": 900})
        problems: list[str] = []
        outside: list[str] = []
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url}"))
        page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))

        def only_files(route) -> None:
            if route.request.url.startswith("file:"):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        page.route("**/*", only_files)
        figures = {}
        for path in pages:
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            divs = page.locator("div.plotly-graph-div")
            page.wait_for_function("n => document.querySelectorAll('div.plotly-graph-div .main-svg')"
                                   ".length >= n", arg=divs.count(), timeout=30000)
            figures[path.name] = (divs.count(),
                                  page.locator("div.plotly-graph-div:has(.main-svg)").count())
        chromium.close()
    assert problems == [] and outside == []
    for name, (drawn, rendered) in figures.items():
        assert drawn == rendered, name  # every figure has its SVG
    study_pages = {n: f for n, f in figures.items() if n != "index.html"}
    # bars, curves, accuracy vs speed, inputs and two activation layers on every study page;
    # the search adds its history, parallel coordinates and importances.
    assert all(drawn >= 6 for drawn, _ in study_pages.values())
    assert max(drawn for drawn, _ in study_pages.values()) >= 8


def test_user_strings_are_text_not_markup(reports: Path) -> None:
    index = (reports / "index.html").read_text()
    assert XSS not in index and "&lt;script&gt;alert(1)&lt;/script&gt;" in index
    xss_pages = [p for p in reports.glob("study-*.html") if "alert" in p.read_text()]
    assert len(xss_pages) == 1 and XSS not in xss_pages[0].read_text()
    with browser() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM,
                                              args=["--no-sandbox", "--disable-gpu"])
        page = chromium.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        for path in (reports / "index.html", xss_pages[0]):
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            assert page.get_by_text(XSS, exact=True).count() >= 1
        chromium.close()
    assert dialogs == []


def test_index_answers_and_compares_the_engines(reports: Path) -> None:
    index = (reports / "index.html").read_text()
    assert "Replace the average pooling with max pooling" in index
    assert "Budget: 2 epochs of 500 examples, 2 seeds per arm, torch on cpu." in index
    assert "Compare: pooling" in index and "pooling-torch-e2-n500: test acc" in index


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
