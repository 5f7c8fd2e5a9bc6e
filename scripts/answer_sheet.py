"""The answer sheet's data and quotes, from a database that ran `lenet-lab sweep all`.

    python scripts/answer_sheet.py SOURCE.db docs/answers/studies.db > quotes.md

Copies SOURCE into the target keeping every row but the weights, which only exercise 10
needs (the book's network and the best network of the improve study: results.best_network),
and prints, for each exercise's study, the lines docs/answers.md quotes: the answer as
the tool gives it (between `<!-- study: NAME -->` and `<!-- end -->`, which
tests/test_answer_sheet.py recomputes), its one-line form, its trials and its wall time;
and for exercise 10, each drawn network's confusion between pullover, coat and shirt
(between `<!-- confusion: NAME -->` and `<!-- end -->`, recomputed by the test too).
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from lenet_lab.report.activations import study_confusions
from lenet_lab.results import best_network, load_study, study_answer
from lenet_lab.store import Database, list_studies

EXERCISE_10 = "improve"  # its study's best network is exercise 10's second network


def kept_trials(db: Database) -> set[int]:
    """trial_ids whose weights exercise 10 draws."""
    keep = set()
    for row in list_studies(db):
        if row["sweep"] == EXERCISE_10:
            numbers = {trial for trial, _, _ in best_network(load_study(db, row["study"]))}
            with sqlite3.connect(db.sqlite_path) as conn:
                keep |= {tid for (tid,) in conn.execute(
                    "SELECT trial_id FROM lab_trials WHERE study_name = ? AND number IN (%s)"
                    % ",".join("?" * len(numbers)), (row["study"], *numbers))}
    return keep


def wall_time(path: str, study: str) -> str:
    with sqlite3.connect(path) as conn:
        start, end = conn.execute(
            "SELECT min(julianday(t.datetime_start)), max(julianday(t.datetime_complete)) "
            "FROM trials t JOIN studies s USING (study_id) WHERE s.study_name = ?",
            (study,)).fetchone()
    seconds = round((end - start) * 24 * 3600)
    return f"{seconds // 60} min {seconds % 60:02d} s"


def main() -> None:
    source, target = sys.argv[1], Path(sys.argv[2])
    with Database(f"sqlite:///{source}", read_only=True) as db:
        keep = kept_trials(db)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    with sqlite3.connect(target) as conn:
        conn.execute("DELETE FROM lab_weights WHERE trial_id NOT IN (%s)"
                     % ",".join(map(str, keep or {-1})))
        conn.commit()
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("VACUUM")
    print(f"<!-- {target}: {target.stat().st_size / 1e6:.1f} MB, weights of trials "
          f"{sorted(keep)} -->\n")
    with Database(f"sqlite:///{target}", read_only=True) as db:
        studies = [(row, load_study(db, row["study"])) for row in list_studies(db)]
        for row, data in sorted(studies, key=lambda s: (s[1].meta.get("exercise") or 99,
                                                          s[0]["study"])):
            found = study_answer(data)
            print(f"## {data.meta.get('exercise')}. {data.title} ({row['study']})\n")
            quote = "\n".join(f"> {line}" for line in str(found).splitlines())
            print(f"<!-- study: {row['study']} -->\n{quote}\n<!-- end -->\n")
            print(f"one line: {found.one_line()}")
            trials = sum(row["states"].values())
            print(f"trials: {trials} trials, {wall_time(str(target), row['study'])}\n")
            if row["sweep"] == EXERCISE_10:
                lines = "\n".join(f"> {c.line()}" for c in study_confusions(db, data))
                print(f"<!-- confusion: {row['study']} -->\n{lines}\n<!-- end -->\n")


if __name__ == "__main__":
    main()
