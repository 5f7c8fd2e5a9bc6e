"""`lenet-lab report`: read each study from the database, compute, draw, write pages.

compute.py turns lab_results rows into numbers (pure, tested without plotly), draw.py
turns numbers into plotly figures, pages.py turns both into HTML; this module reads the
database (through `store`) and writes `index.html` and one `study-<name>.html` per study.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from lenet_lab import store
from lenet_lab.files import output_folder, slug
from lenet_lab.report import compute
from lenet_lab.report.activations import section as activation_section
from lenet_lab.report.pages import StudyData, index_page, study_page, write_page

__all__ = ["StudyData", "build_report", "load_study", "page_name"]


def page_name(study: str) -> str:
    """A file name for a study page that is safe on every file system and unique."""
    return f"study-{slug(study)}.html"


def load_study(db, name: str) -> StudyData:
    results, epochs = store.study_frames(db, name)
    return StudyData(name, store.study_row(db, name) or {}, results, epochs)


def search_figures(storage: str, data: StudyData) -> list:
    """Optuna's own views for model-based searches (history, coordinates, importance)."""
    import optuna
    from optuna import visualization as vis

    study = optuna.load_study(study_name=data.name, storage=store.optuna_storage(storage, read_only=True))
    if len(study.directions) > 1:
        return []
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    figures = [vis.plot_optimization_history(study, target_name="test accuracy")]
    if finished and any(t.params for t in finished):
        figures.append(vis.plot_parallel_coordinate(study, target_name="test accuracy"))
        if len(finished) >= 2:
            try:
                figures.append(vis.plot_param_importances(
                    study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
                    target_name="test accuracy"))
            except (RuntimeError, ValueError):  # too few distinct values to rank
                pass
    return figures


def build_report(storage: str | None = None, studies: list[str] | None = None, *,
                 out: str | Path = "reports", activations: bool = True,
                 data_dir: str | None = None, progress: Callable[[str], None] | None = None) -> Path:
    """Write index.html and one page per study into `out`; returns the index's path."""
    url = store.storage_url(storage)
    chosen = store.known_studies(url, studies)
    folder = output_folder(out, create=True)
    db = store.connect(url, read_only=True)
    entries = []
    try:
        for name in chosen:
            if progress:
                progress(name)
            data = load_study(db, name)
            file_name = page_name(name)
            content, headline, arms = study_page(
                data, search=lambda d: search_figures(url, d),
                activations=(lambda d: activation_section(db, d, data_dir)) if activations else None)
            write_page(folder, file_name, content)
            counts = compute.summary_counts(data.results)
            entries.append({
                "study": name, "page": file_name, "title": data.title, "sweep": data.meta.get("sweep"),
                "exercise": data.meta.get("exercise"), "headline": headline,
                "status": ", ".join(f"{v} {k}" for k, v in counts.items() if k != "trials")
                          or "no trials", "arms": arms})
    finally:
        db.dispose()
    entries.sort(key=lambda x: (x["exercise"] or 99, x["study"]))
    return write_page(folder, "index.html", index_page(entries))
