"""The report's HTML: a page per study and the index, from computed numbers and figures.

Pages come from the Jinja2 templates in `templates/` (package data) with autoescape on,
so every string from users (study names, sweep titles, arms, commands) is text wherever
it lands; figure HTML from plotly is the only markup passed through. `write_page` puts
plotly.min.js beside the pages, so a copied folder renders anywhere without a network,
and writes each page atomically.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from lenet_lab.files import atomic_write
from lenet_lab.report import draw
from lenet_lab.results import (Answer, Decision, Interval, StudyData, arm_names, arm_stats,
                               study_answer)
from lenet_lab.results.compare import Comparison
from lenet_lab.results.arms import (SPEED_SPREAD, ArmStats, chance_level, failures, learning_curves,
                                    shared_machine, shares_seeds, shown_arms, sig,
                                    speed_conditions)
from lenet_lab.results.stats import pareto_front
from lenet_lab.status import Status

__all__ = ["Cell", "figure_html", "index_page", "render", "study_figures", "study_page",
           "write_page"]


@dataclass(frozen=True)
class Cell:
    """A table cell: its text, the number it sorts by (None: by its text), text-aligned."""

    text: str
    sort: float | str | None = None
    left: bool = False
    wrap: bool = False


def _text(value: Any, *, wrap: bool = False) -> Cell:
    return Cell(str(value), left=True, wrap=wrap)


def _number(value: float | None, text: str | None = None) -> Cell:
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    return Cell("-" if missing else (text if text is not None else sig(value)),
                "" if missing else repr(float(value)))


def _table(header: list[Cell], rows: list[list[Cell]]) -> dict[str, Any]:
    return {"header": header, "rows": rows}


@functools.cache
def _templates():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("lenet_lab.report", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)


def render(template: str, **context: Any) -> str:
    """One page from its template (autoescaped)."""
    return _templates().get_template(template).render(**context)


def figure_html(figure) -> str:
    return figure.to_html(full_html=False, include_plotlyjs=False, config={"responsive": True})


def _interval(interval: Interval) -> Cell:
    if interval.n == 0:
        return _number(None)
    text = f"{interval.mean:.4f}" + (f" ± {interval.sd:.4f}" if interval.known else "")
    return _number(interval.mean, text)


def arms_table(arms: list[ArmStats], comparisons: list[Comparison] = ()) -> dict[str, Any]:
    """One row per arm: its key, one column per varying value, then its numbers: validation
    accuracy (what chose), test accuracy and its difference from the control (paired by
    seed where they share seeds; at the decision's level, 95% over the arms compared), and
    for an undecided arm the smallest difference its seeds could have detected."""
    varying = list(dict.fromkeys(k for a in arms if a.name for k in a.name.values))
    found = {c.arm.arm: c for c in comparisons}
    control = next((a for a in arms if a.is_control), None)
    header = [Cell("arm", left=True), *(Cell(k, left=True) for k in varying)] + [Cell(h) for h in (
        "valid acc (mean ± sd)", "test acc (mean ± sd)", "vs control (CI)",
        "could detect (80% power)", "train acc", "final loss", "examples/sec",
        "parameters")] + [Cell("outcome", left=True), Cell("trials", left=True)]
    rows = []
    for arm in arms:
        values = arm.name.values if arm.name else {}
        key = "book (control)" if arm.is_control else \
            f"{arm.key} ({arm.name.label})" if arm.name and arm.name.named else arm.key
        c = found.get(arm.arm)
        d = c.difference if c is not None else arm.vs_control
        paired = "paired" if control is not None and shares_seeds(arm, control) else "Welch"
        detect = c.detectable if c is not None and c.decision is Decision.UNDECIDED else None
        rows.append([
            _text(key), *(_param(values.get(k)) for k in varying),
            _interval(arm.valid_acc), _interval(arm.test_acc),
            _number(None) if d is None or not d.known else _number(
                d.mean, f"{d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}] {paired}"),
            _number(detect, None if detect is None else f"±{detect:.3f}"),
            _interval(arm.train_acc), _interval(arm.train_loss),
            _number(arm.examples_per_sec.mean if arm.examples_per_sec.n else None),
            _number(arm.param_count), _text(arm.outcome.describe()),
            _text(", ".join(f"{n} {state}" for state, n in arm.states.items()))])
    return _table(header, rows)


def _param(value: Any) -> Cell:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _number(value)
    return _text("-" if value is None else value)


def study_figures(data: StudyData, found: Answer | None = None, *,
                  search: Callable[[StudyData], list] | None = None) -> dict[str, Any]:
    """The study's figures as its page draws them: `accuracy` (each arm against chance),
    `curves` (learning curves), `speed` (accuracy against examples/sec, with the Pareto
    front where the machine was not shared) and, for a search, Optuna's own views
    (`search 1`, ...). Arms have one colour in all of them."""
    results = data.results
    found = found or study_answer(data)
    shown = shown_arms(found.arms)
    # figures draw every arm of the study (a search's too), but only the best SHOWN_ARMS
    every = arm_stats(results, data.epochs, names=arm_names(results))
    drawn = shown_arms(every)
    colors = draw.arm_colors(drawn + [a for a in shown if a.arm not in {d.arm for d in drawn}])
    figures: dict[str, Any] = {}
    if shown:
        figures["accuracy"] = draw.arm_bars(shown, colors, chance_level(results))
    curves = learning_curves(data.epochs, results) if len(data.epochs) else {}
    if curves and (drawing := draw.learning_curves(curves, drawn, colors)) is not None:
        figures["curves"] = drawing
    done = results[results.state == Status.COMPLETE].reset_index(drop=True)
    if len(done):
        front = None if shared_machine(results) else pareto_front(
            list(zip(done.examples_per_sec, done.test_acc)))
        figures["speed"] = draw.accuracy_vs_speed(results, drawn, colors, front)
    if search and data.settings.get("sampler", "grid") != "grid":
        figures.update({f"search {i}": draw.legend_below(figure)
                        for i, figure in enumerate(search(data), start=1)})
    return figures


def study_page(data: StudyData, *, search: Callable[[StudyData], list] | None = None,
               activations: Callable[[StudyData], Any] | None = None) -> tuple[str, Answer]:
    """The page's HTML and the study's answer."""
    results = data.results
    found = study_answer(data)
    arms = found.arms
    shown = shown_arms(arms)
    names = arm_names(results)
    figures = {name: figure_html(figure)
               for name, figure in study_figures(data, found, search=search).items()}
    context: dict[str, Any] = {
        "title": data.title, "name": data.name, "exercise": data.meta.get("exercise"),
        "sweep": data.meta.get("sweep", "-"), "headline": found.headline,
        "question": _question(data.meta.get("sweep_file")), "verdicts": found.verdicts,
        "arms": arms_table(arms, found.comparisons),
        "shown": len(shown) - any(a.is_control for a in shown),
        "hidden": len([a for a in arms if a.test_acc.n]) - len(shown),
        "bars": figures.get("accuracy", ""), "curves": figures.get("curves", ""),
        "speed": figures.get("speed", ""), "shared": shared_machine(results),
        "conditions": speed_conditions(results), "spread": f"{SPEED_SPREAD:.0%}",
        "search": [html for name, html in figures.items() if name.startswith("search")],
        "activations": activations(data) if activations else None}
    failed = failures(results)
    context["failures"] = _table(
        [Cell(h, left=h in ("arm", "state", "reason")) for h in
         ("trial", "arm", "seed", "state", "epochs", "reason")],
        [[_number(r.trial), _text(names[r.arm].key if r.arm in names else "-"),
          _number(None if pd.isna(r.seed) else int(r.seed)), _text(r.state),
          _number(None if pd.isna(r.epochs_done) else int(r.epochs_done)),
          _text("" if pd.isna(r.reason) else r.reason, wrap=True)] for r in failed.itertuples()])
    context["environment"] = _environment(data)
    return render("study.html", **context), found


def _question(sweep_file: str | None) -> str | None:
    if not sweep_file:
        return None
    import tomllib

    try:
        return tomllib.loads(sweep_file).get("question")
    except tomllib.TOMLDecodeError:
        return None


def _environment(data: StudyData) -> dict[str, Any]:
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
    return _table([Cell("", left=True), Cell("", left=True)],
                  [[_text(k), _text(v, wrap=True)] for k, v in rows])


BOOK_EXERCISE_10 = ("Display the activations of the first and second layer of LeNet for "
                    "different inputs (e.g., sweaters, coats).")


def index_page(entries: list[dict[str, Any]], exercises: dict[int, tuple[str, str]],
               activation_page: str | None = None) -> str:
    """The exercise checklist: the book's ten exercises in order, each with its studies'
    one-line answers or the command that runs it; then other studies and the studies of
    one sweep side by side. `exercises` is {number: (title, sweep name)}."""
    checklist = []
    for number in range(1, 11):
        title, sweep = exercises.get(number, (BOOK_EXERCISE_10, ""))
        studies = [x for x in entries if x["exercise"] == number]
        links = []
        if number == 10:
            links = [{"page": f"{x['page']}#activations",
                      "text": f"the book's network and the best of {x['study']}"}
                     for x in entries if x["activations"]]
            if activation_page:
                links.insert(0, {"page": activation_page,
                                 "text": "activations page (lenet-lab activations, or the book's "
                                         "network and the best network found by sweep all)"})
        checklist.append({"number": number, "title": title, "studies": studies, "links": links,
                          "command": f"lenet-lab sweep {sweep}" if sweep else
                                     "lenet-lab sweep pooling, then lenet-lab report"})
    others = [x for x in entries if x["exercise"] not in range(1, 11)]
    figures = []
    for budget, labelled in effect_labels(entries).items():
        title = (f"{budget.capitalize()} budget: each exercise's leading change<br>against the "
                 f"book's network, with its interval")
        figures.append(figure_html(draw.effects([(label, x["effect"]) for label, x in labelled],
                                                title)))
    return render("index.html", title="lenet-lab report", exercises=checklist, others=others,
                  compare=comparisons(entries), effects=figures)


def effect_labels(entries: list[dict[str, Any]]
                  ) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """The index figures' rows, one figure per budget (full first, then quick, then any
    other), so that a quick study's wide interval sits on its own axis: exercise number,
    sweep and what the study spent (`1. pooling, 10 epochs, 3 seeds`; `#2`, `#3` for more
    studies of one exercise and budget, in the index's order). Rows name no study: study
    names are users' text, which stays in the page's list below."""
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    seen: dict[tuple[str, str], int] = {}
    order = {"full": 0, "quick": 1}
    for entry in sorted(entries, key=lambda x: order.get(x["budget"], 2)):
        if entry["exercise"] in range(1, 11):
            label = f"{entry['exercise']}. {entry['sweep']}, {entry['spent']}"
            seen[entry["budget"], label] = seen.get((entry["budget"], label), 0) + 1
            count = seen[entry["budget"], label]
            groups.setdefault(entry["budget"], []).append(
                (label + (f" #{count}" if count > 1 else ""), entry))
    return groups


def comparisons(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Studies of the same sweep (other engines, devices, budgets) side by side."""
    by_sweep: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        if entry["sweep"]:
            by_sweep.setdefault(entry["sweep"], []).append(entry)
    sections = []
    for sweep, group in sorted(by_sweep.items()):
        if len(group) < 2:
            continue
        labels = {a.arm: a for x in group for a in x["arms"]}
        rows = []
        for arm, first in labels.items():
            row = [_text(str(first) if not first.is_control else "book", wrap=True)]
            for x in group:
                stats = next((a for a in x["arms"] if a.arm == arm), None)
                row += [_number(None), _number(None)] if stats is None else [
                    _interval(stats.test_acc),
                    _number(stats.examples_per_sec.mean if stats.examples_per_sec.n else None)]
            rows.append(row)
        header = [Cell("arm", left=True)] + [Cell(f"{x['study']}: {h}") for x in group
                                             for h in ("test acc", "examples/sec")]
        sections.append({"sweep": sweep, **_table(header, rows)})
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
