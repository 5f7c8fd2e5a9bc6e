"""Output files: safe distinct names, atomic writes that keep the user's permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lenet_lab.errors import LabError
from lenet_lab.files import atomic_write, slug


def test_slug_keeps_safe_names_and_keeps_unsafe_ones_apart() -> None:
    assert slug("pooling-torch-e2-n500") == "pooling-torch-e2-n500"
    assert slug("a/b") != slug("a_b") and slug("a/b").startswith("a_b-")
    assert "/" not in slug("../../etc/passwd") and len(slug("x" * 500)) <= 89


def test_atomic_write_replaces_whole_and_follows_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "page.html"
    target.write_text("old")
    old_mask = os.umask(0o022)
    try:
        atomic_write(target, "new")
    finally:
        os.umask(old_mask)
    assert target.read_text() == "new" and list(tmp_path.iterdir()) == [target]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temporary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "export.csv"
    target.write_text("old")

    def full_disk(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(LabError, match=r"cannot write .*export.csv \(No space left on device\); "
                                       r"any earlier export.csv is left as it was"):
        atomic_write(target, "new")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
