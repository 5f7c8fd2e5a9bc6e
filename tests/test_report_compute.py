"""The numbers behind the report: pure functions, synthetic inputs."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from lenet_lab.report import compute


@pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281),
                                          (30, 2.0423), (1000, 1.9623)])
def test_t_quantile_matches_tables(df: float, expected: float) -> None:
    assert compute.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_t_quantile_is_symmetric_and_checks_input() -> None:
    assert compute.t_quantile(0.025, 5) == pytest.approx(-compute.t_quantile(0.975, 5))
    with pytest.raises(ValueError):
        compute.t_quantile(1.0, 5)


def test_mean_interval() -> None:
    interval = compute.mean_interval([0.80, 0.81, 0.82])
    assert interval.mean == pytest.approx(0.81) and interval.sd == pytest.approx(0.01)
    assert interval.high - interval.mean == pytest.approx(4.3027 * 0.01 / math.sqrt(3), abs=1e-6)
    single = compute.mean_interval([0.8])
    assert single.mean == 0.8 and not single.known
    assert compute.mean_interval([]).n == 0


def test_welch_difference() -> None:
    d = compute.difference([0.86, 0.87, 0.88], [0.80, 0.81, 0.82])
    # equal variances and sizes: df = 4, se = sqrt(2 * 0.01**2 / 3)
    assert d.mean == pytest.approx(0.06)
    assert d.high - d.mean == pytest.approx(2.7764 * math.sqrt(2e-4 / 3), abs=1e-5)
    assert not compute.difference([0.9], [0.8, 0.81]).known


def frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["trial", "arm", "is_control", "seed", "state", "test_acc",
                                       "train_acc", "train_loss", "examples_per_sec", "param_count",
                                       "epochs_done", "reason"])


RESULTS = frame([
    (0, "pooling=avg", 1, 0, "complete", 0.80, 0.82, 0.47, 4000, 61706, 10, None),
    (1, "pooling=avg", 1, 1, "complete", 0.81, 0.83, 0.46, 4100, 61706, 10, None),
    (2, "pooling=avg", 1, 2, "complete", 0.82, 0.84, 0.45, 4200, 61706, 10, None),
    (3, "pooling=max", 0, 0, "complete", 0.86, 0.87, 0.35, 3900, 61706, 10, None),
    (4, "pooling=max", 0, 1, "complete", 0.87, 0.88, 0.34, 3800, 61706, 10, None),
    (5, "pooling=max", 0, 2, "diverged", None, 0.10, None, 3700, 61706, 1, "diverged at epoch 1"),
    (6, "pooling=max", 0, 3, "complete", 0.88, 0.89, 0.33, 3850, 61706, 10, None),
])


def test_arm_stats_control_first_with_differences() -> None:
    arms = compute.arm_stats(RESULTS)
    assert [a.arm for a in arms] == ["pooling=avg", "pooling=max"]
    control, other = arms
    assert control.is_control and control.vs_control is None
    assert other.states == {"complete": 3, "diverged": 1}
    assert other.test_acc.mean == pytest.approx(0.87) and other.vs_control.mean == pytest.approx(0.06)
    assert other.examples_per_sec.mean == pytest.approx(3850)


def test_summary_rows_for_the_terminal() -> None:
    rows = compute.summary_rows(compute.arm_stats(RESULTS))
    assert rows[0] == ["pooling=avg (control)", "3", "0.8100", "0.0100", "0.8000", "0.8200",
                       "4,100", "learned", ""]
    assert rows[1][0] == "pooling=max" and rows[1][1] == "3" and rows[1][-1] == "1 diverged"


def test_learning_curves_mean_min_max_over_seeds() -> None:
    epochs = pd.DataFrame({"trial": [0, 0, 1, 1, 5], "epoch": [1, 2, 1, 2, 1],
                           "train_loss": [2.0, 1.0, 2.2, 1.2, float("nan")],
                           "train_acc": [0.3, 0.6, 0.5, 0.7, 0.1], "test_acc": [0.3, 0.6, 0.4, 0.8, 0.1]})
    curves = compute.learning_curves(epochs, RESULTS)
    avg = curves["pooling=avg"]
    assert list(avg.epoch) == [1, 2] and list(avg.seeds) == [2, 2]
    assert avg.test_acc_mean.tolist() == pytest.approx([0.35, 0.7])
    assert avg.train_loss_min.tolist() == [2.0, 1.0] and avg.train_loss_max.tolist() == [2.2, 1.2]
    assert "pooling=max" not in curves  # its only curve here is the diverged trial's


def test_pareto_front() -> None:
    points = [(100, 0.8), (50, 0.9), (100, 0.85), (200, 0.7), (150, 0.7)]
    assert compute.pareto_front(points) == [1, 2, 3]
    assert compute.pareto_front([]) == []


def test_failures_keep_the_reason() -> None:
    failed = compute.failures(RESULTS)
    assert failed.trial.tolist() == [5] and failed.reason.iloc[0] == "diverged at epoch 1"


def test_user_text_reaches_plotly_escaped() -> None:
    from lenet_lab.report import draw

    link = '<a href="#injected">click</a><b>x</b>'
    rows = RESULTS.replace({"arm": {"pooling=max": link}})
    arms = compute.arm_stats(rows)
    epochs = pd.DataFrame({"trial": [0, 3], "epoch": [1, 1], "train_loss": [1.0, 1.0],
                           "train_acc": [0.5, 0.5], "test_acc": [0.5, 0.5]})
    figures = [draw.arm_bars(arms), draw.learning_curves(compute.learning_curves(epochs, rows)),
               draw.accuracy_vs_speed(rows, [])]
    for figure in figures:
        shown = figure.to_json()
        assert "<a href" not in shown and "<b>" not in shown
        assert '&lt;a href=\\"#injected\\"&gt;click&lt;' in shown  # JSON escapes the quotes
