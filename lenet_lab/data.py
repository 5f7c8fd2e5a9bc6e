"""Fashion-MNIST and MNIST: locate, download (SHA-256 checked), parse IDX, subset.

A dataset lives in a folder named after it (`fashion-mnist/`, `mnist/`) holding the four
IDX files, gzipped or not. Folders searched, in order:

1. `data_dir` (the `--data-dir` option), then `$LENET_LAB_DATA`;
2. the cache, `~/.cache/lenet-lab/` (`$XDG_CACHE_HOME/lenet-lab/` where that is set);
3. Debian's package paths, `/usr/share/datasets/` (`apt-get install dataset-fashion-mnist`);
4. failing those, the files are downloaded from the official mirrors into the cache,
   each checked against its SHA-256 and moved into place only when complete.
   `$LENET_LAB_MIRROR` replaces the official mirrors with one of your own that serves
   `<mirror>/<dataset>/<file>.gz` (a local copy; the tests point it at loopback).

Images become float32 in [0, 1] of shape (N, 1, 28, 28), as the book's ToTensor gives;
labels become int32.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from lenet_lab.errors import DataError
from lenet_lab.urls import redact, safe_url

__all__ = ["Dataset", "DatasetInfo", "DATASET_INFO", "download", "find_dataset", "load_dataset",
           "parse_idx", "search_dirs", "stratified_subset"]

SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801  # unsigned bytes, 3 dims / 1 dim
IMAGE_SIDE = 28


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    mirrors: tuple[str, ...]  # base URLs holding the four .gz files
    sha256: dict[str, str]  # of each .gz file as the mirrors serve it
    raw_sha256: dict[str, str]  # of each file's content, unpacked (the IDX bytes)
    classes: tuple[str, ...]
    sizes: dict[str, int]  # examples per split


DATASET_INFO = {
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        title="Fashion-MNIST",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        sha256={
            "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
            "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
            "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
            "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        },
        raw_sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        classes=("t-shirt", "trouser", "pullover", "dress", "coat",
                 "sandal", "shirt", "sneaker", "bag", "ankle boot"),
        sizes={"train": 60000, "test": 10000},
    ),
    "mnist": DatasetInfo(
        name="mnist",
        title="MNIST",
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        sha256={
            "train-images-idx3-ubyte.gz": "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
            "train-labels-idx1-ubyte.gz": "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
            "t10k-images-idx3-ubyte.gz": "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
            "t10k-labels-idx1-ubyte.gz": "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
        },
        raw_sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        classes=tuple(str(digit) for digit in range(10)),
        sizes={"train": 60000, "test": 10000},
    ),
}
DEBIAN_DIR = Path("/usr/share/datasets")


@dataclass(frozen=True)
class Dataset:
    """Images (N, 1, 28, 28) float32 in [0, 1] and labels (N,) int32, for both splits."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: Path  # the folder the files came from

    @property
    def classes(self) -> tuple[str, ...]:
        return DATASET_INFO[self.name].classes

    def subset(self, n: int, *, seed: int = 0) -> Dataset:
        """n training and min(n, test size) test examples, stratified by class."""
        if n < len(DATASET_INFO[self.name].classes):
            raise DataError(f"--subset {n} is too small: use at least one example per class "
                            f"({len(self.classes)})")
        train = stratified_subset(self.train_labels, n, seed=seed)
        test = stratified_subset(self.test_labels, min(n, len(self.test_labels)), seed=seed)
        return Dataset(self.name, self.train_images[train], self.train_labels[train],
                       self.test_images[test], self.test_labels[test], self.source)


def _info(name: str) -> DatasetInfo:
    try:
        return DATASET_INFO[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}: use one of {', '.join(DATASET_INFO)}") from None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lenet-lab"


def search_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders that may hold `<dataset>/`, in the order they are searched."""
    dirs = [Path(d).expanduser() for d in (data_dir, os.environ.get("LENET_LAB_DATA")) if d]
    return [*dirs, cache_dir(), DEBIAN_DIR]


def _split_files(folder: Path, split: str) -> tuple[Path, Path] | None:
    found = []
    for stem in SPLITS[split]:
        candidates = [folder / f"{stem}.gz", folder / stem]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            return None
        found.append(path)
    return found[0], found[1]


def find_dataset(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first searched folder holding all four files of `name`, or None."""
    _info(name)
    for root in search_dirs(data_dir):
        folder = root / name
        if all(_split_files(folder, split) for split in SPLITS):
            return folder
    return None


def _read(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path} is corrupt or truncated ({exc}): delete it and fetch it again") from None


def parse_idx(raw: bytes, *, source: str | os.PathLike, expect_magic: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes; errors name `source`."""
    def fail(why: str) -> DataError:
        return DataError(f"{source} is not a valid IDX file: {why}; delete it and fetch it again")

    if len(raw) < 4:
        raise fail(f"{len(raw)} bytes, too short for a header")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expect_magic:
        raise fail(f"magic number {magic:#010x}, expected {expect_magic:#010x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise fail(f"{len(raw)} bytes, too short for a {ndim}-dimensional header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise fail(f"header says {'x'.join(map(str, dims))} ({expected} bytes) but the file "
                   f"has {len(raw)} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _load_split(name: str, folder: Path, split: str, *,
                verify: bool) -> tuple[np.ndarray, np.ndarray]:
    info = _info(name)
    files = _split_files(folder, split)
    if files is None:
        raise DataError(f"{folder} lacks the {split} files of {info.title}")
    image_path, label_path = files
    image_bytes, label_bytes = _read(image_path), _read(label_path)
    images = parse_idx(image_bytes, source=image_path, expect_magic=IMAGE_MAGIC)
    labels = parse_idx(label_bytes, source=label_path, expect_magic=LABEL_MAGIC)
    if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataError(f"{image_path} holds {images.shape[1]}x{images.shape[2]} images, "
                        f"expected 28x28: is it really {info.title}?")
    if len(images) != len(labels):
        raise DataError(f"{image_path} has {len(images)} images but {label_path} has "
                        f"{len(labels)} labels: the two files do not belong together")
    if len(labels) and labels.max() >= len(info.classes):
        raise DataError(f"{label_path} has label {labels.max()}, but {info.title} has "
                        f"{len(info.classes)} classes")
    for path, raw in ((image_path, image_bytes), (label_path, label_bytes)) if verify else ():
        _check_official(info, path, raw)
    return images, labels


def _check_official(info: DatasetInfo, path: Path, raw: bytes) -> None:
    """A swapped or edited file is named, not trained on (gzipped or not, the content counts)."""
    stem = path.name.removesuffix(".gz")
    digest = hashlib.sha256(raw).hexdigest()
    if digest != info.raw_sha256[stem]:
        raise DataError(f"{path} is not the official {info.title} file {stem} (its content's "
                        f"SHA-256 is {digest[:16]}..., expected {info.raw_sha256[stem][:16]}...): "
                        f"replace it with the official file, or delete it to download it again")


def load_dataset(name: str = "fashion-mnist", *, data_dir: str | os.PathLike | None = None,
                 download_missing: bool = True, verify: bool = True,
                 progress: Callable[[str, int, int], None] | None = None) -> Dataset:
    """Find (or download into the cache) and parse a dataset.

    Every file's content is checked against the official SHA-256; `verify=False` is for
    tests of the parser on synthetic files only.
    """
    info = _info(name)
    folder = find_dataset(name, data_dir)
    if folder is None:
        looked = ", ".join(str(d / name) for d in search_dirs(data_dir))
        if not download_missing:
            raise DataError(f"{info.title} not found (looked in {looked}); "
                            f"set --data-dir or LENET_LAB_DATA to a folder holding {name}/")
        try:
            folder = download(name, cache_dir() / name, progress=progress)
        except DataError as exc:
            raise DataError(
                f"{info.title} not found (looked in {looked}) and the download failed: {exc}. "
                f"Put the four .gz files from {safe_url(_mirrors(name)[0])} into {cache_dir() / name}/ "
                f"or point --data-dir / LENET_LAB_DATA at a folder holding {name}/") from None
    cached = _parsed(name, folder) if verify else None
    if cached is not None and cached.is_file():
        with np.load(cached) as arrays:
            train_images, train_labels, test_images, test_labels = (
                arrays[k] for k in ("train_images", "train_labels", "test_images", "test_labels"))
    else:
        train_images, train_labels = _load_split(name, folder, "train", verify=verify)
        test_images, test_labels = _load_split(name, folder, "test", verify=verify)
        if cached is not None:
            _keep(cached, train_images, train_labels, test_images, test_labels)
    return Dataset(name, _scaled(train_images), train_labels.astype(np.int32),
                   _scaled(test_images), test_labels.astype(np.int32), folder)


def _scaled(images: np.ndarray) -> np.ndarray:
    """Bytes (N, 28, 28) as the book's ToTensor gives them: float32 in [0, 1], (N, 1, 28, 28)."""
    return images.astype(np.float32)[:, None] / np.float32(255)


def _parsed(name: str, folder: Path) -> Path:
    """Where the parsed, verified arrays of these very files are kept (the cache's
    `parsed/`): named by the files' paths, sizes and modification times, so an edited or
    replaced file is read and checked again. A worker then starts in milliseconds."""
    stamp = [(str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns)
             for split in SPLITS for path in _split_files(folder, split)]
    key = hashlib.sha256(repr(stamp).encode()).hexdigest()[:24]
    return cache_dir() / "parsed" / f"{name}-{key}.npz"


def _keep(path: Path, *arrays: np.ndarray) -> None:
    """Write the cache entry atomically; a cache that cannot be written is skipped."""
    names = ("train_images", "train_labels", "test_images", "test_labels")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(temporary, "wb") as out:
            np.savez(out, **dict(zip(names, arrays)))
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()


def download(name: str, target: Path, *, mirrors: tuple[str, ...] | None = None,
             progress: Callable[[str, int, int], None] | None = None,
             timeout: float = 30.0) -> Path:
    """Fetch the four .gz files of `name` into `target`, verifying each SHA-256.

    A file appears under its final name only once complete and verified, so an
    interrupted download never leaves a half file that later looks valid.
    `progress(filename, bytes_done, bytes_total)` is called as bytes arrive.
    """
    mirrors = mirrors or _mirrors(name)
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
    for filename, expected in _info(name).sha256.items():
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


def _mirrors(name: str) -> tuple[str, ...]:
    own = os.environ.get("LENET_LAB_MIRROR")
    if own and not own.startswith(("http://", "https://")):
        raise DataError(f"LENET_LAB_MIRROR={safe_url(own)!r} is not an http(s) URL: unset it, or "
                        f"give a mirror serving <mirror>/<dataset>/<file>.gz, e.g. "
                        f"http://127.0.0.1:8000/")
    return (f"{own.rstrip('/')}/{name}/",) if own else _info(name).mirrors


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


def stratified_subset(labels: np.ndarray, n: int, *, seed: int = 0) -> np.ndarray:
    """Indices of n examples with the classes in the same proportions as in `labels`.

    Fixed by `seed` (not the trial's seed) so that every arm of a sweep sees the same data.
    """
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts * n / len(labels)).astype(int)
    # Hand the remainder to the classes with the largest fractional parts.
    remainder = counts * n / len(labels) - quota
    quota[np.argsort(-remainder, kind="stable")[: n - quota.sum()]] += 1
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(chosen))
