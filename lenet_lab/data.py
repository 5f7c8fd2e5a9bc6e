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

A sweep holds out a validation split from the training images (`Dataset.hold_out`):
stratified, drawn with a fixed seed, so every trial of a study and every study of the same
size holds out the same images. Choices are made on it; the test set only measures.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from lenet_lab.datasets import DATASET_INFO, DatasetInfo, dataset_info
from lenet_lab.download import download, mirror_urls
from lenet_lab.errors import DataError, SpecError
from lenet_lab.urls import safe_url

__all__ = ["Dataset", "DatasetInfo", "DATASET_INFO", "SPLIT_SEED", "download", "find_dataset",
           "load_cached", "load_dataset", "parse_idx", "search_dirs", "stratified_subset"]

SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801  # unsigned bytes, 3 dims / 1 dim
IMAGE_SIDE = 28
DEBIAN_DIR = Path("/usr/share/datasets")
SPLIT_SEED = 0  # draws the validation split (and --subset): the same images for every trial


@dataclass(frozen=True)
class Dataset:
    """Images (N, 1, 28, 28) float32 in [0, 1] and labels (N,) int32: the training and
    test splits, and a validation split once `hold_out` has taken one from training."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: Path  # the folder the files came from
    valid_images: np.ndarray | None = None  # held out of the training images (hold_out)
    valid_labels: np.ndarray | None = None
    split_sha256: str | None = None  # of the held-out images' indices, for the record

    @property
    def classes(self) -> tuple[str, ...]:
        return DATASET_INFO[self.name].classes

    @property
    def validation(self) -> int:
        """How many images are held out for validation (0: none)."""
        return 0 if self.valid_labels is None else len(self.valid_labels)

    def subset(self, n: int, *, seed: int = SPLIT_SEED) -> Dataset:
        """n training and min(n, test size) test examples, stratified by class."""
        if n < len(DATASET_INFO[self.name].classes):
            raise SpecError(f"--subset {n} is too small: use at least one example per class "
                            f"({len(self.classes)})")
        train = stratified_subset(self.train_labels, n, seed=seed)
        test = stratified_subset(self.test_labels, min(n, len(self.test_labels)), seed=seed)
        return Dataset(self.name, self.train_images[train], self.train_labels[train],
                       self.test_images[test], self.test_labels[test], self.source)

    def hold_out(self, n: int, *, seed: int = SPLIT_SEED) -> Dataset:
        """The same data with n training images moved to a validation split, stratified
        by class and fixed by `seed` (0 keeps every image for training)."""
        if n <= 0:
            return self
        if n > len(self.train_labels) - len(self.classes):
            raise SpecError(f"a validation split of {n:,} leaves too few of the "
                            f"{len(self.train_labels):,} training images: hold out fewer")
        held = stratified_subset(self.train_labels, n, seed=seed)
        kept = np.setdiff1d(np.arange(len(self.train_labels)), held, assume_unique=True)
        return Dataset(self.name, self.train_images[kept], self.train_labels[kept],
                       self.test_images, self.test_labels, self.source,
                       self.train_images[held], self.train_labels[held],
                       hashlib.sha256(held.astype("<i8").tobytes()).hexdigest())


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lenet-lab"


def search_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders that may hold `<dataset>/`, in the order they are searched. A
    --data-dir that is no folder is refused, not passed over for the next."""
    if data_dir and not Path(data_dir).expanduser().is_dir():
        what = "is a file" if Path(data_dir).expanduser().exists() else "does not exist"
        raise DataError(f"--data-dir {data_dir} {what}: give the folder that holds "
                        f"fashion-mnist/ and mnist/")
    dirs = [Path(d).expanduser() for d in (data_dir, os.environ.get("LENET_LAB_DATA")) if d]
    return [*dirs, cache_dir(), DEBIAN_DIR]


def _near_misses(name: str, data_dir: str | os.PathLike | None) -> str:
    """What was almost the dataset: a folder named in other letters, or missing files."""
    notes = []
    for root in search_dirs(data_dir):
        folder = root / name
        if folder.is_dir():
            missing = [f"{stem}(.gz)" for split in SPLITS for stem in SPLITS[split]
                       if not any((folder / f"{stem}{end}").is_file() for end in ("", ".gz"))]
            notes.append(f"{folder} lacks {', '.join(missing)}")
        elif root.is_dir():
            notes += [f"{entry} is named {entry.name!r}: rename it {name}" for entry in
                      sorted(root.iterdir()) if entry.is_dir() and entry.name != name
                      and entry.name.lower().replace("_", "-") == name]
    return f" ({'; '.join(notes)})" if notes else ""


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
    dataset_info(name)
    for root in search_dirs(data_dir):
        folder = root / name
        if all(_split_files(folder, split) for split in SPLITS):
            return folder
    return None


CHUNK = 1 << 20
UNCHECKED_LIMIT = 256 << 20  # files read without the official sizes (tests of the parser)


def _read(path: Path, *, magic: int, size: int | None) -> tuple[bytes, str]:
    """A file's content (unpacked when gzipped) and its SHA-256, read and hashed a chunk
    at a time and never beyond what the file should hold: its IDX magic number first,
    then at most `size` bytes (the official file's; else UNCHECKED_LIMIT), so that a huge
    file or a gzip bomb is one line, not an exhausted memory."""
    limit = size if size is not None else UNCHECKED_LIMIT
    what = "the official file" if size else "an IDX file lenet-lab reads"
    digest, chunks, total = hashlib.sha256(), [], 0
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) == 4 and int.from_bytes(head, "big") != magic:
                raise DataError(f"{path} is not a valid IDX file: magic number "
                                f"{int.from_bytes(head, 'big'):#010x}, expected {magic:#010x}; "
                                f"delete it and fetch it again")
            digest.update(head)
            total = len(head)
            for chunk in iter(lambda: f.read(min(CHUNK, limit + 1 - total)), b""):
                digest.update(chunk)
                chunks.append(chunk)
                total += len(chunk)
                if total > limit:
                    raise DataError(f"{path} holds more than the {limit:,} bytes of {what}: "
                                    f"it is not that file; delete it and fetch it again")
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path} is corrupt or truncated ({exc}): delete it and fetch it "
                        f"again") from None
    raw = head + b"".join(chunks)
    return raw, digest.hexdigest()


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
    info = dataset_info(name)
    files = _split_files(folder, split)
    if files is None:
        raise DataError(f"{folder} lacks the {split} files of {info.title}")
    image_path, label_path = files
    count = info.sizes[split] if verify else None
    image_bytes, image_sha = _read(image_path, magic=IMAGE_MAGIC,
                                   size=count and 16 + count * IMAGE_SIDE ** 2)
    label_bytes, label_sha = _read(label_path, magic=LABEL_MAGIC, size=count and 8 + count)
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
    for path, digest in ((image_path, image_sha), (label_path, label_sha)) if verify else ():
        _check_official(info, path, digest)
    return images, labels


def _check_official(info: DatasetInfo, path: Path, digest: str) -> None:
    """A swapped or edited file is named, not trained on (gzipped or not, the content counts)."""
    stem = path.name.removesuffix(".gz")
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
    info = dataset_info(name)
    folder = find_dataset(name, data_dir)
    if folder is None:
        looked = ", ".join(str(d / name) for d in search_dirs(data_dir)) + \
            _near_misses(name, data_dir)
        if not download_missing:
            raise DataError(f"{info.title} not found (looked in {looked}); "
                            f"set --data-dir or LENET_LAB_DATA to a folder holding {name}/")
        try:
            folder = download(name, cache_dir() / name, progress=progress)
        except DataError as exc:
            raise DataError(
                f"{info.title} not found (looked in {looked}) and the download failed: {exc}. "
                f"Put the four .gz files from {safe_url(mirror_urls(name)[0])} into {cache_dir() / name}/ "
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


_loaded: dict[tuple[str, str | None], Dataset] = {}


def load_cached(name: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """A dataset parsed once per process (planning checks it, a worker then trains on it,
    and the sweeps after it too)."""
    key = (name, None if data_dir is None else str(data_dir))
    if key not in _loaded:
        _loaded[key] = load_dataset(name, data_dir=data_dir)
    return _loaded[key]


def _scaled(images: np.ndarray) -> np.ndarray:
    """Bytes (N, 28, 28) as the book's ToTensor gives them: float32 in [0, 1], (N, 1, 28, 28)
    (divided in place: the same numbers as x / 255 at half the time)."""
    scaled = images.astype(np.float32)
    np.divide(scaled, np.float32(255), out=scaled)
    return scaled[:, None]


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
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as out:
            np.savez(out, **dict(zip(names, arrays)))
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()


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
