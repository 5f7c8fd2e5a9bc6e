"""Plotly figures drawn from the computed numbers (see compute.py); no arithmetic here.

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

from lenet_lab.report.compute import ArmStats
from lenet_lab.spec import Status

__all__ = ["accuracy_vs_speed", "activation_maps", "arm_bars", "learning_curves", "text"]

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf"]
LAYOUT = {"template": "plotly_white", "margin": {"l": 60, "r": 20, "t": 50, "b": 50}}


def text(value: object) -> str:
    """User text for plotly: escaped, so markup in it is shown, never rendered.

    Quotes stay as they are: plotly decodes &lt; &gt; &amp; but not &quot;, and a tag
    needs a real `<` to be read as one."""
    return html.escape(str(value), quote=False)


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def learning_curves(curves: dict[str, pd.DataFrame]) -> go.Figure:
    """Train loss, train acc and test acc per epoch: the seeds' mean with a min-max band."""
    metrics = [("train_loss", "train loss"), ("train_acc", "train acc"), ("test_acc", "test acc")]
    figure = make_subplots(rows=1, cols=3, subplot_titles=[title for _, title in metrics])
    for i, (arm, frame) in enumerate(curves.items()):
        color = COLORS[i % len(COLORS)]
        for col, (metric, _) in enumerate(metrics, start=1):
            x = list(frame.epoch)
            figure.add_trace(go.Scatter(
                x=x + x[::-1], y=list(frame[f"{metric}_max"]) + list(frame[f"{metric}_min"])[::-1],
                fill="toself", fillcolor=_rgba(color, 0.15), line={"width": 0},
                hoverinfo="skip", showlegend=False, legendgroup=text(arm)), row=1, col=col)
            figure.add_trace(go.Scatter(
                x=x, y=frame[f"{metric}_mean"], mode="lines+markers", name=text(arm),
                legendgroup=text(arm),
                line={"color": color}, showlegend=col == 1,
                customdata=frame["seeds"], hovertemplate="epoch %{x}: %{y:.4f} (%{customdata} seeds)"),
                row=1, col=col)
    figure.update_xaxes(title_text="epoch")
    figure.update_layout(title="Learning curves (mean over seeds, band: min to max)",
                         height=380, **LAYOUT)
    return figure


def accuracy_vs_speed(results: pd.DataFrame, front: list[int]) -> go.Figure:
    """Every completed trial: test accuracy against examples/sec, with the Pareto front."""
    done = results[results.state == Status.COMPLETE].reset_index(drop=True)
    figure = go.Figure()
    for i, (arm, rows) in enumerate(done.groupby("arm", sort=False)):
        figure.add_trace(go.Scatter(
            x=rows.examples_per_sec, y=rows.test_acc, mode="markers", name=text(arm),
            marker={"color": COLORS[i % len(COLORS)], "size": 9},
            customdata=rows[["trial", "seed"]],
            hovertemplate="trial %{customdata[0]} (seed %{customdata[1]}): "
                          "%{y:.4f} at %{x:,.0f} examples/sec"))
    if front:
        points = done.iloc[front].sort_values("examples_per_sec")
        figure.add_trace(go.Scatter(x=points.examples_per_sec, y=points.test_acc,
                                    mode="lines", name="Pareto front",
                                    line={"color": "black", "dash": "dot"}))
    figure.update_layout(title="Test accuracy against training speed", height=420,
                         xaxis_title="examples/sec (training only)", yaxis_title="test accuracy",
                         **LAYOUT)
    return figure


def arm_bars(arms: list[ArmStats]) -> go.Figure:
    """Mean test accuracy per arm with its 95% interval, each seed's value as a dot."""
    done = [a for a in arms if a.test_acc.n]
    figure = go.Figure(go.Bar(
        x=[text(a.arm + (" (control)" if a.is_control else "")) for a in done],
        y=[a.test_acc.mean for a in done],
        error_y={"type": "data", "symmetric": False,
                 "array": [(a.test_acc.high - a.test_acc.mean) if a.test_acc.known else 0 for a in done],
                 "arrayminus": [(a.test_acc.mean - a.test_acc.low) if a.test_acc.known else 0
                                for a in done]},
        marker_color=["#7f7f7f" if a.is_control else COLORS[0] for a in done], name="mean"))
    figure.add_trace(go.Scatter(
        x=[text(a.arm + (" (control)" if a.is_control else "")) for a in done for _ in a.test_accs],
        y=[v for a in done for v in a.test_accs], mode="markers", name="seeds",
        marker={"color": "black", "size": 6}))
    low = min((v for a in done for v in a.test_accs), default=0.0)
    figure.update_layout(title="Test accuracy per arm (mean, 95% CI, each seed)", height=400,
                         yaxis_title="test accuracy", yaxis_range=[max(0.0, low - 0.05), 1.0],
                         **LAYOUT)
    return figure


def activation_maps(maps: dict[str, Any], title: str, *,
                    column_titles: list[str] | None = None, width: int = 1150) -> go.Figure:
    """Heatmaps: one row per label, one square cell per 2-D map (e.g. per channel).

    `maps` is {row label: list of 2-D arrays}. Labels stand left of their rows.
    """
    rows = list(maps)
    columns = max(len(v) for v in maps.values())
    label_width = 230
    cell = max(36, min(170, (width - label_width - 40) / columns))
    figure = make_subplots(rows=len(rows), cols=columns, horizontal_spacing=0.003,
                           vertical_spacing=min(0.02, 0.3 / len(rows)), column_titles=column_titles)
    for r, label in enumerate(rows, start=1):
        for c, channel in enumerate(maps[label], start=1):
            figure.add_trace(go.Heatmap(z=channel[::-1], colorscale="Viridis", showscale=False,
                                        hovertemplate=f"{label}, map {c - 1}: %{{z:.3f}}<extra></extra>"),
                             row=r, col=c)
        axis = figure.get_subplot(r, 1).yaxis
        figure.add_annotation(text=label, xref="paper", yref="paper", x=-0.005, xanchor="right",
                              y=sum(axis.domain) / 2, showarrow=False, font={"size": 11})
    figure.update_xaxes(showticklabels=False)
    figure.update_yaxes(showticklabels=False)
    figure.update_layout(title=title, width=width, height=int(cell * len(rows)) + 90,
                         template="plotly_white",
                         margin={"l": label_width, "r": 10, "t": 60, "b": 10})
    return figure
