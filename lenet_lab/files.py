"""Files that lenet-lab writes: one safe name for any user string, written atomically.

Every output (report pages, exports, copies) is written under a temporary name in its
own folder and renamed into place, so a full disk or a kill leaves the previous file
whole.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import tempfile
from pathlib import Path

from lenet_lab.errors import LabError

__all__ = ["atomic_write", "check_output_folder", "output_folder", "slug"]


def slug(name: str, *, limit: int = 80) -> str:
    """A file-name part that is safe on every file system; distinct names stay distinct.

    Names that are already safe are kept as they are; others get a short hash of the
    original so that "a/b" and "a_b" do not collide. A leading dot (".", "..", ".x")
    would make a hidden file or a folder's own name, so it becomes "_".
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:limit]
    safe = "_" + safe[1:] if safe.startswith(".") else safe
    if safe == name and safe:
        return safe
    return f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def atomic_write(path: Path, data: str | bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and a rename.

    The temporary file is created like any other (the user's umask applies), not with
    mkstemp's owner-only mode, so reports and exports stay readable by others.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as out:
            out.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(temporary, path)
    except BaseException as exc:
        temporary.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # a full or read-only disk, ...
            raise LabError(f"cannot write {path} ({exc.strerror}); any earlier {path.name} is "
                           f"left as it was") from None
        raise
    return path


def check_output_folder(folder: str | Path, *, option: str = "--out") -> None:
    """That `folder` can take outputs, before hours of work: it is a folder or can be made
    in the nearest existing one above it, and a file can be written there (tried, and
    removed again: nothing is left behind)."""
    path = Path(folder).absolute()
    if path.exists() and not path.is_dir():
        raise LabError(f"{option} {folder} is a file, not a folder: give a folder")
    above = path if path.exists() else next(p for p in path.parents if p.exists())
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".lenet-lab-check-", dir=above))
    except OSError as exc:
        raise LabError(f"{option} {folder}: cannot write there ({exc.strerror} in {above}): "
                       f"give another --out") from None


def output_folder(folder: str | Path, *, create: bool, option: str = "--out") -> Path:
    """The folder outputs go to, checked (and created, with `create`) before any work."""
    path = Path(folder)
    try:
        if path.exists() and not path.is_dir():
            raise LabError(f"{option} {folder} is a file, not a folder: give a folder")
        if not path.exists():
            if not create:
                raise LabError(f"{option} {folder}: no such folder; create it first")
            path.mkdir(parents=True)
    except OSError as exc:  # a name too long, a read-only or full disk, ...
        raise LabError(f"{option} {str(folder)[:80]}: cannot use it as a folder "
                       f"({exc.strerror})") from None
    if not os.access(path, os.W_OK):
        raise LabError(f"{option} {folder}: the folder is not writable")
    return path

