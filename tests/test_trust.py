"""Trust round four: what a hostile probe of the new surfaces found, each through the real
command or API, each failing on the code before it (2026-12-02)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import lenet_lab

def _one_line(done, says: str) -> None:
    assert done.returncode != 0 and done.stderr.startswith("Error: "), done.stderr
    assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize("option, value", [("--jobs", "²"), ("--jobs", "٣"), ("--fuse", "²"),
                                           ("--fuse", "٣")])
def test_digits_of_other_scripts_are_refused_before_anything_is_loaded(
        tmp_path: Path, option: str, value: str) -> None:
    done = lenet_lab("sweep", "pooling", option, value, "--plan",
                     cwd=tmp_path, LENET_LAB_DATA=str(tmp_path / "nowhere"))
    _one_line(done, f"{option} takes auto")  # not the missing data: checked before it
    assert not (tmp_path / "studies.db").exists()


@pytest.mark.parametrize("url, says", [
    ("sqlite:///studies.db/", "names a folder (it ends in /)"),
    ("sqlite:///studies.db#x", "has a '#' in its file name"),
    ("sqlite:///studies.db?timeout=abc", "has query arguments (timeout)"),
])
def test_a_sqlite_url_that_readers_and_writers_would_read_apart_is_refused(
        tmp_path: Path, url: str, says: str) -> None:
    _one_line(lenet_lab("studies", "--storage", url, cwd=tmp_path), says)  # one parser for all
    assert list(tmp_path.iterdir()) == []  # no file under either reading


def test_columns_0_still_prints_the_table(tmp_path: Path) -> None:
    done = lenet_lab("sweeps", cwd=tmp_path, COLUMNS="0")
    assert done.returncode == 0 and "pooling" in done.stdout and "improve" in done.stdout


@pytest.mark.parametrize("out, says", [("/proc/nope", "cannot write there"),
                                       ("/etc/hostname", "is a file, not a folder")])
def test_sweep_all_checks_its_report_folder_before_planning_or_training(
        tmp_path: Path, out: str, says: str) -> None:
    _one_line(lenet_lab("sweep", "all", "--plan", "--out", out, cwd=tmp_path), says)
    assert not (tmp_path / "studies.db").exists()


def test_a_grid_beyond_what_the_queue_serves_is_refused_with_its_size(tmp_path: Path) -> None:
    values = ", ".join(str(k) for k in range(1, 101))
    (tmp_path / "big.toml").write_text(f'title = "big"\n[space]\nbatch_size = [{values}, 256]\n'
                                       f'kernel_size = [3, 5, 7]\n')
    _one_line(lenet_lab("sweep", "big.toml", "--seeds", "10", "--plan", cwd=tmp_path),
              "this grid is 303 arms x 10 seed(s) = 3,030 trials, more than lenet-lab's "
              "queue serves well (2,000")
    assert not (tmp_path / "studies.db").exists()


@pytest.mark.slow
def test_an_unwritable_cache_folder_means_no_cache_not_a_crash(tmp_path: Path) -> None:
    done = lenet_lab("train", "--engine", "torch", "--epochs", "1", "--subset", "200",
                     cwd=tmp_path, XDG_CACHE_HOME="/proc/no-cache-here")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-2].startswith("loss ")


@pytest.mark.slow
def test_the_api_works_from_a_plain_script_without_a_main_guard(tmp_path: Path) -> None:
    """README's example as a script, run with `python script.py`: its helper worker does
    not run the script again (it would start processes of its own and fail)."""
    (tmp_path / "script.py").write_text(
        "import lenet_lab\n"
        "study = lenet_lab.run_sweep('pooling', engine='torch', subset=12000, epochs=2, "
        "seeds=2, jobs=2, progress=False)\n"
        "print('answer:', study.answer.one_line())\n")
    done = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("answer:") == 1 and "Traceback" not in done.stderr
    assert "bootstrapping" not in done.stderr and "workers stopped" not in done.stderr
    import sqlite3

    with sqlite3.connect(tmp_path / "studies.db") as conn:  # a helper did run trials
        assert conn.execute("SELECT count(DISTINCT pid) FROM lab_trials").fetchone()[0] == 2
