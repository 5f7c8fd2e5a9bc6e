"""`lenet-lab report`: each study's answer and its evidence as offline HTML.

compute.py turns lab_results rows into numbers (pure, tested without plotly), draw.py
turns numbers into plotly figures, and this module reads the database and writes the
pages: `index.html`, one `study-<name>.html` per study, and `plotly.min.js` once
beside them, so a copied folder renders anywhere without a network. Every string that
comes from users (study names, sweep titles, arms, commands) is HTML-escaped.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import sqlalchemy as sa

from lenet_lab import store
from lenet_lab.errors import LabError
from lenet_lab.report import compute, draw

__all__ = ["StudyData", "build_report", "load_study"]

e = html.escape


@dataclass
class StudyData:
    name: str
    meta: dict[str, Any]  # the lab_studies row (empty for a study lenet-lab did not run)
    results: pd.DataFrame  # lab_results rows
    epochs: pd.DataFrame  # trial, epoch, train_loss, train_acc, test_acc, ...

    @property
    def title(self) -> str:
        return self.meta.get("title") or self.name

    @property
    def settings(self) -> dict[str, Any]:
        return json.loads(self.meta.get("settings") or "{}")


def page_name(study: str) -> str:
    """A file name for a study page that is safe on every file system and unique."""
    slug = re.sub(r"[^A-Za-z0-9._-]", "_", study)[:80]
    if slug == study:
        return f"study-{slug}.html"
    return f"study-{slug}-{hashlib.sha256(study.encode()).hexdigest()[:8]}.html"


def load_study(engine: sa.Engine, name: str) -> StudyData:
    with engine.connect() as conn:
        results = pd.read_sql(sa.text("SELECT * FROM lab_results WHERE study = :s ORDER BY trial"),
                              conn, params={"s": name})
        epochs = pd.read_sql(sa.text(
            "SELECT lt.number AS trial, e.* FROM lab_epochs e JOIN lab_trials lt "
            "ON lt.trial_id = e.trial_id WHERE lt.study_name = :s ORDER BY lt.number, e.epoch"),
            conn, params={"s": name})
    meta = store.study_row(engine, name) or {}
    return StudyData(name, meta, results, epochs)


# --- pages -------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.6rem; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
.answer { font-size: 1.1rem; background: #f4f8fb; padding: 0.8rem 1rem; border-left: 4px solid #1f77b4; }
.muted { color: #666; font-size: 0.85rem; }
code, pre { background: #f6f6f6; padding: 0.1rem 0.3rem; }
"""


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{e(title)}</title><style>{STYLE}</style>"
            f"<script src=\"plotly.min.js\"></script></head><body>\n{body}\n</body></html>\n")


def _table(header: list[str], rows: list[list[Any]], text_columns: tuple[int, ...] = ()) -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    text = ' class="text"'
    body = "".join(
        "<tr>" + "".join(f"<td{text if i in text_columns else ''}>{e(str(c))}</td>"
                         for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure_html(figure) -> str:
    return figure.to_html(full_html=False, include_plotlyjs=False, config={"responsive": True})


def _number(value: float, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else \
        f"{value:.{digits}f}"


def _interval(interval: compute.Interval, digits: int = 4) -> str:
    if interval.n == 0:
        return "-"
    if not interval.known:
        return f"{interval.mean:.{digits}f}"
    return f"{interval.mean:.{digits}f} ± {interval.sd:.{digits}f}"


def arms_section(arms: list[compute.ArmStats]) -> str:
    rows = []
    for arm in arms:
        d = arm.vs_control
        rows.append([
            arm.arm + (" (control)" if arm.is_control else ""),
            _interval(arm.test_acc),
            "-" if d is None or not d.known else f"{d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}]",
            _interval(arm.train_acc), _interval(arm.train_loss),
            "-" if arm.examples_per_sec.n == 0 else f"{arm.examples_per_sec.mean:,.0f}",
            "-" if arm.param_count is None else f"{arm.param_count:,}",
            ", ".join(f"{n} {state}" for state, n in arm.states.items()),
        ])
    return _table(["arm", "test acc (mean ± sd)", "vs control (95% CI)", "train acc",
                   "final loss", "examples/sec", "parameters", "trials"], rows, (0, 7))


def _search_figures(storage: str, data: StudyData) -> list[str]:
    """Optuna's own views for model-based searches (history, coordinates, importance)."""
    import optuna
    from optuna import visualization as vis

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=data.name, storage=storage)
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
    return [figure_html(f) for f in figures]


def study_page(data: StudyData, storage: str, *,
               activations: Callable[[StudyData], str] | None = None
               ) -> tuple[str, str, list[compute.ArmStats]]:
    """The page's HTML, its headline answer and the arms' numbers."""
    results = data.results
    arms = compute.arm_stats(results) if len(results) else []
    headline = compute.answer(arms)
    settings = data.settings
    parts = ["<p><a href=\"index.html\">&larr; all studies</a></p>",
             f"<h1>{e(data.title)}</h1>",
             f"<p class=\"muted\">study <code>{e(data.name)}</code>"
             f"{' &middot; exercise ' + e(str(data.meta['exercise'])) if data.meta.get('exercise') else ''}"
             f" &middot; sweep <code>{e(str(data.meta.get('sweep', '-')))}</code></p>",
             f"<p class=\"answer\">{e(headline)}</p>"]
    question = _question(data.meta.get("sweep_file"))
    if question:
        parts.append(f"<p>{e(question)}</p>")
    verdicts = [compute.verdict(a) for a in arms if not a.is_control]
    if verdicts:
        parts.append("<ul>" + "".join(f"<li>{e(v)}</li>" for v in verdicts) + "</ul>")
    parts.append("<h2>Arms</h2>" + arms_section(arms))
    if arms:
        parts.append(figure_html(draw.arm_bars(arms)))
    curves = compute.learning_curves(data.epochs, results) if len(data.epochs) else {}
    if curves:
        parts.append("<h2>Learning curves</h2>" + figure_html(draw.learning_curves(curves)))
    done = results[results.state == "complete"].reset_index(drop=True)
    if len(done):
        front = compute.pareto_front(list(zip(done.examples_per_sec, done.test_acc)))
        parts.append("<h2>Accuracy and speed</h2>" + figure_html(draw.accuracy_vs_speed(results, front)))
    if settings.get("sampler", "grid") != "grid":
        figures = _search_figures(storage, data)
        if figures:
            parts.append("<h2>Search</h2>" + "".join(figures))
    if activations:
        parts.append(activations(data))
    failed = compute.failures(results)
    parts.append("<h2>Trials that did not complete</h2>" + (
        _table(["trial", "arm", "seed", "state", "epochs", "reason"],
               [[r.trial, r.arm, r.seed, r.state, r.epochs_done, r.reason or ""]
                for r in failed.itertuples()], (1, 3, 5)) if len(failed) else "<p>None.</p>"))
    parts.append("<h2>Environment</h2>" + _environment(data))
    return page(data.title, "\n".join(parts)), headline, arms


def _question(sweep_file: str | None) -> str | None:
    if not sweep_file:
        return None
    import tomllib

    try:
        return tomllib.loads(sweep_file).get("question")
    except tomllib.TOMLDecodeError:
        return None


def _environment(data: StudyData) -> str:
    meta, results = data.meta, data.results
    packages = json.loads(meta.get("packages") or "{}")
    rows = [
        ["engine", f"{meta.get('engine', '-')} {meta.get('engine_version', '')}".strip()],
        ["devices", ", ".join(sorted({f"{d} ({n})" for d, n in
                                      zip(results.device.fillna("-"), results.device_name.fillna("-"))}))],
        ["dataset", ", ".join(sorted(results.dataset.dropna().unique())) or "-"],
        ["subset", str(data.settings.get("subset") or "all")],
        ["command", meta.get("command") or "-"],
        ["sweep file SHA-256", meta.get("sweep_sha256") or "-"],
        ["sampler", meta.get("sampler") or "-"],
        ["created (UTC)", str(meta.get("created_at") or "-")],
        ["packages", ", ".join(f"{k} {v}" for k, v in packages.items()) or "-"],
    ]
    return _table(["", ""], rows, (0, 1))


def index_page(entries: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td class=\"text\">{e(str(x['exercise'] or ''))}</td>"
        f"<td class=\"text\"><a href=\"{e(x['page'])}\">{e(x['study'])}</a></td>"
        f"<td class=\"text\">{e(x['title'])}</td><td class=\"text\">{e(x['status'])}</td>"
        f"<td class=\"text\">{e(x['headline'])}</td></tr>" for x in entries)
    body = [
        "<h1>lenet-lab: the LeNet exercises of Dive into Deep Learning, measured</h1>",
        "<p class=\"muted\">Each study runs the book's network as its control arm. "
        "Accuracies are after the last epoch, mean ± sd over seeds; "
        "intervals are 95% t-intervals.</p>",
        "<table><thead><tr><th>exercise</th><th>study</th><th>question</th><th>trials</th>"
        f"<th>answer</th></tr></thead><tbody>{rows}</tbody></table>",
    ]
    body += comparisons(entries)
    return page("lenet-lab report", "\n".join(body))


def comparisons(entries: list[dict[str, Any]]) -> list[str]:
    """Studies of the same sweep (other engines, devices, budgets) side by side."""
    by_sweep: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        if entry["sweep"]:
            by_sweep.setdefault(entry["sweep"], []).append(entry)
    sections = []
    for sweep, group in sorted(by_sweep.items()):
        if len(group) < 2:
            continue
        arm_names = list(dict.fromkeys(a.arm for x in group for a in x["arms"]))
        rows = []
        for arm in arm_names:
            row = [arm]
            for x in group:
                stats = next((a for a in x["arms"] if a.arm == arm), None)
                row += ["-", "-"] if stats is None else [
                    _interval(stats.test_acc),
                    "-" if stats.examples_per_sec.n == 0 else f"{stats.examples_per_sec.mean:,.0f}"]
            rows.append(row)
        header = ["arm"] + [f"{x['study']}: {h}" for x in group for h in ("test acc", "examples/sec")]
        sections.append(f"<h2>Compare: {e(sweep)}</h2>" + _table(header, rows, (0,)))
    return sections


def build_report(storage: str | None = None, studies: list[str] | None = None, *,
                 out: str | Path = "reports", activations: bool = True,
                 data_dir: str | None = None, progress: Callable[[str], None] | None = None) -> Path:
    """Write index.html and one page per study into `out`; returns the index's path."""
    url = store.storage_url(storage)
    known = [row["study"] for row in store.list_studies(url)]
    if not known:
        raise LabError(f"no studies in {store.safe_url(url)}: "
                       f"run `lenet-lab sweep pooling` first, or pass --storage")
    chosen = studies or known
    missing = [s for s in chosen if s not in known]
    if missing:
        raise LabError(f"no study {missing[0]!r} in the database: known studies are "
                       f"{', '.join(known)} (`lenet-lab studies`)")
    folder = Path(out)
    engine = store.connect(url)
    from lenet_lab.report.activations import section as activation_section

    entries = []
    try:
        for name in chosen:
            if progress:
                progress(name)
            data = load_study(engine, name)
            file_name = page_name(name)
            content, headline, arms = study_page(
                data, url, activations=(lambda d: activation_section(engine, d, data_dir)) if activations else None)
            write_page(folder, file_name, content)
            counts = compute.summary_counts(data.results)
            entries.append({
                "study": name, "page": file_name, "title": data.title, "sweep": data.meta.get("sweep"),
                "exercise": data.meta.get("exercise"), "headline": headline,
                "status": ", ".join(f"{v} {k}" for k, v in counts.items() if k != "trials")
                          or "no trials", "arms": arms})
    finally:
        engine.dispose()
    entries.sort(key=lambda x: (x["exercise"] or 99, x["study"]))
    return write_page(folder, "index.html", index_page(entries))


_SCRIPT_WRITTEN: set[Path] = set()


def write_page(folder: Path, name: str, content: str) -> Path:
    """Write one page, with plotly.min.js beside it so the folder works offline."""
    import plotly.offline

    folder.mkdir(parents=True, exist_ok=True)
    if folder.resolve() not in _SCRIPT_WRITTEN:  # once per folder and run, matching plotly
        (folder / "plotly.min.js").write_text(plotly.offline.get_plotlyjs(), encoding="utf-8")
        _SCRIPT_WRITTEN.add(folder.resolve())
    path = folder / name
    path.write_text(content, encoding="utf-8")
    return path
