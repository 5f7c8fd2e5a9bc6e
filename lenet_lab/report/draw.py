"""Plotly figures drawn from the computed numbers (see compute.py); no arithmetic here.

Figures hold their room whatever the arms: arms appear by their short keys (`book`,
`A1`, ...; the page's table says what each stands for), legends sit below the plot, one
panel per row, so the drawing keeps the figure's width on a phone too. Each arm has one
colour in every figure (bars, seed dots, curves, bands, points).

Plotly renders a subset of HTML (`<a href>`, `<b>`, `<br>`) in trace names, tick labels,
titles and hover text. Every user string (arm and study names) passes `text()` on its
way in, so it shows as the text it is.
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lenet_lab.results import ArmStats
from lenet_lab.results.answer import Effect
from lenet_lab.status import Status

__all__ = ["accuracy_vs_speed", "activation_maps", "arm_bars", "arm_colors", "effects",
           "learning_curves", "legend_below", "text"]

CONTROL_COLOR = "#7f7f7f"
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#bcbd22", "#17becf", "#393b79"]  # ten: the best ten arms are drawn
# d3 formats: at most 4 significant digits on every axis ("0.1", not 0.10000000000000000555)
NUMBER = ".4~g"
LAYOUT = {"template": "plotly_white", "margin": {"l": 60, "r": 20, "t": 50, "b": 40},
          "legend": {"orientation": "h", "yanchor": "top", "y": -0.12, "x": 0},
          "title": {"x": 0, "xanchor": "left", "font": {"size": 15}}}


def text(value: object) -> str:
    """User text for plotly: escaped, so markup in it is shown, never rendered.

    Quotes stay as they are: plotly decodes &lt; &gt; &amp; but not &quot;, and a tag
    needs a real `<` to be read as one."""
    return html.escape(str(value), quote=False)


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    return {**LAYOUT, "title": {**LAYOUT["title"], "text": title}, **extra}


def legend_below(figure: go.Figure) -> go.Figure:
    """A figure made elsewhere (Optuna's views) with the report's layout: its legend and
    colour bars below the plot, so the drawing keeps the width on a phone."""
    figure.update_layout(**_layout(figure.layout.title.text or ""))
    bars = [style.colorbar for trace in figure.data for part in ("marker", "line")
            if (style := getattr(trace, part, None)) is not None
            and getattr(style, "colorbar", None) is not None and style.colorbar.to_plotly_json()]
    for i, bar in enumerate(bars):  # stacked under the plot, one row each
        bar.update(orientation="h", x=0, xanchor="left", xpad=0, y=-0.25 - 0.3 * i,
                   yanchor="top", thickness=10, len=0.6, title={"side": "top"})
    if bars:
        figure.update_layout(height=(figure.layout.height or 450) + 110 * len(bars))
    return figure


def arm_colors(arms: list[ArmStats]) -> dict[str, str]:
    """Arm -> colour: grey for the control, the palette in key order for the others;
    one map for all of a page's figures."""
    others = sorted((a for a in arms if not a.is_control), key=lambda a: _key_order(a.key))
    colors = {a.arm: COLORS[i % len(COLORS)] for i, a in enumerate(others)}
    return {**colors, **{a.arm: CONTROL_COLOR for a in arms if a.is_control}}


def _key_order(key: str) -> tuple[int, str]:
    return (int(key[1:]), key) if key[:1] == "A" and key[1:].isdigit() else (0, key)


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _padded(values: Any, pad: float) -> list[float]:
    """An axis range around the values with 5% room each side that never collapses:
    when every value is the same, ± pad around it."""
    low, high = float(min(values)), float(max(values))
    room = 0.05 * (high - low) if high - low > 1e-9 else pad
    return [low - room, high + room]


def learning_curves(curves: dict[str, pd.DataFrame], arms: list[ArmStats],
                    colors: dict[str, str]) -> go.Figure | None:
    """Train loss (log scale), train acc, validation acc (what choices read; in studies
    that held a split out) and, where it was measured every epoch, test acc, one panel
    per row: the seeds' mean with a min-max band in the arm's colour. Draws the `arms`
    given."""
    metrics = [("train_loss", "train loss (log scale)"), ("train_acc", "train accuracy"),
               ("valid_acc", "validation accuracy"), ("test_acc", "test accuracy")]
    # a curve needs two epochs: sweeps measure the test set after the last epoch only
    metrics = [(m, title) for m, title in metrics
               if any(c.get(f"{m}_mean", pd.Series()).notna().sum() > 1 for c in curves.values())]
    rows = len(metrics)
    if not rows:  # one epoch each: nothing to draw a curve through
        return None
    figure = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.24 / rows,
                           subplot_titles=[title for _, title in metrics])
    for arm in arms:
        frame = curves.get(arm.arm)
        if frame is None:
            continue
        color, key, x = colors[arm.arm], text(arm.key), list(frame.epoch)
        for row, (metric, _) in enumerate(metrics, start=1):
            figure.add_trace(go.Scatter(
                x=x + x[::-1], y=list(frame[f"{metric}_max"]) + list(frame[f"{metric}_min"])[::-1],
                mode="lines", fill="toself", fillcolor=_rgba(color, 0.15), line={"width": 0},
                hoverinfo="skip", showlegend=False, legendgroup=key), row=row, col=1)
            figure.add_trace(go.Scatter(
                x=x, y=frame[f"{metric}_mean"], mode="lines+markers", name=key, legendgroup=key,
                line={"color": color}, marker={"size": 5}, showlegend=row == 1,
                customdata=frame["seeds"],
                hovertemplate=f"{key}, epoch %{{x}}: %{{y:.4g}} (%{{customdata}} seeds)"
                              "<extra></extra>"), row=row, col=1)
    figure.update_yaxes(tickformat=NUMBER)
    for row, (metric, _) in enumerate(metrics, start=1):
        values = [v for a in arms if a.arm in curves for c in ("min", "max")
                  for v in curves[a.arm][f"{metric}_{c}"].dropna()]
        if values and metric == "train_loss":
            figure.update_yaxes(type="log", tickvals=log_ticks(values), row=row, col=1)
        elif values:
            figure.update_yaxes(range=_padded(values, 0.05), row=row, col=1)
    last = max((int(frame.epoch.max()) for frame in curves.values()), default=1)
    figure.update_xaxes(tick0=1, dtick=max(1, -(-last // 10)), range=[0.8, last + 0.2])
    figure.update_xaxes(title_text="epoch", row=rows, col=1)
    figure.update_layout(**_layout("Learning curves (mean over seeds; band: min to max)",
                                   height=250 * rows, legend={**LAYOUT["legend"], "y": -0.07},
                                   margin={**LAYOUT["margin"], "t": 80}))
    return figure


def log_ticks(values: list[float], most: int = 6) -> list[float]:
    """Tick values for a log axis over `values`: the finest of these round steps that
    gives at least two and at most `most` ticks: powers of ten, then 1-2-5 times them,
    finer for a narrow range (every few decades for a wide one), so no two labels
    overlap near 1 and none reads 2.758."""
    import math

    low, high = min(v for v in values if v > 0), max(values)
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    chosen: list[float] = []
    for steps in ((1,), (1, 2, 5), (1, 2, 3, 5, 7), range(1, 10), [m / 2 for m in range(2, 20)],
                  [m / 10 for m in range(10, 100)]):
        ticks = [round(m * 10.0 ** e, 12) for e in decades for m in steps
                 if low <= m * 10.0 ** e <= high]
        if len(ticks) > most:
            chosen = chosen or ticks[::-(-len(ticks) // most)]  # wide: every few decades
            break
        if len(ticks) >= 2:
            chosen = ticks
    return chosen or sorted({low, high})


def accuracy_vs_speed(results: pd.DataFrame, arms: list[ArmStats], colors: dict[str, str],
                      front: list[int] | None) -> go.Figure:
    """Each completed trial of the `arms` given: test accuracy against examples/sec, with
    the Pareto front (None: none is drawn, the machine was shared)."""
    done = results[results.state == Status.COMPLETE].reset_index(drop=True)
    figure = go.Figure()
    for arm in arms:
        rows = done[done.arm == arm.arm]
        if not len(rows):
            continue
        figure.add_trace(go.Scatter(
            x=rows.examples_per_sec, y=rows.test_acc, mode="markers", name=text(arm.key),
            marker={"color": colors[arm.arm], "size": 9}, customdata=rows[["trial", "seed"]],
            hovertemplate=f"{text(arm.key)}, trial %{{customdata[0]}} (seed %{{customdata[1]}}): "
                          "%{y:.4g} at %{x:,.4~r} examples/sec<extra></extra>"))
    if front:
        points = done.iloc[front].sort_values("examples_per_sec")
        figure.add_trace(go.Scatter(x=points.examples_per_sec, y=points.test_acc,
                                    mode="lines", name="Pareto front",
                                    line={"color": "black", "dash": "dot"}))
    drawn = done[done.arm.isin([a.arm for a in arms])]
    if len(drawn):
        figure.update_yaxes(range=_padded(drawn.test_acc, 0.05))
        figure.update_xaxes(range=_padded(drawn.examples_per_sec,
                                          0.1 * drawn.examples_per_sec.max() or 1))
    figure.update_layout(**_layout(
        "Test accuracy against training speed", height=420,
        xaxis={"title": "examples/sec (training only)", "tickformat": ",.4~r"},
        yaxis={"title": "test accuracy", "tickformat": NUMBER}))
    return figure


def arm_bars(arms: list[ArmStats], colors: dict[str, str], chance: float) -> go.Figure:
    """Mean test accuracy per arm from 0, with its 95% interval, each seed's value as a
    dot in the arm's colour, and a dashed line at chance."""
    done = [a for a in arms if a.test_acc.n]
    keys = [text(a.key) for a in done]
    figure = go.Figure(go.Bar(
        x=keys, y=[a.test_acc.mean for a in done], name="mean (95% CI)",
        error_y={"type": "data", "symmetric": False, "color": "#333",
                 "array": [(a.test_acc.high - a.test_acc.mean) if a.test_acc.known else 0 for a in done],
                 "arrayminus": [(a.test_acc.mean - a.test_acc.low) if a.test_acc.known else 0
                                for a in done]},
        marker={"color": [_rgba(colors[a.arm], 0.55) for a in done]},
        hovertemplate="%{x}: %{y:.4f}<extra></extra>"))
    figure.add_trace(go.Scatter(
        x=[text(a.key) for a in done for _ in a.test_accs],
        y=[v for a in done for v in a.test_accs],
        mode="markers", name="each seed", hovertemplate="%{x}: %{y:.4f}<extra>seed</extra>",
        marker={"color": [colors[a.arm] for a in done for _ in a.test_accs], "size": 8,
                "line": {"color": "#222", "width": 1}}))
    figure.add_hline(y=chance, line={"dash": "dash", "color": "#d62728", "width": 1.5},
                     annotation_text=f"chance ({chance:.2g})", annotation_position="top right")
    figure.update_layout(**_layout(
        "Test accuracy per arm (mean, 95% CI, each seed)", height=400,
        yaxis={"title": "test accuracy", "range": [0, 1.02], "tickformat": NUMBER},
        xaxis={"type": "category"}))
    return figure


def activation_maps(maps: dict[str, Any], title: str, *,
                    column_titles: list[str] | None = None, width: int = 1000) -> go.Figure:
    """Heatmaps: one row per label, one square cell per 2-D map (e.g. per channel).

    `maps` is {row label: list of 2-D arrays}; labels are short (an arm key and an
    image) and stand left of their rows.
    """
    rows = list(maps)
    columns = max(len(v) for v in maps.values())
    label_width = 110
    cell = max(44, min(150, (width - label_width - 20) / columns))  # 44: a two-line row label fits
    figure = make_subplots(rows=len(rows), cols=columns, horizontal_spacing=0.003,
                           vertical_spacing=min(0.02, 0.3 / len(rows)), column_titles=column_titles)
    for r, label in enumerate(rows, start=1):
        for c, channel in enumerate(maps[label], start=1):
            figure.add_trace(go.Heatmap(z=channel[::-1], colorscale="Viridis", showscale=False,
                                        hovertemplate=f"{label}, map {c - 1}: %{{z:.3f}}<extra></extra>"),
                             row=r, col=c)
        axis = figure.get_subplot(r, 1).yaxis
        figure.add_annotation(text=label, xref="paper", yref="paper", x=-0.005, xanchor="right",
                              y=sum(axis.domain) / 2, showarrow=False, font={"size": 11},
                              align="right")
    figure.update_xaxes(showticklabels=False)
    figure.update_yaxes(showticklabels=False)
    figure.update_layout(title=title, width=int(label_width + 10 + cell * columns),  # square cells
                         height=int(cell * len(rows)) + 90,
                         template="plotly_white",
                         margin={"l": label_width, "r": 10, "t": 60, "b": 10})
    return figure


DECISION_COLORS = {"better": "#2ca02c", "worse": "#d62728"}  # others: grey


def effects(rows: list[tuple[str, Effect]], title: str = "") -> go.Figure:
    """Every study's leading effect against the book's network, one row each (label,
    effect), with its interval; rows without an effect (nothing learned) say so at 0.
    The axis spans the effects, not the widest interval: an interval that reaches past it
    is cut at the edge and its numbers printed beside it, so one wide interval cannot
    squash the others into dots."""
    labels = [text(label) for label, _ in rows]
    figure = go.Figure()
    shown = [(label, e) for label, (_, e) in zip(labels, rows) if e.mean is not None]
    edge = max([0.02, *(3 * abs(e.mean) for _, e in shown)])
    for decision in dict.fromkeys(e.decision for _, e in shown):
        part = [(label, e) for label, e in shown if e.decision == decision]
        figure.add_trace(go.Scatter(
            x=[e.mean for _, e in part], y=[label for label, _ in part], mode="markers",
            name=decision, marker={"size": 10, "color": DECISION_COLORS.get(decision, "#555")},
            error_x={"type": "data", "symmetric": False, "color": "#333",
                     "array": [min(e.high, edge) - e.mean if e.high is not None else 0
                               for _, e in part],
                     "arrayminus": [e.mean - max(e.low, -edge) if e.low is not None else 0
                                    for _, e in part]},
            customdata=[[text(e.arm), _interval_text(e)] for _, e in part],
            hovertemplate="%{y}: %{customdata[0]}, %{x:+.3f} %{customdata[1]}<extra></extra>"))
    cut = [(label, e) for label, e in shown if e.low is not None and
           (e.low < -edge or e.high > edge)]
    if cut:
        figure.add_trace(go.Scatter(
            x=[e.mean for _, e in cut], y=[label for label, _ in cut], mode="text",
            text=[f"[{e.low:+.2f}, {e.high:+.2f}]" for _, e in cut], textposition="top center",
            textfont={"size": 10, "color": "#666"}, showlegend=False, hoverinfo="skip"))
    missing = [(label, e) for label, (_, e) in zip(labels, rows) if e.mean is None]
    if missing:
        figure.add_trace(go.Scatter(
            x=[0] * len(missing), y=[label for label, _ in missing], mode="markers+text",
            name="no effect: did not learn", marker={"symbol": "x", "size": 9, "color": "#999"},
            text=[text(f"{e.arm}: {e.decision}") for _, e in missing], textposition="middle right",
            textfont={"size": 11, "color": "#666"}, hoverinfo="text"))
    figure.add_vline(x=0, line={"color": "#7f7f7f", "dash": "dash"})
    figure.update_yaxes(type="category", autorange="reversed", categoryorder="array",
                        categoryarray=labels, automargin=True)
    figure.update_layout(**_layout(
        title or "Each exercise's leading change<br>against the book's network, with its interval",
        height=160 + 34 * len(rows), margin={**LAYOUT["margin"], "t": 70},
        xaxis={"title": "difference in test accuracy", "tickformat": "+.2f", "zeroline": False,
               "range": [-1.1 * edge, 1.1 * edge]}))
    return figure


def _interval_text(e: Effect) -> str:
    """'[-0.005, +0.054] (95% CI, paired by seed; could detect 0.031)'."""
    if e.low is None:
        return "(no interval)"
    detect = f"; could detect {e.detectable:.3f}" if e.detectable is not None else ""
    return (f"[{e.low:+.3f}, {e.high:+.3f}] ({100 * e.level:.3g}% CI, "
            f"{'paired by seed' if e.paired else 'Welch'}{detect})")
