"""Downloading a dataset's four .gz files from the official mirrors (or $LENET_LAB_MIRROR)
into the cache, each checked against its SHA-256 before it takes its final name."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from lenet_lab.datasets import dataset_info
from lenet_lab.errors import DataError
from lenet_lab.urls import redact, safe_url

__all__ = ["download", "mirror_urls"]


def download(name: str, target: Path, *, mirrors: tuple[str, ...] | None = None,
             progress: Callable[[str, int, int], None] | None = None,
             timeout: float = 30.0) -> Path:
    """Fetch the four .gz files of `name` into `target`, verifying each SHA-256.

    A file appears under its final name only once complete and verified, so an
    interrupted download never leaves a half file that later looks valid.
    `progress(filename, bytes_done, bytes_total)` is called as bytes arrive.
    """
    mirrors = mirrors or mirror_urls(name)
    created = [p for p in (target, *target.parents) if not p.exists()]
    target.mkdir(parents=True, exist_ok=True)
    try:
        _download_files(name, target, mirrors, progress=progress, timeout=timeout)
    except BaseException:  # a failed download leaves no empty folders behind
        for folder in created:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    return target


def _download_files(name: str, target: Path, mirrors: tuple[str, ...], *,
                    progress: Callable[[str, int, int], None] | None, timeout: float) -> None:
    for filename, expected in dataset_info(name).sha256.items():
        final = target / filename
        if final.is_file() and _sha256(final) == expected:
            continue
        errors = []
        for base in mirrors:
            url = base.rstrip("/") + "/" + filename
            try:
                _fetch_verified(url, final, expected, progress=progress, timeout=timeout)
                break
            except DataError as exc:
                errors.append(str(exc))
        else:
            raise DataError("; ".join(errors))


def mirror_urls(name: str) -> tuple[str, ...]:
    own = os.environ.get("LENET_LAB_MIRROR")
    if own and not own.startswith(("http://", "https://")):
        raise DataError(f"LENET_LAB_MIRROR={safe_url(own)!r} is not an http(s) URL: unset it, or "
                        f"give a mirror serving <mirror>/<dataset>/<file>.gz, e.g. "
                        f"http://127.0.0.1:8000/")
    return (f"{own.rstrip('/')}/{name}/",) if own else dataset_info(name).mirrors


def _fetch_verified(url: str, final: Path, expected: str, *,
                    progress: Callable[[str, int, int], None] | None, timeout: float) -> None:
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(1 << 16):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(final.name, done, total)
        if digest.hexdigest() != expected:
            raise DataError(f"{safe_url(url)} has SHA-256 {digest.hexdigest()}, expected {expected}")
        os.replace(tmp, final)
    except (OSError, urllib.error.URLError) as exc:
        reason = redact(str(getattr(exc, "reason", exc)), url)
        raise DataError(f"cannot fetch {safe_url(url)} ({reason})") from None
    finally:
        tmp.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
