"""Outcome rules, comparisons and the answer sentence: pure functions, synthetic rows."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from lenet_lab.results import StudyData, answer, arms, stats
from lenet_lab.results.answer import Decision
from lenet_lab.results.outcomes import Outcome, arm_outcome, trial_outcome

LN10 = math.log(10)


@pytest.mark.parametrize("state, acc, loss, lowest, expected", [
    ("complete", 0.81, 0.47, 0.47, Outcome.LEARNED),
    ("complete", 0.10, 9.3, 9.3, Outcome.DIVERGED),  # no epochs: above the first epoch's 4 ln 10
    ("complete", 0.10, 4.6, 4.6, Outcome.AT_CHANCE),  # below 2 ln 10 = 4.605: stuck, not diverged
    ("complete", 0.100, LN10, 2.29, Outcome.AT_CHANCE),
    ("complete", 0.115, 2.25, 2.25, Outcome.AT_CHANCE),  # within 0.02, loss >= 90% of ln 10
    ("complete", 0.100, 2.74, 2.60, Outcome.AT_CHANCE),  # sigmoid at lr 0.9 after one epoch
    ("complete", 0.100, 1.50, 1.50, Outcome.LEARNED),  # fits its training set, so it learned
    ("complete", 0.125, 2.25, 2.25, Outcome.LEARNED),  # just off chance
    ("complete", 0.10, 25.0, 0.9, Outcome.DIVERGED),  # tanh at lr 0.9: climbed to 25
    ("complete", 0.60, 1.0, 0.4, Outcome.UNSTABLE),  # climbed, but stayed below 2 ln 10
    ("complete", 0.80, 0.12, 0.05, Outcome.LEARNED),  # > 2x its minimum, but only by 0.07
    ("complete", 0.80, 0.5, None, Outcome.LEARNED),  # no epochs: stability unknown
    ("complete", 0.10, float("inf"), 1.0, Outcome.DIVERGED),
    ("diverged", None, None, None, Outcome.DIVERGED),
    ("pruned", 0.5, 1.0, 1.0, None), ("failed", None, None, None, None),
    ("complete", None, None, None, None),
])
def test_trial_outcome(state, acc, loss, lowest, expected) -> None:
    assert trial_outcome(state=state, test_acc=acc, final_loss=loss, min_loss=lowest,
                         classes=10) is expected


def test_diverged_at_the_first_epoch_or_the_last() -> None:
    """An epoch's loss above 2 ln 10 (4 ln 10 at the first epoch, whose mean includes the
    untrained network's) is diverged, even when the run ends back near ln 10, as a sigmoid
    search trial of 2026-11-28 did (above 4.6 for four epochs, at chance at its last)."""
    from lenet_lab.train import blew_up

    assert blew_up(25.5, 1, 10) and blew_up(4.89, 2, 10) and blew_up(float("nan"), 3, 10)
    assert not blew_up(5.0, 1, 10)  # a first epoch of two batches: the untrained loss
    assert not blew_up(4.6, 2, 10) and blew_up(1.5, 2, 2)  # 2 ln 2 = 1.39
    first = trial_outcome(state="complete", test_acc=0.1, final_loss=2.31, min_loss=2.30,
                          blew_up=True, classes=10)
    stuck = trial_outcome(state="complete", test_acc=0.1, final_loss=2.31, min_loss=2.30,
                          classes=10)
    assert (first, stuck) == (Outcome.DIVERGED, Outcome.AT_CHANCE)


def test_chance_depends_on_the_number_of_classes() -> None:
    assert trial_outcome(state="complete", test_acc=0.5, final_loss=math.log(2), min_loss=0.69,
                         classes=2) is Outcome.AT_CHANCE
    assert trial_outcome(state="complete", test_acc=0.5, final_loss=math.log(2), min_loss=0.69,
                         classes=10) is Outcome.LEARNED


def test_arm_outcome_counts_and_severity() -> None:
    assert arm_outcome([Outcome.LEARNED] * 3).describe() == "learned in every seed"
    mixed = arm_outcome([Outcome.LEARNED, Outcome.AT_CHANCE, Outcome.AT_CHANCE, None])
    assert (mixed.outcome, mixed.describe()) == (Outcome.AT_CHANCE, "at chance in 2 of 3 seeds")
    assert mixed.short() == "at chance 2/3" and arm_outcome([Outcome.LEARNED]).short() == "learned"
    assert not mixed.learned
    tie = arm_outcome([Outcome.AT_CHANCE, Outcome.DIVERGED, Outcome.LEARNED])
    assert tie.outcome is Outcome.DIVERGED  # equal counts: the more severe
    assert arm_outcome([None]).outcome is None and arm_outcome([]).describe() == "no result yet"
    assert arm_outcome([Outcome.LEARNED]).describe() == "learned"


def test_welch_p_edges() -> None:
    assert stats.welch_p([0.8, 0.81, 0.82], [0.8, 0.81, 0.82]) == pytest.approx(1.0)
    assert stats.welch_p([0.1, 0.1], [0.1, 0.1]) == 1.0  # zero variance, same mean
    assert stats.welch_p([0.2, 0.2], [0.1, 0.1]) == 0.0  # zero variance, different means
    assert math.isnan(stats.welch_p([0.8], [0.7, 0.71]))
    assert stats.welch_p([0.86, 0.87, 0.88], [0.80, 0.81, 0.82]) < 0.01
    from scipy.stats import ttest_ind

    a, b = [0.86, 0.87, 0.885, 0.9], [0.80, 0.81, 0.82]
    assert stats.welch_p(a, b) == pytest.approx(ttest_ind(a, b, equal_var=False).pvalue)


def rows(by_arm: dict[str, list], *, loss: float = 0.5, epochs: int = 10,
         subset: int | None = None, stage: str = "grid") -> pd.DataFrame:
    """lab_results-like rows: the first arm is the control; None test_acc = diverged."""
    out = []
    for k, (arm, values) in enumerate(by_arm.items()):
        for seed, acc in enumerate(values):
            out.append({"trial": len(out), "arm": arm, "is_control": k == 0, "seed": seed,
                        "state": "complete" if acc is not None else "diverged",
                        "test_acc": acc, "train_acc": acc, "param_count": 61706,
                        "train_loss": (LN10 if acc is not None and acc < 0.12 else loss)
                        if acc is not None else None,
                        "examples_per_sec": 4000.0, "epochs_done": epochs, "epochs": epochs,
                        "subset": subset, "dataset": "fashion-mnist", "engine": "torch",
                        "device": "cpu", "num_classes": 10, "lr": 0.9, "stage": stage,
                        "reason": None})
    return pd.DataFrame(out)


def study_answer(frame: pd.DataFrame, *, settings: dict | None = None,
                 attrs: dict | None = None) -> answer.Answer:
    """The answer for synthetic rows, as results.study_answer reads a stored study."""
    meta = {"settings": json.dumps(settings)} if settings else {}
    return answer.study_answer(StudyData("synthetic", meta, frame, pd.DataFrame(), attrs or {}))


def headline(frame: pd.DataFrame, **kwargs) -> str:
    return study_answer(frame, **kwargs).headline


def test_at_chance_says_did_not_learn_with_what_it_spent() -> None:
    text = headline(rows({"book": [0.1, 0.1], "pooling=max": [0.1, 0.1]}, epochs=2, subset=2000))
    assert text.startswith("Nothing learned with this much training. The book's network did not learn: "
                           "it stays at chance")
    assert "after 2 epochs of 2,000 examples; at lr 0.9 it needs more steps" in text
    assert "noise" not in text and "-0.000" not in text and "beats" not in text
    assert text.endswith("Trained: 2 epochs of 2,000 examples, 2 seeds per arm, torch on cpu.")


def test_a_tie_names_no_winner() -> None:
    text = headline(rows({"book": [0.8, 0.8], "pooling=max": [0.8, 0.8]}))
    assert "No arm beats the book's network: A1 (pooling=max) matches it exactly" in text
    found = study_answer(rows({"book": [0.8, 0.8], "pooling=max": [0.8, 0.8]}))
    assert found.leader.decision is Decision.TIE


def test_zero_variance_difference_is_decided_not_noise() -> None:
    found = study_answer(rows({"book": [0.80, 0.80], "max": [0.82, 0.82]}))
    assert found.leader.decision is Decision.BETTER and "noise" not in found.headline
    assert "+0.020, 95% CI [+0.020, +0.020]" in found.headline


def test_better_worse_undecided_equivalent_one_seed() -> None:
    book = [0.80, 0.81, 0.82]
    cases = {(0.86, 0.87, 0.88): Decision.BETTER, (0.70, 0.71, 0.72): Decision.WORSE,
             (0.79, 0.83, 0.81): Decision.UNDECIDED, (0.8101, 0.8099, 0.8100): Decision.UNDECIDED,
             (0.85,): Decision.ONE_SEED}
    for values, decision in cases.items():
        found = study_answer(rows({"book": book, "other": list(values)}))
        assert found.leader.decision is decision, values
    near = [0.8100, 0.8101, 0.8102]
    found = study_answer(rows({"book": near, "other": [0.8102, 0.8101, 0.8103]}))
    assert found.leader.decision is Decision.EQUIVALENT
    assert "by more than ±0.005" in found.headline
    undecided = headline(rows({"book": book, "other": [0.79, 0.83, 0.81]}))
    assert "cannot be told apart with 3 seeds" in undecided and "--until-decided" in undecided


def test_many_arms_can_withhold_a_difference_one_test_would_call() -> None:
    book, lucky = [0.80, 0.81, 0.82], [0.83, 0.845, 0.86]
    alone = study_answer(rows({"book": book, "lucky": lucky}))
    assert alone.leader.decision is Decision.BETTER and alone.leader.p_adjusted < 0.05
    assert "95% CI" in alone.headline and "together" not in alone.headline
    many = {"book": book, "lucky": lucky, **{f"a{i}": [0.80, 0.81, 0.82] for i in range(8)}}
    found = study_answer(rows(many))
    assert found.leader.arm.arm == "lucky" and found.leader.decision is not Decision.BETTER
    assert "99.4% CI" in found.headline and "; 95% together over 9 arms, adjusted p = " in \
        found.headline
    assert found.leader.difference.low < 0 < alone.leader.difference.low


def test_a_decision_is_what_its_interval_shows() -> None:
    """Better or worse exactly when the interval quoted beside it excludes 0, whatever the
    number of arms and looks (the reading claims only what its interval supports)."""
    rng = np.random.default_rng(0)
    seen = set()
    for case in range(60):
        n_arms, seeds = int(rng.integers(1, 6)), int(rng.integers(2, 6))
        arms_ = {"book": list(0.8 + rng.normal(0, 0.01, seeds))}
        for i in range(n_arms):
            arms_[f"a{i}"] = list(0.8 + rng.normal(rng.choice([0, 0.01, 0.03]), 0.01, seeds))
        n_looks = int(rng.integers(1, 4))
        for c in answer.compare(arms.arm_stats(rows(arms_)), n_looks=n_looks):
            d = c.difference
            assert c.level == pytest.approx(1 - 0.05 / (n_arms * n_looks))
            excludes = d.low > 0 or d.high < 0
            assert (c.decision in (Decision.BETTER, Decision.WORSE)) == excludes, (case, c)
            seen.add(c.decision)
    assert {Decision.BETTER, Decision.UNDECIDED} <= seen


def test_arms_that_did_not_learn_are_named_not_compared() -> None:
    found = study_answer(rows({"book": [0.80, 0.81], "relu": [0.85, 0.86],
                                      "tanh, lr=9": [None, None], "flat": [0.1, 0.1]}))
    assert [c.arm.arm for c in found.comparisons] == ["relu"]
    assert "2 arms did not learn with this much training" in found.headline
    verdicts = " | ".join(found.verdicts)
    assert "(tanh, lr=9) diverged in every seed: its training loss blew up (NaN" in verdicts
    assert "(flat) did not learn: it stays at chance in every seed (test accuracy 0.100)" in verdicts


def test_arms_still_running_are_not_called_unlearned() -> None:
    frame = rows({"book": [0.80, 0.81], "max": [0.85, 0.86], "slow": [0.5]})
    frame.loc[frame.arm == "slow", ["state", "test_acc"]] = ["running", None]
    found = study_answer(frame)
    assert "did not learn" not in found.headline
    assert "A2 (slow) has no result yet" in " ".join(found.verdicts)


def test_control_at_chance_other_arm_learned() -> None:
    text = headline(rows({"book": [0.1, 0.1], "relu": [0.7, 0.72]}, epochs=1, subset=500))
    assert "The book's network did not learn" in text and "A1 (relu) did learn (0.710 ± 0.014)" in text


def test_sequential_looks_widen_the_interval() -> None:
    frame = rows({"book": [0.80, 0.81, 0.82], "max": [0.825, 0.845, 0.835]})
    once = study_answer(frame)
    until = {"max_seeds": 10, "start_seeds": 3, "margin": 0.005}
    looked = study_answer(frame, attrs={"until_decided": until})
    assert answer.looks(until) == 8 and looked.leader.looks == 8
    assert once.leader.decision is Decision.BETTER
    assert looked.leader.decision is Decision.UNDECIDED  # 8 looks: each at alpha / 8
    assert looked.leader.difference.low < once.leader.difference.low
    assert "99.4% CI" in looked.headline and "95% together over 8 looks" in looked.headline
    assert "Until decided: 3 of at most 10 seeds so far, undecided." in looked.headline
    done = study_answer(rows({"book": [0.80] * 3, "max": [0.80] * 3}),
                               attrs={"until_decided": until})
    assert "stopped at 3 seeds because every seed gave the same accuracy" in done.headline


def test_search_answers_from_confirmation_only() -> None:
    frame = pd.concat([rows({"book": [0.80, 0.81]}, stage="control"),
                       rows({"x": [0.95, 0.95], "y": [0.7]}, stage="search").assign(
                           is_control=False, trial=[10, 13, 14]),
                       rows({"x": [0.84, 0.85]}, stage="confirm").assign(is_control=False,
                                                                          trial=[11, 12])])
    found = study_answer(frame, settings={"sampler": "tpe"})
    assert found.leader.arm.test_acc.n == 2  # the lucky search trial is left out
    assert found.leader.arm.test_acc.mean == pytest.approx(0.845)
    assert "Best of 2 configurations searched (3 trials), confirmed with 2 seeds each" \
        in found.headline
    unconfirmed = study_answer(frame[frame.stage != "confirm"], settings={"sampler": "tpe"})
    assert "not confirmed: rerun with --confirm 3" in unconfirmed.headline
    found = pd.concat([frame, rows({"z": [0.5], "w": [0.5]}, stage="search")], ignore_index=True)
    cut = found.index[-2:]  # asked, then their worker died or Ctrl-C: searched again
    found.loc[cut, ["is_control", "state", "test_acc"]] = [False, "failed", None]
    found.loc[cut, "trial"] = [15, 16]
    found.loc[cut, "reason"] = ["worker stopped (pid 7 on here) before the trial finished; its "
                                "arm x seed runs again", "interrupted"]
    found = study_answer(found, settings={"sampler": "tpe"})
    assert "Best of 2 configurations searched (3 trials; 2 more stopped before finishing, not " \
           "counted), confirmed" in found.headline


def test_trade_off_names_the_best_small_network() -> None:
    frame = rows({"book": [0.80, 0.81], "big": [0.90, 0.91], "small": [0.85, 0.86]})
    frame.loc[frame.arm == "big", "param_count"] = 500_000
    frame.loc[frame.arm == "small", "param_count"] = 100_000
    text = headline(frame, settings={"objectives": ["test_acc", "param_count"]})
    assert "Best overall: A1, 0.905 ± 0.007 with 500,000 parameters" in text
    assert "best at most twice the book's 61,706 parameters: A2, 0.855" in text


def test_what_was_spent_lists_epoch_ranges_and_seed_ranges() -> None:
    frame = rows({"book": [0.80, 0.81, 0.82], "a": [0.8, 0.81]})
    frame.loc[frame.arm == "a", "epochs"] = 20
    spent = answer.spent(frame, arms.arm_stats(frame))
    assert spent.describe() == "10-20 epochs of 60,000 examples, 2-3 seeds per arm, torch on cpu"


def test_one_line_for_the_index() -> None:
    better = study_answer(rows({"book": [0.80, 0.81, 0.79], "pooling=max": [0.85, 0.87, 0.84]}))
    # paired by seed: differences 0.05, 0.06, 0.05; mean 0.0533 +- t(0.975, 2) 0.00333
    assert better.one_line() == ("A1 (pooling=max): +0.053 [+0.039, +0.068] vs the book's network, "
                                 "better (10 epochs of 60,000 examples, 3 seeds per arm, torch on cpu)")
    chance = study_answer(rows({"book": [0.1, 0.1], "relu": [0.7, 0.72]}, epochs=1, subset=500))
    assert chance.one_line().startswith("the book's network did not learn: it stays at chance")
    assert "; A1 (relu) learned: 0.710 ± 0.014 (1 epoch of 500 examples" in chance.one_line()
    looks = study_answer(
        rows({"book": [0.80, 0.81, 0.79], "pooling=max": [0.85, 0.86, 0.84]}),
        attrs={"until_decided": {"max_seeds": 10, "start_seeds": 3, "margin": 0.005}})
    assert "] (99.4% CI) vs the book's network" in looks.one_line()
    assert study_answer(rows({})).one_line().startswith("no finished trials")


def test_the_leading_effect_is_the_leaders_interval_or_why_there_is_none() -> None:
    better = study_answer(rows({"book": [0.80, 0.81, 0.79], "pooling=max": [0.85, 0.86, 0.84]}))
    effect = better.leading_effect()
    lead = better.leader.difference
    assert (effect.mean, effect.low, effect.high) == (lead.mean, lead.low, lead.high)
    assert effect.decision == "better" and effect.arm == str(better.leader.arm)
    assert effect.level == pytest.approx(0.95)
    chance = study_answer(rows({"book": [0.1, 0.1], "relu": [0.7, 0.72]}, epochs=1)).leading_effect()
    assert chance.mean is None and chance.arm == "the book's network"
    assert chance.decision == "did not learn (at chance in every seed)"  # never an effect
    alone = study_answer(rows({"book": [0.8, 0.81], "sigmoid": [0.1, 0.1]})).leading_effect()
    assert (alone.arm, alone.decision, alone.mean) == ("every other arm", "did not learn", None)
    one = study_answer(rows({"book": [0.8], "max": [0.82]})).leading_effect()
    assert one.decision == "one seed" and one.mean == pytest.approx(0.02) and one.low is None
