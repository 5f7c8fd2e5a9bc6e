"""Shared fixtures. Tests use the real dataset files from ../shared/data (or $LENET_LAB_DATA)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import strategies as st

from lenet_lab.data import Dataset, load_dataset
from lenet_lab.errors import SpecError
from lenet_lab.spec import CHOICES, LeNetSpec
from lenet_lab.train import EpochMetrics, TrainResult
from tests import postgres

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


BOOK_SHAPES = [("conv0", (1, 6, 28, 28)), ("pool0", (1, 6, 14, 14)), ("conv1", (1, 16, 10, 10)),
               ("pool1", (1, 16, 5, 5)), ("dense0", (1, 120)), ("dense1", (1, 84)),
               ("dense2", (1, 10))]
QUICK = ["--subset", "500", "--epochs", "1", "--seeds", "2", "--engine", "torch", "-q"]
POOLING = [("pooling=avg", 0), ("pooling=avg", 1), ("pooling=max", 0), ("pooling=max", 1)]


def lenet_lab(*args: str, cwd: Path, wait: bool = True, **env: str):
    """The real command in a fresh process, as a user's shell runs it."""
    command = [sys.executable, "-m", "lenet_lab", *args]
    environment = {**os.environ, **env}
    if not wait:
        return subprocess.Popen(command, cwd=cwd, env=environment, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=600)


def privileged(command: list[str], why: str) -> None:
    """Run a setup step that needs root (mount, chattr): skip here without it, fail in CI."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"{why} needs `{' '.join(command)}`: {done.stderr.strip()}")
        pytest.skip(f"{why}: cannot run `{' '.join(command)}` here: {done.stderr.strip()}")


def results(cwd: Path, database: str = "studies.db") -> pd.DataFrame:
    return pd.read_sql("SELECT * FROM lab_results ORDER BY trial", f"sqlite:///{cwd}/{database}")


def arm_seeds(frame: pd.DataFrame, state: str = "complete") -> list[tuple[str, int]]:
    return sorted(zip(frame[frame.state == state].arm, frame[frame.state == state].seed))


def _feasible(**fields) -> LeNetSpec | None:
    try:
        return LeNetSpec(**fields)
    except SpecError:
        return None


specs = st.builds(
    _feasible,
    conv_channels=st.lists(st.integers(1, 64), min_size=1, max_size=3).map(tuple),
    kernel_size=st.integers(1, 7),
    padding=st.sampled_from(CHOICES["padding"]),
    pooling=st.sampled_from(CHOICES["pooling"]),
    activation=st.sampled_from(CHOICES["activation"]),
    dense_units=st.lists(st.integers(1, 256), max_size=3).map(tuple),
    batch_norm=st.booleans(),
    dropout=st.sampled_from([0.0, 0.25, 0.5]),
).filter(lambda spec: spec is not None)


@pytest.fixture(scope="session")
def pg():
    """A throwaway PostgreSQL server on 127.0.0.1 for the test session (tests/postgres.py)."""
    if not postgres.available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is missing: .ci/run installs Debian's postgresql")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    server = postgres.Postgres()
    yield server
    server.close()


class StandIn:
    """Trains nothing, in place of train.train_members (the one loop a sweep's trial
    calls), so that queue and resume tests run whole sweeps in seconds against a real
    SQLite file and Optuna's real storage; tests/test_sweep.py runs the same paths with
    real training. Test accuracy 0.5 + seed/100 (+0.1 for max pooling), validation
    accuracy 0.001 below it; each group of
    members it was handed is kept in `groups`, each member in `calls`; with
    `stop_after`, the call after that many members raises KeyboardInterrupt (Ctrl-C);
    `noise(spec, config)` is added to both accuracies."""

    def __init__(self, *, stop_after: int | None = None, noise=None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.groups: list[list[tuple[str, int]]] = []
        self.stop_after = stop_after
        self.noise = noise or (lambda spec, config: 0.0)

    def __call__(self, spec, configs, *, on_epoch=None, **_) -> list[TrainResult]:
        self.groups.append([(spec.pooling, c.seed) for c in configs])
        results = []
        for member, config in enumerate(configs):
            if self.stop_after is not None and len(self.calls) == self.stop_after:
                raise KeyboardInterrupt
            self.calls.append((spec.pooling, config.seed))
            result = TrainResult(spec, config, "torch", "stand-in", "cpu", "none", 100, 100,
                                 weights={"conv0.weight": [[0.0]]})
            accuracy = 0.5 + config.seed / 100 + (0.1 if spec.pooling == "max" else 0) + \
                self.noise(spec, config)
            for epoch in range(1, config.epochs + 1):
                metrics = EpochMetrics(epoch, 1.0 / epoch, accuracy, accuracy, 1000.0, 0.1,
                                       accuracy - 0.001)
                result.epochs.append(metrics)
                if on_epoch and on_epoch(member, metrics):
                    break
            results.append(result)
        return results


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch):
    """install(**options) -> a StandIn that sweeps in this process train with."""
    def install(**options) -> StandIn:
        trainer = StandIn(**options)
        monkeypatch.setattr("lenet_lab.sweep.trial.train_members", trainer)
        return trainer

    return install


def plan_for(folder: Path, name: str = "pooling", epochs: int = 2, seeds: int | None = 2,
             fuse: int = 1):
    """A torch plan of a shipped (or given) sweep on <folder>/studies.db."""
    from lenet_lab.store import Database
    from lenet_lab.sweep import plan_sweep
    from lenet_lab.sweep_file import load_sweep

    sweep = load_sweep(name).with_run(engine="torch", epochs=epochs, seeds=seeds, subset=200)
    return plan_sweep(sweep, Database(f"sqlite:///{folder}/studies.db"), device="cpu", fuse=fuse)


def done(frame: pd.DataFrame) -> list[tuple[str, int]]:
    complete = frame[frame.state == "complete"]
    return sorted(zip(complete.arm, complete.seed))


CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright never downloads a browser here


def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    return sync_playwright()


# What the page shows: each figure's drawing area against its width, the visible text
# (HTML and SVG), the document's width and any element that user text could have made.
LOOK = """() => {
  const figures = [...document.querySelectorAll("div.plotly-graph-div")].map(
      gd => gd._fullLayout ? gd._fullLayout._size.w / gd._fullLayout.width : 0);
  const svg = [...document.querySelectorAll("svg text")].map(t => t.textContent);
  return {figures, text: [document.body.innerText, ...svg].join("\\n"),
          width: document.documentElement.scrollWidth,
          injected: [...document.querySelectorAll("a[href*='example.invalid'], img[src='x']")]
                      .map(e => e.outerHTML),
          scripts: [...document.querySelectorAll("script")].filter(
                      s => s.textContent.includes("alert(")).length};
}"""


def look_at(pages: list[Path], width: int, shots: Path) -> tuple[dict, list[str], list[str]]:
    """Open each page in Chromium at `width` px, once every plotly figure has drawn: what
    it shows (LOOK), the problems seen (console errors, page errors, failed requests,
    dialogs) and any request that tried to leave file:. Full-page screenshots go to
    `shots`, one PNG per page."""
    with browser() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = chromium.new_page(viewport={"width": width, "height": 900})
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
        seen = {}
        for path in pages:
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            divs = page.locator("div.plotly-graph-div")
            page.wait_for_function("n => document.querySelectorAll('div.plotly-graph-div .main-svg')"
                                   ".length >= n", arg=divs.count(), timeout=30000)
            seen[path.name] = page.evaluate(LOOK)
            page.screenshot(path=str(shots / f"{path.stem}.png"), full_page=True)
        chromium.close()
    return seen, problems, outside
