"""lenet-lab from Python and Jupyter: run a sweep, open a study, list the studies.

    import lenet_lab

    study = lenet_lab.run_sweep("pooling", budget="quick", engine="torch")
    study.answer              # the paragraph `lenet-lab sweep` ends with (HTML in Jupyter)
    study.results             # lab_results rows, a DataFrame
    study.figures()           # {"accuracy": Figure, "curves": ..., "speed": ...} (plotly)
    study.activations()       # exercise 10: the first two layers' maps, plotly figures
    study.confusion()         # exercise 10 measured: pullover/coat/shirt confusion counts
    lenet_lab.studies()       # every study in the database, a DataFrame

These call the code the `lenet-lab` command calls, so an answer here is the report's,
word for word. `run_sweep` continues a study that exists (a second run of the same cell
trains only what is missing); interrupting the kernel stops every worker, keeps what
finished and raises KeyboardInterrupt, as Ctrl-C does in a terminal.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from typing import Any

import pandas as pd

with warnings.catch_warnings():  # Optuna imports tqdm.auto, which warns in Jupyter
    warnings.filterwarnings("ignore", message="IProgress not found")  # without ipywidgets
    import optuna  # noqa: F401

from lenet_lab.report.activations import study_confusions, study_maps
from lenet_lab.report.pages import study_figures
from lenet_lab.report.write import search_figures
from lenet_lab.results import Answer, StudyData, load_study as _load, study_answer, study_list
from lenet_lab.results.arms import arm_legend, summary_rows, SUMMARY_HEADER
from lenet_lab.store import Database, known_studies, read_results
from lenet_lab.errors import LabError
from lenet_lab.report.pages import render
from lenet_lab.runner import Request, plan, run

__all__ = ["Study", "load_study", "run_sweep", "studies"]


@dataclass
class Study:
    """One study in a database: its answer, rows, figures and activation maps, read anew
    at each call (a sweep that is still running shows what has finished so far)."""

    name: str
    storage: str | None = None  # the database URL; None: $LENET_LAB_STORAGE or studies.db
    data_dir: str | None = None  # where the test images for activations are

    def _read(self) -> tuple[Database, StudyData]:
        db = Database(self.storage, read_only=True)
        try:
            known_studies(db, [self.name])
            return db, _load(db, self.name)
        except BaseException:
            db.close()
            raise

    def data(self) -> StudyData:
        db, data = self._read()
        db.close()
        return data

    @property
    def answer(self) -> Answer:
        """The answer, as `lenet-lab sweep` prints it and the report shows it."""
        return study_answer(self.data())

    @property
    def results(self) -> pd.DataFrame:
        """The study's `lab_results` rows (what pandas.read_sql of the view gives)."""
        with Database(self.storage, read_only=True) as db:
            return read_results(db, self.name)

    @property
    def epochs(self) -> pd.DataFrame:
        """Per-epoch metrics of every trial: trial, epoch, train_loss, train_acc, ..."""
        return self.data().epochs

    def figures(self) -> dict[str, Any]:
        """The report's figures of this study as plotly figures, by name: accuracy,
        curves, speed, and a search's own (search 1, ...)."""
        db, data = self._read()
        try:
            return study_figures(data, search=lambda d: search_figures(db, d))
        finally:
            db.close()

    def activations(self, classes: list[str] | None = None, per_class: int = 2) -> list:
        """Exercise 10: the first and second conv layers' outputs of the book's network and
        of the study's best arm, for test images of `classes` (default: sweaters and
        coats), as plotly figures (the input images first)."""
        db, data = self._read()
        try:
            return study_maps(db, data, classes=classes, per_class=per_class,
                              data_dir=self.data_dir)
        finally:
            db.close()

    def confusion(self) -> pd.DataFrame:
        """Exercise 10 measured: for the networks `activations` draws, how many test images
        of each of pullover (the book's sweater), coat and shirt (on MNIST: 3, 5, 8) each
        takes for each class: one row per network and true class, one column per class
        given, and `other` for any other."""
        db, data = self._read()
        try:
            found = study_confusions(db, data, data_dir=self.data_dir)
        finally:
            db.close()
        return pd.DataFrame([{"network": c.key, "true class": name,
                              **dict(zip((*c.classes, "other"), c.counts[i])),
                              "test images": c.totals[i]}
                             for c in found for i, name in enumerate(c.classes)])

    def rerun(self, trial: int | None = None, *, arm: str | None = None,
              seed: int | None = None):
        """Retrain a recorded trial (by number, or arm and seed) from its record and compare
        every number with the record (lenet_lab.rerun.Rerun: .matches, .verdict(), .rows)."""
        from lenet_lab.rerun import find_trial, rerun_trial

        with Database(self.storage, read_only=True) as db:
            number = find_trial(db, self.name, trial=trial, arm=arm, seed=seed)
            return rerun_trial(db, self.name, number, data_dir=self.data_dir)

    def __repr__(self) -> str:
        return f"Study({self.name!r})\n{self.answer}"

    def _repr_html_(self) -> str:
        """The study in a notebook: its title, answer, table of arms and their keys, from
        the report's template (every name escaped)."""
        data = self.data()
        found = study_answer(data)
        return render("notebook_study.html", title=data.title, name=self.name,
                      headline=found.headline, verdicts=found.verdicts, header=SUMMARY_HEADER,
                      rows=summary_rows(found.arms), legend=arm_legend(found.arms))


def load_study(name: str, *, storage: str | None = None, data_dir: str | None = None) -> Study:
    """An existing study (see `studies()`); raises LabError if the database has none so
    named."""
    study = Study(name, storage, data_dir)
    with Database(storage, read_only=True) as db:
        known_studies(db, [name])
    return study


def studies(storage: str | None = None) -> pd.DataFrame:
    """Every study in the database: study, sweep, engine, title, trials by state (a dead
    worker's trial as failed) and the best one trial's validation accuracy (what
    `lenet-lab studies` lists; the answer's best arm is Study.answer's)."""
    with Database(storage, read_only=True) as db:
        rows = study_list(db)
    return pd.DataFrame([{"study": r["study"], "sweep": r["sweep"], "engine": r["engine"],
                          "title": r["title"], **{s: n for s, n in sorted(r["states"].items())},
                          "best_trial_acc": r["best_trial_acc"]} for r in rows],
                        columns=None if rows else ["study", "sweep", "engine", "title",
                                                   "best_trial_acc"])


def run_sweep(name: str, *, budget: str = "full", engine: str | None = None,
              epochs: int | None = None, seeds: int | None = None, trials: int | None = None,
              confirm: int | None = None, until_decided: int | None = None,
              margin: float | None = None, subset: int | None = None,
              storage: str | None = None, study: str | None = None, jobs: str | int = "auto",
              fuse: str | int = "auto", device: str = "auto", data_dir: str | None = None,
              progress: bool = True) -> Study:
    """Run a sweep (a name from `lenet-lab sweeps` or a .toml path) as `lenet-lab sweep`
    does, with its options as keywords, and return its Study. Running it again continues
    the study. `progress` shows trials done of all, the time left and each running trial's
    arm and epoch: updated in place in a notebook cell, as a bar (tqdm) elsewhere."""
    request = Request(sweep=name, budget=budget, study=study, jobs=jobs, fuse=fuse,
                      device=device, data_dir=data_dir, command=f"lenet_lab.run_sweep({name!r})",
                      overrides={"engine": engine, "epochs": epochs, "seeds": seeds,
                                 "trials": trials, "subset": subset, "confirm": confirm,
                                 "until_decided": until_decided, "margin": margin})
    if request.every_exercise:
        raise LabError("run_sweep runs one sweep: name one (lenet_lab.studies() lists what ran; "
                       "`lenet-lab sweep all` runs every exercise)")
    with Database(storage) as db:
        planned = plan(db, request)
        name = planned.steps[0].plan.study_name
        display = _display(name) if progress else _Quiet()
        try:
            with display:
                run(db, request, display, planned=planned)
        except KeyboardInterrupt:
            print(f"Interrupted: finished trials are kept in {db.safe}; run the same call "
                  f"again to continue study {name!r}", file=sys.stderr)
            raise
    return Study(name, storage, data_dir)


class _Quiet:
    """A display that shows nothing (runner.Display)."""

    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def progress(self, done: int, total: int, eta_s: float | None, detail: str) -> None:
        pass

    def answered(self, step: Any, line: str) -> None:
        pass


def _display(name: str) -> _Quiet:
    """In Jupyter, one line updated in place; elsewhere tqdm's bar."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    if shell is not None and type(shell).__name__ == "ZMQInteractiveShell":
        return _CellProgress(name)
    return _TqdmProgress(name)


class _CellProgress(_Quiet):
    """A notebook cell's progress line (the report's template, every name escaped)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> _CellProgress:
        from IPython.display import HTML, display

        self.html = HTML
        self.handle = display(self._line(0, 0, None, ""), display_id=True)
        return self

    def _line(self, done: int, total: int, eta_s: float | None, detail: str):
        return self.html(render("progress.html", name=self.name, done=done, total=total,
                                minutes=None if eta_s is None else round(eta_s / 60),
                                detail=detail))

    def progress(self, done: int, total: int, eta_s: float | None, detail: str) -> None:
        self.handle.update(self._line(done, total, eta_s, detail))


class _TqdmProgress(_Quiet):
    """A terminal's bar, from tqdm (which Optuna already brings)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> _TqdmProgress:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=0, desc=self.name, unit="trial", leave=False,
                        bar_format="{desc}: {n}/{total} trials {postfix}")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.close()

    def progress(self, done: int, total: int, eta_s: float | None, detail: str) -> None:
        self.bar.total, self.bar.n = total, done
        eta = "" if eta_s is None else f"about {eta_s / 60:.0f} min to go "
        self.bar.set_postfix_str(f"{eta}{detail}", refresh=True)
