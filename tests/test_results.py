"""The numbers behind the report: pure functions, synthetic inputs."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from lenet_lab.results import arms as results_arms
from lenet_lab.results import stats


@pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281),
                                          (30, 2.0423), (1000, 1.9623)])
def test_t_quantile_matches_tables(df: float, expected: float) -> None:
    assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_t_quantile_is_symmetric_and_checks_input() -> None:
    assert stats.t_quantile(0.025, 5) == pytest.approx(-stats.t_quantile(0.975, 5))
    with pytest.raises(ValueError):
        stats.t_quantile(1.0, 5)


def test_mean_interval() -> None:
    interval = stats.mean_interval([0.80, 0.81, 0.82])
    assert interval.mean == pytest.approx(0.81) and interval.sd == pytest.approx(0.01)
    assert interval.high - interval.mean == pytest.approx(4.3027 * 0.01 / math.sqrt(3), abs=1e-6)
    single = stats.mean_interval([0.8])
    assert single.mean == 0.8 and not single.known
    assert stats.mean_interval([]).n == 0


def test_welch_difference() -> None:
    d = stats.difference([0.86, 0.87, 0.88], [0.80, 0.81, 0.82])
    # equal variances and sizes: df = 4, se = sqrt(2 * 0.01**2 / 3)
    assert d.mean == pytest.approx(0.06)
    assert d.high - d.mean == pytest.approx(2.7764 * math.sqrt(2e-4 / 3), abs=1e-5)
    assert not stats.difference([0.9], [0.8, 0.81]).known


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
    arms = results_arms.arm_stats(RESULTS)
    assert [a.arm for a in arms] == ["pooling=avg", "pooling=max"]
    control, other = arms
    assert control.is_control and control.vs_control is None
    assert other.states == {"complete": 3, "diverged": 1}
    assert other.test_acc.mean == pytest.approx(0.87) and other.vs_control.mean == pytest.approx(0.06)
    assert other.examples_per_sec.mean == pytest.approx(3850)


def test_summary_rows_for_the_terminal() -> None:
    arms = results_arms.arm_stats(RESULTS)
    rows = results_arms.summary_rows(arms)
    assert rows[0] == ["book", "3", "-", "0.8100", "0.0100", "-", "4,100", "learned", ""]
    assert rows[1][0] == "A1" and rows[1][1] == "3" and rows[1][-1] == "1 diverged"
    assert results_arms.arm_legend(arms) == ["book  the book's network", "A1    pooling=max"]


def test_arm_keys_follow_first_trials_and_labels_keep_four_digits() -> None:
    rows = pd.DataFrame({
        "trial": [0, 1, 2, 3, 4], "arm": ["lr=0.0241001", "book", "lr=0.0241001", "x", "lr=0.5"],
        "is_control": [0, 1, 0, 0, None], "lr": [0.024100123456, 0.9, 0.024100123456, 0.9, 0.5],
        "seed": [0, 0, 1, 0, 0]})
    names = results_arms.arm_names(rows)
    assert {arm: n.key for arm, n in names.items()} == {
        "lr=0.0241001": "A1", "book": "book", "x": "A2", "lr=0.5": "A3"}
    assert names["lr=0.0241001"].label == "lr=0.0241" and not names["lr=0.0241001"].named
    assert names["x"].label == "x" and names["x"].named  # an [[arms]] name stays
    assert str(names["book"]) == "the book's network" and str(names["lr=0.5"]) == "A3 (lr=0.5)"


@pytest.mark.parametrize("value, text", [
    (0.019593896127160337, "0.01959"), (0.0241, "0.0241"), (0.1 + 0.2, "0.3"), (3412.3, "3,412"), (9999.7, "10,000"), (1e9, "1e+09"),
    (55062.2, "55,060"), (61706, "61,706"), (float("nan"), "-"), (None, "-"), ("adam", "adam")])
def test_numbers_as_text_have_four_significant_digits(value, text: str) -> None:
    assert results_arms.sig(value) == text


def test_shown_arms_and_a_shared_machine() -> None:
    arms = results_arms.arm_stats(RESULTS)
    assert [a.key for a in results_arms.shown_arms(arms, limit=0)] == ["book"]
    steady = RESULTS.assign(examples_per_sec=4000.0)
    assert not results_arms.shared_machine(steady)
    first = steady.index[steady.state == "complete"][0]
    assert results_arms.shared_machine(steady.assign(
        examples_per_sec=steady.examples_per_sec.where(steady.index != first, 3000.0)))


def test_learning_curves_mean_min_max_over_seeds() -> None:
    epochs = pd.DataFrame({"trial": [0, 0, 1, 1, 5], "epoch": [1, 2, 1, 2, 1],
                           "train_loss": [2.0, 1.0, 2.2, 1.2, float("nan")],
                           "train_acc": [0.3, 0.6, 0.5, 0.7, 0.1], "test_acc": [0.3, 0.6, 0.4, 0.8, 0.1]})
    curves = results_arms.learning_curves(epochs, RESULTS)
    avg = curves["pooling=avg"]
    assert list(avg.epoch) == [1, 2] and list(avg.seeds) == [2, 2]
    assert avg.test_acc_mean.tolist() == pytest.approx([0.35, 0.7])
    assert avg.train_loss_min.tolist() == [2.0, 1.0] and avg.train_loss_max.tolist() == [2.2, 1.2]
    assert "pooling=max" not in curves  # its only curve here is the diverged trial's


def test_pareto_front() -> None:
    points = [(100, 0.8), (50, 0.9), (100, 0.85), (200, 0.7), (150, 0.7)]
    assert stats.pareto_front(points) == [1, 2, 3]
    assert stats.pareto_front([]) == []


def test_failures_keep_the_reason() -> None:
    failed = results_arms.failures(RESULTS)
    assert failed.trial.tolist() == [5] and failed.reason.iloc[0] == "diverged at epoch 1"


def test_user_text_stays_out_of_plotly() -> None:
    from lenet_lab.report import draw

    link = '<a href="#injected">click</a><b>x</b>'
    rows = RESULTS.replace({"arm": {"pooling=max": link}})
    arms = results_arms.arm_stats(rows)
    colors = draw.arm_colors(arms)
    epochs = pd.DataFrame({"trial": [0, 3, 0, 3], "epoch": [1, 1, 2, 2],
                           "train_loss": [1.0, 1.0, 0.9, 0.9], "train_acc": [0.5, 0.5, 0.6, 0.6],
                           "test_acc": [0.5, 0.5, 0.6, 0.6]})
    figures = [draw.arm_bars(arms, colors, 0.1),
               draw.learning_curves(results_arms.learning_curves(epochs, rows), arms, colors),
               draw.accuracy_vs_speed(rows, arms, colors, [])]
    for figure in figures:
        shown = figure.to_json()
        assert "injected" not in shown and '"A1"' in shown  # figures name arms by key
    assert draw.text(link) == '&lt;a href="#injected"&gt;click&lt;/a&gt;&lt;b&gt;x&lt;/b&gt;'


def test_queued_trials_read_with_their_arm_and_values() -> None:
    import json

    from lenet_lab.store.queries import _with_queued_arms

    frame = pd.DataFrame({"trial": [0, 1], "arm": ["pooling=avg", None], "is_control": [1, None],
                          "stage": ["grid", None], "pooling": ["avg", None],
                          "state": ["complete", "waiting"]})
    queued = [(1, "arm", json.dumps("pooling=max")), (1, "control", "false"),
              (1, "stage", json.dumps("grid")),
              (1, "values", json.dumps(json.dumps({"pooling": "max"})))]
    filled = _with_queued_arms(frame, queued)
    assert filled.arm.tolist() == ["pooling=avg", "pooling=max"]
    assert filled.pooling.tolist() == ["avg", "max"] and filled.is_control.tolist() == [1, False]
    names = results_arms.arm_names(filled)
    assert names["pooling=max"].key == "A1" and names["pooling=max"].values == {"pooling": "max"}


def test_speed_conditions_say_how_speeds_were_measured() -> None:
    base = RESULTS.assign(workers=[1, 2, 2, 1, 2, 2, 1], threads=1, cpu_load=1.96)
    text = results_arms.speed_conditions(base)
    assert "with 1 to 2 trial(s) training at once on the machine and 1 thread(s) each" in text
    assert "mean load was 2" in text
    old = RESULTS.drop(columns=[c for c in ("workers", "threads", "cpu_load") if c in RESULTS])
    assert results_arms.speed_conditions(old) == ("Examples/sec counts training examples over "
                                                  "training time (evaluation excluded).")


def test_paired_difference_matches_scipys_paired_t() -> None:
    """Seeds shared by two arms: the interval and p-value of the per-seed differences, as
    scipy's paired t-test gives them."""
    from scipy.stats import ttest_rel

    a, b = [0.83, 0.845, 0.835], [0.80, 0.81, 0.82]  # differences 0.03, 0.035, 0.015
    d = stats.paired_difference(a, b)
    expected = ttest_rel(a, b)
    low, high = expected.confidence_interval(0.95)
    assert (d.mean, d.low, d.high) == pytest.approx((0.026667, low, high), abs=1e-6)
    assert stats.t_p(d) == pytest.approx(expected.pvalue)
    assert d.df == 2 and d.sd == pytest.approx(0.0060093, abs=1e-6)  # se of the mean difference
    # where seeds move both arms alike (their data order), pairing removes that common part
    book, other = [0.80, 0.83, 0.81], [0.82, 0.85, 0.828]
    assert stats.t_p(stats.paired_difference(other, book)) < 0.01 < 0.1 < \
        stats.welch_p(other, book)
    constant = stats.paired_difference([0.82, 0.83], [0.80, 0.81])
    assert (constant.low, constant.high, stats.t_p(constant)) == pytest.approx((0.02, 0.02, 0.0))
    assert not stats.paired_difference([0.8], [0.7]).known


def test_detectable_difference_reaches_the_stated_power() -> None:
    """80% power at alpha: for many degrees of freedom the normal approximation
    (z_0.975 + z_0.8) se = 2.8016 se; for few, a simulation of the t-test agrees."""
    import numpy as np
    from scipy import stats as scipy_stats

    assert stats.detectable(0.01, 10_000) == pytest.approx(2.8016 * 0.01, rel=1e-3)
    se, df = 0.005, 2
    effect = stats.detectable(se, df)
    # paired t with 3 seeds: sd of the differences = se * sqrt(3)
    rng = np.random.default_rng(0)
    draws = rng.normal(effect, se * math.sqrt(3), size=(200_000, 3))
    t = draws.mean(axis=1) / (draws.std(axis=1, ddof=1) / math.sqrt(3))
    found = np.mean(np.abs(t) > scipy_stats.t.ppf(0.975, df))
    assert found == pytest.approx(0.8, abs=0.005)
    assert stats.detectable(se, df, alpha=0.05 / 8) > effect  # alpha split over 8 arms
    assert math.isnan(stats.detectable(0.0, 2)) and math.isnan(stats.detectable(0.01, 0))


def test_seeds_to_detect_one_point() -> None:
    sd = 0.008  # of the per-seed differences

    def paired(n: int) -> tuple[float, float]:
        return sd / math.sqrt(n), n - 1.0

    n = stats.seeds_to_detect(0.01, paired)
    assert stats.detectable(*paired(n)) <= 0.01 < stats.detectable(*paired(n - 1))
    assert stats.seeds_to_detect(1e-6, paired, most=50) is None
