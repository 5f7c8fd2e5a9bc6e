"""`lenet-lab report`: read each study from the database, compute, draw, write pages.

compute.py turns lab_results rows into numbers (pure, tested without plotly), draw.py
turns numbers into plotly figures, pages.py turns both into HTML; this module reads the
database (through `store`) and writes `index.html` and one `study-<name>.html` per study.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

from lenet_lab import store
from lenet_lab.files import output_folder, slug
from lenet_lab.report import answer, compute
from lenet_lab.report.activations import section as activation_section
from lenet_lab.report.pages import StudyData, index_page, study_page, write_page

__all__ = ["StudyData", "best_confirmed", "build_report", "load_study", "page_name",
           "study_answer"]


def page_name(study: str) -> str:
    """A file name for a study page that is safe on every file system and unique."""
    return f"study-{slug(study)}.html"


def load_study(db, name: str) -> StudyData:
    results, epochs = store.study_frames(db, name)
    return StudyData(name, store.study_row(db, name) or {}, results, epochs,
                     store.study_attrs(db, name))


def study_answer(storage: str, name: str) -> answer.Answer:
    """One study's answer, read from the database (what `lenet-lab sweep` ends with)."""
    db = store.connect(store.storage_url(storage), read_only=True)
    try:
        data = load_study(db, name)
    finally:
        db.dispose()
    return answer.study_answer(data.results, data.epochs, settings=data.settings,
                               attrs=data.attrs)


def best_confirmed(storage: str, sweep: str, *, engine: str) -> tuple[str, str, dict] | None:
    """The best configuration that a study of `sweep` confirmed with seeds, as (study,
    its label as the report shows it, field values), from a finished confirmation stage;
    studies on `engine` first. None when the database holds no such study."""
    import pandas as pd

    from lenet_lab.spec import Status
    from lenet_lab.sweep_space import FIELDS

    where = store.parse_storage(storage)
    if not store.has_studies(where):
        return None
    found = []
    db = store.connect(where, read_only=True)
    try:
        for row in store.list_studies(storage):
            if row["sweep"] != sweep:
                continue
            data = load_study(db, row["study"])
            stage = data.results.get("stage")
            confirm = data.results[stage == "confirm"] if stage is not None else data.results[:0]
            if not len(confirm) or confirm.state.isin([Status.WAITING, Status.RUNNING]).any():
                continue  # not confirmed yet, or still running
            arms = answer.study_answer(data.results, data.epochs, settings=data.settings).arms
            learned = [a for a in arms if not a.is_control and a.outcome.learned]
            if learned:
                best = max(learned, key=lambda a: a.test_acc.mean)
                first = confirm[confirm.arm == best.arm].iloc[0]
                values = {k: _field_value(k, first[k]) for k in FIELDS - {
                    "dataset", "epochs", "num_classes"} if not pd.isna(first[k])}
                found.append((row["engine"] != engine, -best.test_acc.mean, row["study"],
                              str(best.name.label if best.name else best.arm), values))
    finally:
        db.dispose()
    return min(found)[2:] if found else None


def _field_value(name: str, value: Any) -> Any:
    """A lab_results cell as the spec takes it (numpy scalars, SQLite's 0/1, width text)."""
    from lenet_lab.spec import field_kind, parse_widths

    value = value.item() if hasattr(value, "item") else value
    kind = field_kind(name)
    return {"widths": lambda: parse_widths(value, name), "bool": lambda: bool(value),
            "int": lambda: int(value)}.get(kind, lambda: value)()


def search_figures(storage: str, data: StudyData) -> list:
    """Optuna's own views for model-based searches: the history, parallel coordinates and
    importances of test accuracy, and with several objectives their Pareto front."""
    import optuna
    from optuna import visualization as vis

    study = optuna.load_study(study_name=data.name, storage=store.optuna_storage(storage, read_only=True))
    names = data.settings.get("objectives") or ["test_acc"]
    accuracy = names.index("test_acc") if "test_acc" in names else 0
    target = {"target": (lambda t: t.values[accuracy]) if len(study.directions) > 1 else None,
              "target_name": "test accuracy"}
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
    from lenet_lab.sweep_file import bundled_dir, load_sweep

    found = {}
    for path in sorted(bundled_dir().glob("*.toml")):
        sweep = load_sweep(str(path))
        if sweep.exercise:
            found.setdefault(sweep.exercise, (sweep.title, sweep.name))
    return found


def build_report(storage: str | None = None, studies: list[str] | None = None, *,
                 out: str | Path = "reports", activations: bool = True,
                 data_dir: str | None = None, progress: Callable[[str], None] | None = None) -> Path:
    """Write index.html and one page per study into `out`; returns the index's path.

    Trials of workers that died are failed first (as a resumed sweep would), so no
    study shows trials running for ever."""
    url = store.storage_url(storage)
    chosen = store.known_studies(url, studies)
    folder = output_folder(out, create=True)
    from lenet_lab.sweep.queue import fail_dead_trials

    fail_dead_trials(url, chosen)
    db = store.connect(url, read_only=True)
    entries = []
    try:
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
                data, search=lambda d: search_figures(url, d),
                activations=activation_figures if activations else None)
            write_page(folder, file_name, content)
            counts = compute.summary_counts(data.results)
            entries.append({
                "study": name, "page": file_name, "title": data.title, "sweep": data.meta.get("sweep"),
                "exercise": data.meta.get("exercise"), "headline": found.headline,
                "line": found.one_line(), "activations": bool(shown.get("figures")),
                "status": ", ".join(f"{v} {k}" for k, v in counts.items() if k != "trials")
                          or "no trials", "arms": found.arms})
    finally:
        db.dispose()
    entries.sort(key=lambda x: (x["exercise"] or 99, x["study"]))
    return write_page(folder, "index.html", index_page(
        entries, book_exercises(),
        "activations.html" if (folder / "activations.html").exists() else None))
