"""The same database gives the same answers, text for text, as before the results layer.

tests/data/stored-studies.db holds six small studies (torch, real Fashion-MNIST and MNIST
subsets) run with lenet-lab at 33d1504, before the architecture change: the activation
grid, an improve search with its confirmation and parameter-count trade-off, mnist taking
improve's best, pooling with --until-decided, and, from tests/data/kernel-relu.toml and
search-relu.toml, a grid and a confirmed search whose control learns. Their weights were
dropped to keep the file small. tests/data/stored-answers.json is what that version
printed and chose for them (tests/data/record.py, run there), with the answers' text as the
method of issue 25 words it (2026-12-02: intervals paired by seed where arms share seeds,
else Welch's, said so; undecided comparisons say what their seeds could detect; a loss above
twice ln 10 reads as diverged: one arm, tanh at lr 0.9, from unstable; what a study spent
ends its answer as "Trained: ...", where it said "Budget: ..."; with several arms, each
interval at the level its decision needs, 95% together over the arms (Bonferroni), where
it was a single 95% interval beside a Holm-adjusted p). It changed no decision, key, label
or choice; the git history shows each changed line beside the old one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lenet_lab.results import arm_names, best_configuration, load_study, study_answer
from lenet_lab.store import Database

DATA = Path(__file__).parent / "data"
EXPECTED = json.loads((DATA / "stored-answers.json").read_text())
@pytest.fixture(scope="module")
def db(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stored")
    shutil.copy(DATA / "stored-studies.db", folder / "studies.db")
    with Database(f"sqlite:///{folder}/studies.db", read_only=True) as handle:
        yield handle


@pytest.mark.parametrize("name", sorted(EXPECTED["studies"]))
def test_every_answer_reads_as_before(db: Database, name: str) -> None:
    expected = EXPECTED["studies"][name]
    data = load_study(db, name)
    found = study_answer(data)
    assert found.headline == expected["headline"]
    assert found.verdicts == expected["verdicts"]
    assert found.one_line() == expected["one_line"]
    keys = {arm: [n.key, n.label] for arm, n in arm_names(data.results).items()}
    assert keys == expected["keys"]
    assert {n.label for n in arm_names(data.results, control="X").values()
            if n.key == "book"} == {"X"}


@pytest.mark.parametrize("sweep", sorted(EXPECTED["best_confirmed"]))
def test_the_best_confirmed_configuration_is_the_same(db: Database, sweep: str) -> None:
    subset = {"improve": 1000, "search-relu": 2000}[sweep]  # best_of takes the same subset
    study, label, values = best_configuration(db, sweep, engine="torch", subset=subset)
    assert best_configuration(db, sweep, engine="mxnet", subset=subset) is None
    assert best_configuration(db, sweep, engine="torch", subset=500) is None
    expected = EXPECTED["best_confirmed"][sweep]
    assert [study, label] == expected[:2]
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()} == expected[2]
