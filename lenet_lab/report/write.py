"""`lenet-lab report`: read each study from the database, draw, write pages. Reads only.

results (the answer and its numbers) -> draw.py (plotly figures) -> pages.py (HTML);
this module reads the database (through `store` and `results`) and writes `index.html`
and one `study-<name>.html` per study.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

from lenet_lab import store
from lenet_lab.files import output_folder, slug
from lenet_lab.report.activations import section as activation_section
from lenet_lab.report.pages import index_page, study_page, write_page
from lenet_lab.results import StudyData, load_study
from lenet_lab.results.arms import summary_counts
from lenet_lab.store import Database
from lenet_lab.sweep_file import bundled_dir, load_sweep

__all__ = ["book_exercises", "build_report", "page_name"]


def page_name(study: str) -> str:
    """A file name for a study page that is safe on every file system and unique."""
    return f"study-{slug(study)}.html"


def search_figures(db: Database, data: StudyData) -> list:
    """Optuna's own views for model-based searches: the history, parallel coordinates and
    importances of the accuracy they chose on (validation's; test accuracy in studies from
    before validation splits), and with several objectives their Pareto front."""
    import optuna
    from optuna import visualization as vis

    study = optuna.load_study(study_name=data.name, storage=db.optuna())
    names = data.settings.get("objectives") or ["valid_acc"]
    accuracy = next((names.index(n) for n in ("valid_acc", "test_acc") if n in names), 0)
    target = {"target": (lambda t: t.values[accuracy]) if len(study.directions) > 1 else None,
              "target_name": names[accuracy].replace("valid_acc", "validation accuracy")
              .replace("test_acc", "test accuracy")}
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    figures = [vis.plot_optimization_history(study, **target)]
    if len(study.directions) > 1 and finished:
        figures.insert(0, vis.plot_pareto_front(study, target_names=[
            n.replace("_", " ") for n in names]))
    if finished and any(t.params for t in finished):
        figures.append(vis.plot_parallel_coordinate(study, **target))
        if len(finished) >= 2:
            try:
                # with a target, PED-ANOVA ranks what makes it low: hand it -accuracy
                ranked = {**target, "target": (lambda t: -t.values[accuracy])} \
                    if target["target"] else target
                with warnings.catch_warnings():  # that it ranks low values: we know
                    warnings.simplefilter("ignore", UserWarning)
                    figures.append(vis.plot_param_importances(
                        study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
                        **ranked))
            except (RuntimeError, ValueError):  # too few distinct values to rank
                pass
    return figures


def book_exercises() -> dict[int, tuple[str, str]]:
    """{exercise: (the book's text, the sweep that answers it)} from the shipped sweeps."""
    found = {}
    for path in sorted(bundled_dir().glob("*.toml")):
        sweep = load_sweep(str(path))
        if sweep.exercise:
            found.setdefault(sweep.exercise, (sweep.title, sweep.name))
    return found


def build_report(db: Database, studies: list[str] | None = None, *,
                 out: str | Path = "reports", activations: bool = True,
                 data_dir: str | None = None, progress: Callable[[str], None] | None = None) -> Path:
    """Write index.html and one page per study into `out`; returns the index's path.

    Reads only: trials whose worker died read as failed (results.load_study)."""
    chosen = store.known_studies(db, studies)
    folder = output_folder(out, create=True)
    entries = []
    for name in chosen:
        if progress:
            progress(name)
        data = load_study(db, name)
        file_name = page_name(name)
        shown: dict[str, Any] = {}

        def activation_figures(d: StudyData) -> Any:
            shown["figures"] = activation_section(db, d, data_dir)
            return shown["figures"]

        content, found = study_page(
            data, search=lambda d: search_figures(db, d),
            activations=activation_figures if activations else None)
        write_page(folder, file_name, content)
        counts = summary_counts(data.results)
        entries.append({
            "study": name, "page": file_name, "title": data.title, "sweep": data.meta.get("sweep"),
            "exercise": data.meta.get("exercise"), "headline": found.headline,
            "line": found.one_line(), "effect": found.leading_effect(),
            "budget": data.budget_name, "spent": found.spent.short() if found.spent else "",
            "activations": bool(shown.get("figures")),
            "status": ", ".join(f"{v} {k}" for k, v in counts.items() if k != "trials")
                      or "no trials", "arms": found.arms})
    entries.sort(key=lambda x: (x["exercise"] or 99, x["study"]))
    return write_page(folder, "index.html", index_page(
        entries, book_exercises(),
        "activations.html" if (folder / "activations.html").exists() else None))
