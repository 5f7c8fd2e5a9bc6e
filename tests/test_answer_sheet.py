"""docs/answers.md cannot drift from the code: every answer it quotes is recomputed from the
committed data (docs/answers/studies.db) with the answer code, word for word."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from lenet_lab.results import load_study, study_answer
from lenet_lab.store import Database, list_studies
from lenet_lab.sweep_file import load_sweeps
from tests.conftest import lenet_lab

DOCS = Path(__file__).parent.parent / "docs"
SHEET = (DOCS / "answers.md").read_text()
DATA = DOCS / "answers" / "studies.db"
QUOTE = re.compile(r"<!-- study: (\S+) -->\n((?:>.*\n)+)<!-- end -->")
QUOTED = {name: "\n".join(line[2:] for line in block.splitlines())
          for name, block in QUOTE.findall(SHEET)}
CONFUSION = re.compile(r"<!-- confusion: (\S+) -->\n((?:>.*\n)+)<!-- end -->")
CONFUSED = {name: [line[2:] for line in block.splitlines()]
            for name, block in CONFUSION.findall(SHEET)}


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    folder = tmp_path_factory.mktemp("answers")
    shutil.copy(DATA, folder / "studies.db")  # read where a stray write could do no harm
    with Database(f"sqlite:///{folder}/studies.db", read_only=True) as handle:
        yield handle


def test_the_sheet_quotes_every_exercise_from_the_committed_data(db: Database) -> None:
    stored = {row["study"]: row["sweep"] for row in list_studies(db)}
    assert set(QUOTED) <= set(stored), "a quoted study is not in docs/answers/studies.db"
    exercises = {sweep.name for sweep in load_sweeps()[0] if sweep.exercise}
    assert exercises == {stored[name] for name in QUOTED}  # exercises 1 to 9, each quoted
    # and each at its sweep file's full budget: the study's default name, no -quick, no -e10
    assert {stored[name] for name in QUOTED if name == f"{stored[name]}-torch"} == exercises
    assert DATA.stat().st_size <= 10e6


@pytest.mark.parametrize("name", sorted(QUOTED))
def test_every_quoted_answer_is_what_the_code_says(db: Database, name: str) -> None:
    assert str(study_answer(load_study(db, name))) == QUOTED[name]


def test_exercise_10_quotes_each_networks_confusion_as_the_code_counts_it(db: Database) -> None:
    """Exercise 10 measured: the counts quoted for the networks it draws are what the
    stored weights give on the test set, recomputed (a forward pass, no training)."""
    from lenet_lab.report.activations import study_confusions

    assert CONFUSED, "docs/answers.md quotes exercise 10's confusion counts"
    for name, lines in CONFUSED.items():
        assert [c.line() for c in study_confusions(db, load_study(db, name))] == lines


def test_pandas_reads_the_committed_data() -> None:
    rows = pd.read_sql("SELECT study, arm, state, test_acc FROM lab_results",
                       f"sqlite:///{DATA}")
    assert set(QUOTED) <= set(rows.study)
    assert (rows.state == "complete").sum() >= len(QUOTED) * 2


@pytest.mark.slow
def test_the_report_renders_all_ten_from_it(tmp_path: Path) -> None:
    shutil.copy(DATA, tmp_path / "studies.db")
    done = lenet_lab("report", "--storage", "sqlite:///studies.db", "--out", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    index = (tmp_path / "out" / "index.html").read_text()
    assert "not run yet" not in index
    for name in QUOTED:
        assert (tmp_path / "out" / f"study-{name}.html").exists(), name
    improve = next(name for name in QUOTED if name.startswith("improve-"))
    assert "conv1" in (tmp_path / "out" / f"study-{improve}.html").read_text()  # exercise 10's maps
