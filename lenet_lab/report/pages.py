"""The report's HTML: a page per study and the index, from computed numbers and figures.

Every string that comes from users (study names, sweep titles, arms, commands) is
HTML-escaped. `write_page` puts plotly.min.js beside the pages, so a copied folder
renders anywhere without a network, and writes each page atomically.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd

from lenet_lab.files import atomic_write
from lenet_lab.report import answer, compute, draw
from lenet_lab.spec import Status

__all__ = ["StudyData", "figure_html", "index_page", "page", "study_page", "write_page"]

e = html.escape


@dataclass
class StudyData:
    name: str
    meta: dict[str, Any]  # the lab_studies row (empty for a study lenet-lab did not run)
    results: pd.DataFrame  # lab_results rows
    epochs: pd.DataFrame  # trial, epoch, train_loss, train_acc, test_acc, ...
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)  # Optuna's study user attrs

    @property
    def title(self) -> str:
        return self.meta.get("title") or self.name

    @property
    def settings(self) -> dict[str, Any]:
        return json.loads(self.meta.get("settings") or "{}")

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
            arm.outcome.describe(),
            ", ".join(f"{n} {state}" for state, n in arm.states.items()),
        ])
    return _table(["arm", "test acc (mean ± sd)", "vs control (95% CI)", "train acc",
                   "final loss", "examples/sec", "parameters", "outcome", "trials"], rows, (0, 7, 8))


def study_page(data: StudyData, *, search: Callable[[StudyData], list] | None = None,
               activations: Callable[[StudyData], str] | None = None
               ) -> tuple[str, str, list[compute.ArmStats]]:
    """The page's HTML, its headline answer and the arms' numbers."""
    results = data.results
    found = answer.study_answer(results, data.epochs, settings=data.settings, attrs=data.attrs)
    arms, headline = found.arms, found.headline
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
    if found.verdicts:
        parts.append("<ul>" + "".join(f"<li>{e(v)}</li>" for v in found.verdicts) + "</ul>")
    parts.append("<h2>Arms</h2>" + arms_section(arms))
    if arms:
        parts.append(figure_html(draw.arm_bars(arms)))
    curves = compute.learning_curves(data.epochs, results) if len(data.epochs) else {}
    if curves:
        parts.append("<h2>Learning curves</h2>" + figure_html(draw.learning_curves(curves)))
    done = results[results.state == Status.COMPLETE].reset_index(drop=True)
    if len(done):
        front = compute.pareto_front(list(zip(done.examples_per_sec, done.test_acc)))
        parts.append("<h2>Accuracy and speed</h2>" + figure_html(draw.accuracy_vs_speed(results, front)))
    if search and settings.get("sampler", "grid") != "grid":
        figures = search(data)
        if figures:
            parts.append("<h2>Search</h2>" + "".join(figure_html(f) for f in figures))
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


_SCRIPT_WRITTEN: set[Path] = set()


def write_page(folder: Path, name: str, content: str) -> Path:
    """Write one page, with plotly.min.js beside it so the folder works offline."""
    import plotly.offline

    folder.mkdir(parents=True, exist_ok=True)
    if folder.resolve() not in _SCRIPT_WRITTEN:  # once per folder and run, matching plotly
        atomic_write(folder / "plotly.min.js", plotly.offline.get_plotlyjs())
        _SCRIPT_WRITTEN.add(folder.resolve())
    return atomic_write(folder / name, content)
