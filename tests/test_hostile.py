"""A hostile user: typos, absurd values, wrong files, secrets, read-only and full places.

Every case runs the real command line (`lenet_lab.cli.main`) against a copy of a real
SQLite study, and asserts: the exit status, exactly one line `Error: ...` naming what was
wrong, no traceback, no password anywhere in the output, and, where nothing should
change, that the database's bytes and the folder's files are unchanged.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from lenet_lab.cli import main
from tests.conftest import DATA_DIR, lenet_lab, privileged

PASSWORD = "pw-Sup3r-s3cret-4u"
STUDY = "pooling-torch-e2-n200"
PG = f"postgresql+psycopg://lab:{PASSWORD}@127.0.0.1:1/lab"  # nothing listens on port 1
MARKUP = '<a href="#injected">click</a><b>bold</b>'  # an arm name that plotly would render
HOSTILE_NAMES = ("\x1b]0;pwn\x07title", "line\nbreak", ".", "..")  # of studies


def _exports_never_collide(folder: Path) -> None:
    assert main(["export", "a_b", "--out", "."]) == 0
    csvs = sorted(p.name for p in folder.glob("*.csv"))
    assert len(csvs) == 2 and "a_b.csv" in csvs, csvs  # "a/b" got a name of its own


def _markup_is_text(folder: Path) -> None:
    page = next(p for p in (folder / "r").glob("study-markup*.html"))
    html = page.read_text()
    assert "#injected" in html and '<a href="#injected"' not in html
    assert '\\u003ca href' not in html.lower()  # not smuggled in through JSON escapes either


@dataclass
class Case:
    kind: str  # the class of mistake (issue 10's eight)
    args: list[str]
    message: str  # a part of the one error line
    code: int = 1
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # written into the folder first
    unchanged: bool = True  # the database and the folder's files stay as they were
    check: Callable[[Path], None] | None = None  # more to assert about the folder afterwards


def sweep_file(body: str, title: str = "t") -> dict[str, str]:
    return {"mine.toml": f'title = "{title}"\n{body}'}


def bad_sweep(message: str, body: str) -> Case:
    """`lenet-lab sweep mine.toml` on a file with one mistake: refused, exit 2."""
    return Case("boundary", ["sweep", "mine.toml", *QUICK], message, code=2, files=sweep_file(body))


QUICK = ["--engine", "torch", "--subset", "200", "--epochs", "1"]
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]")
CASES = {
    # 1. one error boundary: storage URLs on every command
    "studies-url-nonsense": Case("boundary", ["studies", "--storage", "nonsense"],
                                 "is not a database URL"),
    "report-port-not-a-number": Case("boundary", ["report", "--storage",
                                                  f"postgresql://lab:{PASSWORD}@h:abc/x"],
                                     "is not a database URL"),
    "export-in-memory": Case("boundary", ["export", STUDY, "--storage", "sqlite://"],
                             "an in-memory SQLite database vanishes"),
    "copy-target-nonsense": Case("boundary", ["copy", STUDY, "--to", "nonsense"],
                                 "--to 'nonsense' is not a database URL"),
    "copy-target-in-memory": Case("boundary", ["copy", STUDY, "--to", "sqlite:///:memory:"],
                                  "an in-memory SQLite database vanishes"),
    "activations-url": Case("boundary", ["activations", "--study", STUDY, "--trial", "0",
                                         "--storage", "nope://x"], "keeps studies in SQLite or "
                                                                   "PostgreSQL"),
    "sweep-env-storage": Case("boundary", ["sweep", "pooling", *QUICK],
                              "is not a database URL", env={"LENET_LAB_STORAGE": "::"}),
    # output paths
    "report-out-is-a-file": Case("boundary", ["report", "--out", "afile", "--no-activations"],
                                 "--out afile is a file, not a folder", files={"afile": "x"}),
    "export-out-is-a-file": Case("boundary", ["export", STUDY, "--out", "afile"],
                                 "--out afile is a file, not a folder", files={"afile": "x"}),
    "export-out-missing": Case("boundary", ["export", STUDY, "--out", "no/such/dir"],
                               "--out no/such/dir: no such folder"),
    "report-out-name-too-long": Case("boundary", ["report", "--out", "x" * 300,
                                                  "--no-activations"], "cannot use it as a folder (File name too long)"),
    "activations-out-is-a-file": Case("boundary", ["activations", "--study", STUDY, "--trial",
                                                   "0", "--out", "afile"],
                                      "--out afile is a file, not a folder", files={"afile": "x"}),
    # environment
    "grace-not-a-number": Case("boundary", ["sweep", "pooling", *QUICK],
                               "LENET_LAB_GRACE_S='abc' is not a positive number of seconds",
                               env={"LENET_LAB_GRACE_S": "abc"}),
    "grace-below-heartbeat": Case("boundary", ["sweep", "pooling", *QUICK],
                                  "must exceed the heartbeat interval",
                                  env={"LENET_LAB_GRACE_S": "3"}),
    "db-wait-negative": Case("boundary", ["sweep", "pooling", *QUICK],
                             "LENET_LAB_DB_WAIT_S='-1' is not a positive number",
                             env={"LENET_LAB_DB_WAIT_S": "-1"}),
    "mirror-not-a-url": Case("boundary", ["train", "--engine", "torch", "--data-dir", "."],
                             "LENET_LAB_MIRROR='ftp:/x' is not an http(s) URL",
                             env={"LENET_LAB_MIRROR": "ftp:/x", "LENET_LAB_DATA": ""}),
    # spec values the data contradicts, seeds beyond the RNG's range
    "too-few-classes": Case("boundary", ["train", "--engine", "torch", "--num-classes", "5"],
                            "num_classes 5 is below Fashion-MNIST's 10 classes", code=2),
    "seed-too-large": Case("boundary", ["train", "--engine", "torch", "--seed", str(2**40)],
                           "seed must be a whole number from 0 to 4294967295", code=2),
    "fixed-too-few-classes": bad_sweep("num_classes 5 is below Fashion-MNIST's 10 classes", '[fixed]\nnum_classes = 5\n'
                                                   '[space]\npooling = ["avg", "max"]\n'),
    # sweep files
    "infinite-bound": Case("boundary", ["sweep", "mine.toml", *QUICK], "high must be finite",
                           code=2, files=sweep_file('[run]\nsampler = "tpe"\ntrials = 2\n'
                                                    '[space]\nlr = { low = 0.01, high = inf }\n')),
    "fractional-int-step": bad_sweep("kernel_size takes whole numbers: step 0.5", '[run]\nsampler = "tpe"\ntrials = 2\n[space]\n'
                                                 'kernel_size = { low = 3, high = 7, step = 0.5 }\n'),
    "absurd-seeds": Case("boundary", ["sweep", "pooling", *QUICK, "--seeds", "100000"],
                         "with the command-line options: seeds must be at most 1,000, not 100,000", code=2),
    # option conflicts: one line before anything is written
    "epochs-in-the-space": Case("boundary", ["sweep", "training", "--epochs", "3", "--engine",
                                             "torch"],
                                "--epochs 3 conflicts with", code=2),
    "seeds-without-confirmation": Case(
        "boundary", ["sweep", "improve", "--seeds", "2", "--confirm", "0", "--engine", "torch"],
        "--seeds 2 on a search without confirmation only repeats the control arm", code=2),
    "confirm-on-a-grid": Case("boundary", ["sweep", "pooling", *QUICK, "--confirm", "2"],
                              "confirm is for searches", code=2),
    "until-decided-below-seeds": Case("boundary", ["sweep", "pooling", *QUICK, "--until-decided",
                                                   "1"],
                                      "must be at least the 3 seeds it starts with, not 1", code=2),
    "margin-absurd": Case("boundary", ["sweep", "pooling", *QUICK, "--until-decided",
                                       "--margin", "5"],
                          "margin must be a number between 0 and 1", code=2),
    "fuse-on-mxnet": Case("boundary", ["sweep", "pooling", "--fuse", "3", "--subset", "200"],
                          "--fuse 3 needs the torch engine (torch.func)", code=2),
    "fuse-nonsense": Case("boundary", ["sweep", "pooling", *QUICK, "--fuse", "lots"],
                          "--fuse takes auto, off or a number of trials from 1 to 256, not 'lots'",
                          code=2),
    "bench-fuse-nonsense": Case("boundary", ["bench", "--engine", "torch", "--fuse", "1,x"],
                                "--fuse takes whole numbers separated by commas", code=2),
    "bench-fuse-on-mxnet": Case("boundary", ["bench", "--fuse", "3", "--subset", "100"],
                                "bench --fuse times fused models, which only the torch engine "
                                "trains: add --engine torch", code=2),
    "run-and-space-epochs": bad_sweep("[run] epochs and [space] epochs conflict", '[run]\nepochs = 2\n'
                                      'sampler = "tpe"\ntrials = 2\n[space]\nepochs = [5, 10]\n'),
    "sampler-seed-range": bad_sweep("sampler_seed must be a whole number from 0 to 4294967295", '[run]\nsampler_seed = 99999999999\n'
                                                '[space]\npooling = ["avg", "max"]\n'),
    "deep-nesting": bad_sweep("[space] pooling: pooling must be one of avg, max, not [['avg']]", '[space]\npooling = [[["avg"]], "max"]\n'),
    "nested-too-deeply": Case("boundary", ["sweep", "mine.toml", *QUICK],
                              "mine.toml: nested too deeply to be a sweep file", code=2,
                              files={"mine.toml": "x = " + "[" * 100_000 + "]" * 100_000}),
    "arm-name-type": bad_sweep("[[arms]] #1 name must be text, not 5", '[[arms]]\nname = 5\npooling = "max"\n'),
    "duplicate-arms": bad_sweep("[[arms]] #2 is the same network as #1", '[[arms]]\npooling = "max"\n'
                                            '[[arms]]\npooling = "max"\nname = "again"\n'),
    "duplicate-arm-names": bad_sweep("[[arms]] #2 is named 'mine' as an arm before it",
                                     '[[arms]]\nname = "mine"\nkernel_size = 3\n'
                                     '[[arms]]\nname = "mine"\npooling = "max"\n'),
    "epochs-beyond-any-database": Case("boundary", ["sweep", "pooling", *QUICK[:-2], "--epochs",
                                                    "99999999999999999999"],
                                       "epochs must be at most 10,000", code=2),
    "lr-beyond-float32-in-a-file": bad_sweep("[fixed] lr: lr must be a number > 0 and at most "
                                             "1e+12, not 1e+39",
                                             '[fixed]\nlr = 1e39\n[space]\npooling = ["avg", "max"]\n'),
    "lr-beyond-float32": Case("boundary", ["train", *QUICK, "--lr", "1e308"],
                              "lr must be a number > 0 and at most 1e+12, not 1e+308", code=2),
    "rerun-trial-beyond-any-database": Case("boundary", ["rerun", "x", "99999999999999999999"],
                                            "Input should be less than or equal to 2147483647",
                                            code=2),
    "workers-without-launch": Case("boundary", ["sweep", "pooling", *QUICK, "--workers", "5"],
                                   "--workers is for --launch: add --launch slurm (or local)",
                                   code=2),
    "sbatch-without-launch": Case("boundary", ["sweep", "pooling", *QUICK, "--sbatch",
                                               "partition"],
                                  "--sbatch is for --launch: add --launch slurm", code=2),
    "run-and-fixed-epochs": bad_sweep("[run] epochs and [fixed] epochs conflict",
                                      '[run]\nepochs = 2\n[fixed]\nepochs = 3\n'
                                      '[space]\npooling = ["avg", "max"]\n'),
    "fixed-epochs-and-the-option": bad_sweep("--epochs 1 conflicts with", '[fixed]\nepochs = 3\n'
                                             '[space]\npooling = ["avg", "max"]\n'),
    "equal-as-numbers": bad_sweep("[space] lr lists a value twice", '[space]\nlr = [1, 1.0]\n'),
    "search-without-control": bad_sweep("[space] pooling must include the book's value 'avg'", '[run]\nsampler = "tpe"\ntrials = 2\n'
                                                    '[space]\npooling = ["max"]\n'),
    "not-toml": Case("boundary", ["sweep", "mine.toml", *QUICK], "not valid TOML", code=2,
                     files={"mine.toml": "\x00\x01 garbage = = ="}),
    "sweep-path-is-a-folder": Case("boundary", ["sweep", "adir.toml", *QUICK],
                                   "adir.toml is a folder, not a sweep file", code=2,
                                   files={"adir.toml/inner": "x"}),
    "jobs-too-many": Case("faults", ["sweep", "pooling", *QUICK, "--jobs", "5000"],
                          "--jobs 5000 is more workers than", code=2),
    # 2. secrets: every URL that reaches output is redacted
    "secret-unreachable-storage": Case("secrets", ["studies", "--storage", PG],
                                       "cannot use the database"),
    "secret-sweep-storage": Case("secrets", ["sweep", "pooling", *QUICK, "--storage", PG],
                                 "cannot use the database"),
    "secret-copy-target": Case("secrets", ["copy", STUDY, "--to", PG],
                               "cannot use the database"),
    "secret-bad-port": Case("secrets", ["export", STUDY, "--storage",
                                        f"postgresql://lab:{PASSWORD}@h:x1/db"],
                            "is not a database URL"),
    "secret-mirror": Case("secrets", ["train", "--engine", "torch", "--data-dir", "."],
                          "the download failed", env={
                              "LENET_LAB_MIRROR": f"http://lab:{PASSWORD}@127.0.0.1:1/",
                              "LENET_LAB_DATA": ""}),
    # 3. no side effects when failing or reading
    "export-unknown-study": Case("side effects", ["export", "nope"], "no study 'nope'"),
    "report-unknown-study": Case("side effects", ["report", "nope", "--no-activations"],
                                 "no study 'nope'"),
    "foreign-database": Case("side effects", ["sweep", "pooling", *QUICK, "--storage",
                                              "sqlite:///other.db"],
                             "other.db holds tables of another application (users)",
                             files={"other.db": "users"}),
    "foreign-database-read": Case("side effects", ["studies", "--storage", "sqlite:///other.db"],
                                  "other.db holds tables of another application (users)",
                                  files={"other.db": "users"}),
    "copy-onto-itself": Case("side effects", ["copy", STUDY, "--to", "sqlite:///studies.db"],
                             "already has a study 'pooling-torch-e2-n200'"),
    # 7. data: files that are not the official ones are named, not trained on
    "swapped-dataset": Case("data", ["train", "--engine", "torch", "--data-dir", "swapped"],
                            "swapped/fashion-mnist/train-images-idx3-ubyte.gz is not the official",
                            files={"swapped": "mnist-as-fashion"}),
    "edited-raw-file": Case("data", ["train", "--engine", "torch", "--data-dir", "edited"],
                            "edited/fashion-mnist/t10k-labels-idx1-ubyte is not the official",
                            files={"edited": "edited-raw"}),
    # 8. robust listing and reading
    "export-plain-optuna-study": Case("listing", ["export", "plain", "--out", "."],
                                      "study 'plain' in sqlite:///studies.db was made by Optuna"),
    "report-plain-optuna-study": Case("listing", ["report", "plain", "--no-activations"],
                                      "study 'plain' in sqlite:///studies.db was made by Optuna"),
    # 4. atomic outputs: two studies never export to the same file
    "export-names-never-collide": Case("atomic outputs", ["export", "a/b", "--out", "."],
                                       "rows -> ", code=0, unchanged=False,
                                       check=_exports_never_collide),
    # 6. plot text: an arm named with markup shows as text in every figure
    "arm-name-markup": Case("plot text", ["report", "markup-torch-e1-n200", "--out", "r"],
                            "wrote r/index.html", code=0, unchanged=False, check=_markup_is_text),
    "report-skips-plain-studies": Case("listing", ["report", "--no-activations", "--out", "r"],
                                       "wrote r/index.html", code=0, unchanged=False),
    "sweeps-with-a-broken-file": Case("listing", ["sweeps"], "/sweeps/broken.toml: not valid TOML",
                                      code=0,
                                      files={"sweeps/broken.toml": "title = "}),
    # round three (issue 20): databases that are not, or no longer, what they should be
    **{f"random-bytes-{args[0]}": Case("databases", [*args, "--storage", "sqlite:///junk.db"],
                                       "is not an SQLite database", files={"junk.db": "random"})
       for args in (["studies"], ["report", "--no-activations"], ["export", STUDY],
                    ["sweep", "pooling", *QUICK], ["dashboard", "--port", "1"])},
    "truncated-database": Case("databases", ["studies"], "the database file is damaged",
                               files={"studies.db": "truncate"}, unchanged=False),
    "text-where-numbers-belong": Case("databases", ["report", STUDY, "--no-activations"],
                                      "trial 0's test_acc holds 'abc' where a number belongs",
                                      files={"studies.db": "text-in-numbers"}, unchanged=False),
    "dropped-results-view": Case("databases", ["export", STUDY], "the database lacks lab_results: "
                                 "it was made by an older lenet-lab or by another program",
                                 files={"studies.db": "drop-view"}, unchanged=False),
    "dropped-weights-table": Case("databases", ["activations", "--study", STUDY, "--trial", "0"],
                                  "the database lacks lab_weights",
                                  files={"studies.db": "drop-weights"}, unchanged=False),
    "copy-into-a-missing-folder": Case("databases", ["copy", STUDY, "--to",
                                                     "sqlite:///missing/c.db"],
                                       "does not exist",
                                       check=lambda folder: _no_file(folder / "missing")),
    "storage-is-dev-null": Case("databases", ["sweep", "pooling", *QUICK, "--storage",
                                              "sqlite:////dev/null"],
                                "/dev/null is a device or special file, not a database file"),
    "storage-is-a-folder": Case("databases", ["studies", "--storage", "sqlite:///adir"],
                                "adir is a folder, not a database file",
                                files={"adir/inner": "x"}),
    "sweep-into-a-missing-folder": Case("databases", ["sweep", "pooling", *QUICK, "--storage",
                                                      "sqlite:///missing/s.db"], "does not exist"),
    # terminal text: what users named shows as text, never as control codes
    "escape-in-a-sweep": Case("terminal text", ["sweep", "mine.toml", *QUICK, "--seeds", "1",
                                                "--jobs", "1", "--storage", "sqlite:///t.db"],
                              "\\x1b[2J", code=0, unchanged=False, files=sweep_file(
                                  '[[arms]]\nname = "rtl\\u202eevil"\npooling = "max"\n'
                                  '[[arms]]\nname = "two\\nlines"\nkernel_size = 3\n',
                                  title="clear\\u001b[2Jscreen\\u001b]0;pwned\\u0007")),
    "quote-in-a-study-name": Case("terminal text", ["sweep", "pooling", *QUICK, "--seeds", "1",
                                                    "--jobs", "1", "--study", "it's; DROP",
                                                    "--storage", "sqlite:///q.db"],
                                  "query: pandas.read_sql(\"SELECT * FROM lab_results WHERE "
                                  "study = 'it''s; DROP'\", 'sqlite:///q.db')", code=0,
                                  unchanged=False),
    "escape-in-a-study-name": Case("terminal text", ["sweep", "pooling", *QUICK, "--seeds", "1",
                                                     "--jobs", "1", "--study", "evil\x1b[31mred",
                                                     "--storage", "sqlite:///e.db"],
                                   "evil\\x1b[31mred: test accuracy after the last epoch",
                                   code=0, unchanged=False),
    "hostile-study-names": Case("terminal text", ["studies"], "\\x1b]0;pwn\\x07", code=0,
                                check=lambda folder: None),
    "unknown-study-lists-names": Case("terminal text", ["export", "nope"], "\\x1b]0;pwn\\x07"),
    "nul-in-a-question": bad_sweep("question holds a NUL character", '[space]\npooling = ["max"]\n'
                                .replace("[space]", 'question = "a\\u0000b"\n[space]')),
    "fixed-and-varied": bad_sweep("[fixed] pooling is also varied by [space], so the arm called "
                                  "the book's network would not be it",
                                  '[fixed]\npooling = "max"\n[space]\npooling = ["avg", "max"]\n'),
    # smaller things
    "step-beyond-range": bad_sweep("step 5 is larger than the range 1 to 3",
                                   '[run]\nsampler = "tpe"\ntrials = 2\n[space]\n'
                                   'kernel_size = { low = 1, high = 3, step = 5 }\n'),
    "best-of-no-sweep": bad_sweep("best_of 'improv' is no sweep: did you mean improve?",
                                  '[[arms]]\nname = "x"\nbest_of = "improv"\npooling = "max"\n'),
    "best-of-itself": bad_sweep("best_of names this sweep itself",
                                '[[arms]]\nname = "x"\nbest_of = "mine"\npooling = "max"\n'),
    "bom-is-welcome": Case("smaller", ["sweep", "mine.toml", *QUICK, "--plan"], "study 'mine-",
                           code=0, files={"mine.toml": '\ufefftitle = "t"\n[space]\n'
                                                       'pooling = ["max"]\n'}),
    "inspect-a-giant": Case("smaller", ["inspect", "--engine", "torch", "--conv-channels",
                                        "100000"], "more than lenet-lab trains", code=2),
    "subset-too-small": Case("smaller", ["train", "--engine", "torch", "--subset", "5"],
                             "--subset 5 is too small", code=2),
    "activations-unknown-class": Case("smaller", ["activations", "--study", STUDY, "--trial",
                                                  "0", "--classes", "ufo"],
                                      "'ufo' is not a Fashion-MNIST class", code=2),
    "bench-fuse-zero": Case("smaller", ["bench", "--engine", "torch", "--fuse", "0"],
                            "bench --fuse takes trial counts of 1 or more, such as 1,3,6, not 0",
                            code=2),
    "data-dir-is-a-file": Case("smaller", ["train", "--engine", "torch", "--data-dir", "afile"],
                               "--data-dir afile is a file", files={"afile": "x"}),
    "dataset-folder-in-capitals": Case("smaller", ["train", "--engine", "torch", "--data-dir",
                                                   "caps"],
                                       "is named 'Fashion-MNIST': rename it fashion-mnist",
                                       env={"LENET_LAB_DATA": ""}, files={"caps": "capitals"}),
    "dataset-without-test-files": Case("smaller", ["train", "--engine", "torch", "--data-dir",
                                                   "half"],
                                       "lacks t10k-images-idx3-ubyte(.gz), "
                                       "t10k-labels-idx1-ubyte(.gz)",
                                       env={"LENET_LAB_DATA": ""}, files={"half": "train-only"}),
    "export-a-study-named-dot": Case("smaller", ["export", ".", "--out", "x"], "rows -> ",
                                     code=0, unchanged=False, files={"x/keep": ""},
                                     check=lambda folder: _not_hidden(folder / "x")),
}


def _no_file(path: Path) -> None:
    assert not path.exists()


def _not_hidden(folder: Path) -> None:
    written = sorted(p.name for p in folder.iterdir() if p.name != "keep")
    assert len(written) == 1 and not written[0].startswith("."), written


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database with a small real study (trained, with weights) and a plain Optuna one."""
    import optuna

    from lenet_lab import store
    from lenet_lab.sweep import plan_sweep, run_sweep
    from lenet_lab.sweep_file import load_sweep

    folder = tmp_path_factory.mktemp("lab")
    url = f"sqlite:///{folder}/studies.db"
    db = store.Database(url)
    sweep = load_sweep("pooling").with_run(engine="torch", epochs=2, seeds=1, subset=200)
    run_sweep(plan_sweep(sweep, db, device="cpu", study=STUDY))
    (folder / "markup.toml").write_text(f"title = 'names with markup'\n[[arms]]\n"
                                        f"name = '{MARKUP}'\npooling = 'max'\n")
    sweep = load_sweep(str(folder / "markup.toml")).with_run(engine="torch", epochs=1, seeds=1,
                                                              subset=200)
    run_sweep(plan_sweep(sweep, db, device="cpu", study="markup-torch-e1-n200"))
    for twin in ("a/b", "a_b", *HOSTILE_NAMES):  # names one careless rule would merge or
        store.copy_study(db, db, STUDY, twin)  # print raw
    db.close()
    plain = optuna.create_study(study_name="plain", storage=url)
    plain.optimize(lambda trial: trial.suggest_float("x", 0, 1) ** 2, n_trials=3)
    with sqlite3.connect(folder / "studies.db") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return folder / "studies.db"


def _digest(folder: Path) -> tuple[str, list[str]]:
    db = folder / "studies.db"
    return hashlib.sha256(db.read_bytes()).hexdigest(), sorted(  # (cache: the user's cache)
        str(p.relative_to(folder)) for p in folder.rglob("*")
        if not p.name.startswith("studies.db") and p.relative_to(folder).parts[0] != "cache")


def _write(folder: Path, name: str, content: str) -> None:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if content == "mnist-as-fashion":  # MNIST's files where Fashion-MNIST's should be
        shutil.copytree(DATA_DIR / "mnist", path / "fashion-mnist")
    elif content == "random":  # a file that is no database at all
        path.write_bytes(bytes(range(256)) * 64)
    elif content == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 3])
    elif content in ("text-in-numbers", "drop-view", "drop-weights"):
        with sqlite3.connect(path) as conn:
            conn.execute({"text-in-numbers": "UPDATE lab_trials SET test_acc = 'abc'",
                          "drop-view": "DROP VIEW lab_results",
                          "drop-weights": "DROP TABLE lab_weights"}[content])
    elif content in ("capitals", "train-only"):  # near misses of a dataset folder
        target = path / ("Fashion-MNIST" if content == "capitals" else "fashion-mnist")
        target.mkdir(parents=True)
        for source in (DATA_DIR / "fashion-mnist").iterdir():
            if content == "capitals" or source.name.startswith("train"):
                shutil.copy(source, target / source.name)
    elif content == "edited-raw":  # the real files, one of them unpacked and edited
        shutil.copytree(DATA_DIR / "fashion-mnist", path / "fashion-mnist")
        packed = path / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
        raw = bytearray(gzip.decompress(packed.read_bytes()))
        raw[100] = (raw[100] + 1) % 10
        packed.unlink()
        (path / "fashion-mnist" / "t10k-labels-idx1-ubyte").write_bytes(bytes(raw))
    elif name.endswith(".db"):  # a database of another application
        with sqlite3.connect(path) as conn:
            conn.execute(f"CREATE TABLE {content} (id INTEGER PRIMARY KEY, name TEXT)")
    else:
        path.write_text(content)


@pytest.mark.parametrize("name", list(CASES))
def test_hostile(name: str, lab: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 capsys: pytest.CaptureFixture) -> None:
    case = CASES[name]
    shutil.copy(lab, tmp_path / "studies.db")
    for file_name, content in case.files.items():
        _write(tmp_path, file_name, content)
    monkeypatch.chdir(tmp_path)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    before = _digest(tmp_path)
    code = main(case.args)
    out, err = capsys.readouterr()
    assert PASSWORD not in out + err
    assert "Traceback" not in out + err
    assert not RAW_CONTROL.search(out + err), (out, err)  # escapes, bidi marks shown as text
    assert code == case.code, (out, err)
    if case.code:
        assert err.startswith("Error: ") and err.count("\n") == 1, err
    assert case.message in (err if case.code else out + err), (out, err)
    if case.unchanged:
        assert _digest(tmp_path) == before
    if case.check:
        case.check(tmp_path)


def test_there_are_forty_cases_over_every_class() -> None:
    assert len(CASES) >= 40
    assert {case.kind for case in CASES.values()} == {
        "boundary", "secrets", "side effects", "atomic outputs", "faults", "plot text", "data",
        "listing", "databases", "terminal text", "smaller"}


@pytest.fixture
def read_only_folder(lab: Path, tmp_path: Path):
    """A folder nothing can be written into, holding a copy of the study database."""
    import subprocess

    folder = tmp_path / "ro"
    folder.mkdir()
    shutil.copy(lab, folder / "studies.db")
    privileged(["chattr", "+i", str(folder)], "the read-only folder test")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_database_in_a_read_only_folder_can_be_read(read_only_folder: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(OSError):  # really read-only, even for root
        (read_only_folder / "probe").write_text("x")
    url = f"sqlite:///{read_only_folder}/studies.db"
    before = hashlib.sha256((read_only_folder / "studies.db").read_bytes()).hexdigest()
    monkeypatch.chdir(tmp_path)
    for args in (["studies"], ["export", STUDY, "--out", "."],
                 ["report", STUDY, "--out", "out", "--no-activations"],
                 ["activations", "--study", STUDY, "--trial", "0", "--out", "out"],
                 ["copy", STUDY, "--to", f"sqlite:///{tmp_path}/copy.db"]):
        assert main([*args, "--storage", url]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert STUDY in out and (tmp_path / f"{STUDY}.csv").exists()
    assert (tmp_path / "out" / "index.html").exists() and (tmp_path / "out" / "activations.html").exists()
    assert sorted(p.name for p in read_only_folder.iterdir()) == ["studies.db"]
    assert hashlib.sha256((read_only_folder / "studies.db").read_bytes()).hexdigest() == before


def test_a_killed_copy_leaves_no_target_and_the_next_copy_cleans_up(lab: Path,
                                                                     tmp_path: Path) -> None:
    target = tmp_path / "copy.db"
    args = ["copy", STUDY, "--storage", f"sqlite:///{lab}", "--to", f"sqlite:///{target}"]
    process = lenet_lab(*args, cwd=tmp_path, wait=False)
    while process.poll() is None and not list(tmp_path.glob(".copy.db.*.tmp")):
        time.sleep(0.002)
    process.kill()
    _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL, f"the copy ended before it was killed: {stderr}"
    assert not target.exists() and list(tmp_path.glob(".copy.db.*.tmp"))
    assert lenet_lab(*args, cwd=tmp_path).returncode == 0
    assert target.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["copy.db"]
