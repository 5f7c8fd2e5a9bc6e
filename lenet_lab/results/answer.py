"""The answer to an exercise, in one paragraph that `lenet-lab sweep` and the report share.

Steps, each a pure function of a study's rows (study.StudyData), fixed before any
number is looked at:
1. every arm gets an outcome (outcomes.py); only arms that learned are compared;
2. each learned arm's test accuracy is compared with the control's (compare.py: paired
   by seed where they share seeds, else Welch; alpha split over the m arms and
   `--until-decided`'s L looks (intervals at 1 - alpha / (m L), Bonferroni), so neither
   many arms nor adding seeds until something shows can manufacture a difference);
3. the decision: better or worse (the interval excludes 0), equivalent (the interval lies
   inside +-MARGIN), a tie (every seed equal), undecided (saying what its seeds could
   have detected), or one seed (no interval);
4. the sentence: the leading arm (the best by validation accuracy: `arms.ranked`)
   against the book's network, what did not learn, the search, its confirmation and
   its compute-matched control, and what it spent (the training), always.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from lenet_lab.results.spent import Spent, spent
from lenet_lab.results.arms import (BOOK, MATCHED, ArmStats, arm_names, arm_stats, best_learned,
                                    shares_seeds, sig, small_limit, versus)
from lenet_lab.results.compare import (ALPHA, MARGIN, Comparison, Decision, compare, kind, looks,
                                       signed)
from lenet_lab.results.outcomes import Outcome
from lenet_lab.results.stats import Interval
from lenet_lab.results.study import StudyData, cut_short
from lenet_lab.spec import SPEC_FIELDS
from lenet_lab.fields import field_value
from lenet_lab.status import Status

__all__ = ["ALPHA", "MARGIN", "Answer", "Comparison", "Decision", "Effect", "Spent", "compare",
           "looks", "seeds_to_add", "spent", "study_answer"]

SPEC_DEFAULTS = {f.name: f.default for f in SPEC_FIELDS.values()}


@dataclass(frozen=True)
class Effect:
    """A study's answer at a glance: its leading arm's difference from the book's network
    with its interval, or why there is none (`mean` None)."""

    arm: str  # the leader's key and label, or what did not learn
    decision: str  # better, worse, equivalent, tie, undecided, one seed; or the outcome
    mean: float | None = None
    low: float | None = None
    high: float | None = None
    level: float = 1 - ALPHA  # of the interval (widened for several arms and looks)
    paired: bool = False  # the interval is of per-seed differences (else Welch's)
    detectable: float | None = None  # undecided: the smallest difference its seeds would find


@dataclass
class Answer:
    headline: str
    verdicts: list[str] = field(default_factory=list)  # one per arm but the control
    arms: list[ArmStats] = field(default_factory=list)  # the compared arms, control first
    comparisons: list[Comparison] = field(default_factory=list)

    spent: Spent | None = None
    control_name: str = BOOK  # the book's network, or what [fixed] made of it

    @property
    def leader(self) -> Comparison | None:
        return self.comparisons[0] if self.comparisons else None

    def __str__(self) -> str:
        """The paragraph and one line per arm, as `lenet-lab sweep` ends."""
        return "\n".join([self.headline, *(f"- {line}" for line in self.verdicts)])

    def _repr_html_(self) -> str:
        """The same in a notebook, every name escaped (as the report's pages do)."""
        items = "".join(f"<li>{html.escape(line)}</li>" for line in self.verdicts)
        return (f'<div class="lenet-lab-answer"><p><b>{html.escape(self.headline)}</b></p>'
                f"{f'<ul>{items}</ul>' if items else ''}</div>")

    def leading_effect(self) -> Effect:
        """The leader's difference from the control; or, when the control or
        every other arm did not learn, which and how (never an effect)."""
        control = next((a for a in self.arms if a.is_control), None)
        if control is None or control.outcome.outcome is None:
            return Effect(self.control_name, "no result yet")
        if not control.outcome.learned:
            return Effect(self.control_name, f"did not learn ({control.outcome.describe()})")
        lead = self.leader
        if lead is None:
            return Effect("every other arm", "did not learn")
        d = lead.difference
        known = d.known
        detectable = lead.detectable if lead.decision is Decision.UNDECIDED and \
            not math.isnan(lead.detectable) else None
        return Effect(str(lead.arm), lead.decision.value, d.mean, d.low if known else None,
                      d.high if known else None, lead.level, lead.paired,
                      detectable)

    def one_line(self) -> str:
        """The index's line: the leader's effect with its interval and verdict, or what
        did not learn, and what it spent."""
        control = next((a for a in self.arms if a.is_control), None)
        spent = f" ({self.spent.describe()})" if self.spent and self.spent.seeds[1] else ""
        if control is None or control.outcome.outcome is None:
            return f"no finished trials of {self.control_name} yet{spent}"
        if not control.outcome.learned:
            best = best_learned(self.arms)
            return _not_learned(control, self.control_name) + (
                f"; {best} learned: {_acc(best)}" if best else "") + spent
        lead = self.leader
        if lead is None:
            return f"no other arm learned; {self.control_name} {_acc(control)}{spent}"
        d = lead.difference
        level = f" ({100 * lead.level:.3g}% CI)" if lead.family() else ""
        effect = signed(d.mean) + (f" [{signed(d.low)}, {signed(d.high)}]{level}"
                                    if d.known else "")
        return f"{lead.arm}: {effect} vs {self.control_name}, {lead.decision.value}{spent}"


def control_name(fixed: dict[str, Any]) -> str:
    """How answers name the control: the book's network, with what the sweep file's
    [fixed] changed of it (the dataset aside: on MNIST it is still the book's network)."""
    changed = {k: v for k, v in sorted(fixed.items()) if k not in ("dataset", "num_classes")
               and v != SPEC_DEFAULTS.get(k)}
    return BOOK + ("" if not changed else " with " + ", ".join(
        f"{k}={sig(field_value(k, v))}" for k, v in changed.items()))


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _acc(arm: ArmStats) -> str:
    i = arm.test_acc
    return f"{i.mean:.3f}" + (f" ± {i.sd:.3f}" if i.known else "")


def _not_learned(arm: ArmStats, the: str) -> str:
    if set(arm.states) == {Status.INFEASIBLE}:
        return f"{the} cannot be built on this data (infeasible: see the trials' reasons)"
    o = arm.outcome
    seeds = f" {o.seeds}" if o.seeds else ""
    accuracy = f" (test accuracy {arm.test_acc.mean:.3f})" if arm.test_acc.n else ""
    return {Outcome.AT_CHANCE: f"{the} did not learn: it stays at chance{seeds}{accuracy}",
            Outcome.DIVERGED: f"{the} diverged{seeds}: its training loss blew up (NaN, or over "
                              f"twice a uniform guess's)",
            Outcome.UNSTABLE: f"{the} is unstable{seeds}: its final loss is far above its "
                              f"lowest{accuracy}"}.get(o.outcome, f"{the} has no result yet")


def study_answer(data: StudyData) -> Answer:
    """The answer for one study: its lab_results rows, its per-epoch rows (for
    stability), its settings (sampler, objectives) and its Optuna user attributes
    (until_decided, arm_sources)."""
    results, epochs, settings, attrs = data.results, data.epochs, data.settings, data.attrs
    if not len(results):
        return Answer("No trials yet.")
    search = settings.get("sampler", "grid") != "grid"
    stage = results.stage if "stage" in results else pd.Series(None, index=results.index)
    confirmed = search and bool((stage == "confirm").any())
    compared = results[stage != "search"] if confirmed else results
    book = control_name(settings.get("fixed", {}))
    arms = arm_stats(compared, epochs, names=arm_names(results, control=book))
    until = attrs.get("until_decided")
    margin = (until or {}).get("margin", MARGIN)
    comparisons = compare(arms, n_looks=looks(until), margin=margin)
    trained = spent(compared, arms)
    answer = Answer(_headline(arms, comparisons, trained, margin, book), arms=arms,
                    comparisons=comparisons, spent=trained, control_name=book)
    answer.verdicts = [_verdict(a, comparisons, margin, book) for a in arms if not a.is_control]
    extra = [_search_note(results, stage, confirmed)] if search else []
    if settings.get("small") or "param_count" in settings.get("objectives", []):
        extra.append(_trade_off(arms))
    extra.append(_matched_note(answer))
    # (databases from earlier versions hold the source's values with all their digits)
    extra += [f"{name} is {re.sub(r'[0-9]*[.][0-9]{5,}', lambda m: sig(float(m[0])), source)}."
              for name, source in attrs.get("arm_sources", {}).items()]
    if until:
        extra.append(_until_note(answer, until))
    if trained.seeds[1]:  # nothing was spent before a trial finished
        extra.append(f"Trained: {trained.describe()}.")
    answer.headline = " ".join([answer.headline, *(x for x in extra if x)])
    return answer


def _headline(arms: list[ArmStats], comparisons: list[Comparison], spent: Spent,
              margin: float, book: str) -> str:
    control = next((a for a in arms if a.is_control), None)
    finished = [a for a in arms if a.outcome.outcome is not None]
    if not finished:
        return "No finished trials yet."
    if control is None or control.outcome.outcome is None:
        return f"{_capital(book)} (the control arm) has no finished trial yet: nothing to compare."
    learned = [a for a in arms if not a.is_control and a.outcome.learned]
    if not control.outcome.learned:
        head = _not_learned(control, _capital(book)) + f" after {spent.training()}"
        if control.outcome.outcome is Outcome.AT_CHANCE:
            head += (f"; at lr {_lr(control)} it needs more steps: rerun with more --epochs "
                     f"or without --subset")
        if not learned:
            return f"Nothing learned with this much training. {head}."
        best = best_learned(arms)
        return (f"{head}. {best} did learn ({_acc(best)}): with this much training that only says "
                f"it learns sooner.")
    missing = len([a for a in arms if not a.is_control and a.outcome.outcome is not None
                   and not a.outcome.learned])
    tail = f" {missing} arm{'s' * (missing != 1)} did not learn with this much training (see each arm)." \
        if missing else ""
    if not comparisons:
        return f"No other arm learned with this much training; {book}: {_acc(control)}.{tail}"
    lead = comparisons[0]
    arm, accuracies = lead.arm, f"{_acc(lead.arm)} vs {_acc(control)} for {book}"
    n = control.test_acc.n
    text = {
        Decision.BETTER: f"{arm} beats {book}: {accuracies} ({lead.interval()}).",
        Decision.WORSE: f"No arm beats {book}: the best on validation, {arm}, is worse: "
                        f"{accuracies} ({lead.interval()}).",
        Decision.EQUIVALENT: f"No arm differs from {book} by more than "
                             f"±{margin:g}: the best, {arm}, {accuracies} ({lead.interval()}).",
        Decision.TIE: f"No arm beats {book}: {arm} matches it exactly "
                      f"({control.test_acc.mean:.3f} in every seed).",
        Decision.UNDECIDED: f"{arm} and {book} cannot be told apart with {n} "
                            f"seeds: {accuracies} ({lead.interval()}): {lead.could_detect()}; "
                            f"rerun with "
                            f"{'a larger --until-decided MAX' if lead.looks > 1 else '--until-decided'}"
                            f" to add seeds until it is decided.",
        Decision.ONE_SEED: f"{arm}: {accuracies}, from one seed, which gives no interval: "
                           f"rerun with --seeds 3.",
    }[lead.decision]
    return text + tail


def _lr(arm: ArmStats) -> str:
    return sig(arm.lr) if arm.lr is not None else "?"


def _verdict(arm: ArmStats, comparisons: list[Comparison], margin: float, book: str) -> str:
    if not arm.outcome.learned:
        return _not_learned(arm, str(arm))
    found = next((c for c in comparisons if c.arm is arm), None)
    if found is None:
        return f"{arm}: {_acc(arm)} ({book} did not learn: no comparison)"
    words = {Decision.BETTER: "better than the control", Decision.WORSE: "worse than the control",
             Decision.EQUIVALENT: f"within ±{margin:g} of the control",
             Decision.TIE: "the same as the control in every seed",
             Decision.UNDECIDED: "cannot be told from the control with the seeds run",
             Decision.ONE_SEED: "one seed: no interval"}[found.decision]
    detail = "" if found.decision in (Decision.TIE, Decision.ONE_SEED) else f" ({found.interval()})"
    if found.decision is Decision.UNDECIDED and found.could_detect():
        detail += f"; {found.could_detect()}"
    return f"{arm}: {_acc(arm)}: {words}{detail}"


def _search_note(results: pd.DataFrame, stage: pd.Series, confirmed: bool) -> str:
    trials = results[stage == "search"]
    # Trials interrupted or whose worker died are not counted: others ran in their place.
    lost = [cut_short(state, reason) for state, reason in zip(trials.state, trials.reason)]
    trials = trials[[not x for x in lost]]
    # A sampler may draw one configuration twice.
    notes = [f"{len(trials)} trials"] if trials.arm.nunique() < len(trials) else []
    notes += [f"{sum(lost)} more stopped before finishing, not counted"] if any(lost) else []
    searched = f"{trials.arm.nunique()} configurations searched" + \
        (f" ({'; '.join(notes)})" if notes else "")
    if confirmed:
        confirm = results[stage == "confirm"]
        seeds = confirm.groupby("arm").size()
        pending = int(confirm.state.isin([Status.WAITING, Status.RUNNING]).sum())
        note = (f"Best of {searched}, confirmed with {int(seeds.max())} seeds each "
                f"({len(seeds)} configuration{'s' * (len(seeds) != 1)}).")
        return note + (f" Confirmation still running: {pending} trials to go." if pending else "")
    return (f"{searched[0].upper()}{searched[1:]}, one seed each, not confirmed: rerun "
            f"with --confirm 3 to rerun the best with seeds.")


def _matched_note(answer: Answer) -> str:
    """How much of a search winner's gain is compute and how much the recipe: the control
    rerun at the winner's epochs and batch size (stage `matched`) against the control, and
    the winner against that rerun, each paired by seed."""
    matched = next((c for c in answer.comparisons if c.arm.stage == MATCHED), None)
    lead = answer.leader
    if matched is None or lead is None or lead is matched:
        return ""
    rest = versus(lead.arm, matched.arm)
    return (f"Compute-matched: {answer.control_name} trained with the winner's {matched.arm.arm} "
            f"({matched.arm.key}) reaches {_acc(matched.arm)}; of {lead.arm.key}'s "
            f"{signed(lead.difference.mean)} over {answer.control_name}, "
            f"{signed(matched.difference.mean)} {_ci(matched.difference)} comes with that "
            f"compute ({matched.arm.key} vs the control, {kind(matched.paired)}) and "
            f"{signed(rest.mean)} {_ci(rest)} with the rest of the recipe "
            f"({lead.arm.key} vs {matched.arm.key}, {kind(shares_seeds(lead.arm, matched.arm))}; "
            f"95% CIs).")


def _ci(d: Interval) -> str:
    return f"[{signed(d.low)}, {signed(d.high)}]" if d.known else "(no interval)"


def _trade_off(arms: list[ArmStats]) -> str:
    control = next((a for a in arms if a.is_control), None)
    learned = [a for a in arms if a.outcome.learned and a.param_count is not None]
    if control is None or control.param_count is None or not learned:
        return ""
    limit = small_limit(control.param_count)
    best = best_learned(learned, with_control=True)
    small = [a for a in learned if a.param_count <= limit]
    # keys only: the sentence before and the verdicts say what each arm is
    text = f"Best overall: {best.key}, {_acc(best)} with {best.param_count:,} parameters"
    if not small:
        return text + f"; none of those compared is at most {limit:,} parameters."
    lean = best_learned(small, with_control=True)
    return (text + f"; best at most twice the book's {control.param_count:,} parameters: "
                   f"{lean.key}, {_acc(lean)} with {lean.param_count:,} parameters.")


def _until_note(answer: Answer, until: dict[str, Any]) -> str:
    lead = answer.leader
    control = next((a for a in answer.arms if a.is_control), None)
    seeds = control.test_acc.n if control else 0
    if lead is not None and lead.decision.decided:
        why = {Decision.EQUIVALENT: f"the interval lies inside ±{until['margin']:g}",
               Decision.TIE: "every seed gave the same accuracy"}.get(
            lead.decision, "the interval excludes 0")
        return f"Until decided: stopped at {seeds} seeds because {why}."
    if seeds >= until["max_seeds"]:
        return f"Until decided: reached the maximum of {until['max_seeds']} seeds undecided."
    return f"Until decided: {seeds} of at most {until['max_seeds']} seeds so far, undecided."


def seeds_to_add(answer: Answer, most: int) -> list[str]:
    """`--until-decided`: the arms that get one more seed, or none when the answer is
    decided or the control and the leading arm have `most` seeds. The two are the book's
    network and the arm that leads it; they are brought to the same number of seeds, then
    grow together."""
    lead = answer.leader
    if lead is None or lead.decision.decided:
        return []
    control = next(a for a in answer.arms if a.is_control)
    counts = {control.arm: control.test_acc.n, lead.arm.arm: lead.arm.test_acc.n}
    target = max(counts.values()) if len(set(counts.values())) > 1 else min(counts.values()) + 1
    return [arm for arm, n in counts.items() if n < min(target, most)]
