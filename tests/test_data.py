from __future__ import annotations

import functools
import gzip
import http.server
import re
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

from lenet_lab.data import (DATASET_INFO, IMAGE_MAGIC, LABEL_MAGIC, download, find_dataset,
                            load_dataset, parse_idx, stratified_subset)
from lenet_lab.errors import DataError, SpecError
from tests.conftest import DATA_DIR


def idx(magic: int, dims: tuple[int, ...], payload: bytes | None = None) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    return header + (payload if payload is not None else bytes(int(np.prod(dims))))


def write_dataset(folder: Path, *, train: int = 20, test: int = 10, labels: int | None = None,
                  side: int = 28, gz: bool = True) -> None:
    """A small well-formed dataset in IDX format (synthetic pixels, for the parser's tests)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, (n, side, side), dtype=np.uint8).tobytes()
        label_bytes = (np.arange(labels if labels is not None else n) % 10).astype(np.uint8).tobytes()
        files = {f"{prefix}-images-idx3-ubyte": idx(IMAGE_MAGIC, (n, side, side), images),
                 f"{prefix}-labels-idx1-ubyte": idx(LABEL_MAGIC, (labels if labels is not None else n,),
                                                    label_bytes)}
        for name, raw in files.items():
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)


def test_parse_idx_reads_header_and_payload() -> None:
    array = parse_idx(idx(IMAGE_MAGIC, (2, 3, 4), bytes(range(24))), source="x", expect_magic=IMAGE_MAGIC)
    assert array.shape == (2, 3, 4) and array[1, 2, 3] == 23


@pytest.mark.parametrize("raw, why", [
    (b"\x00\x00", "too short for a header"),
    (idx(LABEL_MAGIC, (3,)), "magic number 0x00000801, expected 0x00000803"),
    (idx(IMAGE_MAGIC, (2, 28, 28))[:-5], "header says 2x28x28 (1584 bytes) but the file has 1579 bytes"),
    (idx(IMAGE_MAGIC, (2, 28, 28)) + b"\x00", "but the file has 1585 bytes"),
    (IMAGE_MAGIC.to_bytes(4, "big") + b"\x00" * 5, "too short for a 3-dimensional header"),
])
def test_parse_idx_rejects_corrupt_files_naming_them(raw: bytes, why: str) -> None:
    with pytest.raises(DataError, match="bad.idx is not a valid IDX file: .*" + re.escape(why)):
        parse_idx(raw, source="bad.idx", expect_magic=IMAGE_MAGIC)


def test_real_fashion_mnist_loads_as_the_book_sees_it(fashion) -> None:
    assert fashion.train_images.shape == (60000, 1, 28, 28) and fashion.test_images.shape == (10000, 1, 28, 28)
    assert fashion.train_images.dtype == np.float32 and 0.0 == fashion.train_images.min()
    assert fashion.train_images.max() == 1.0
    assert np.bincount(fashion.train_labels).tolist() == [6000] * 10  # balanced classes
    assert fashion.classes[4] == "coat" and fashion.source == DATA_DIR / "fashion-mnist"


def test_real_mnist_loads() -> None:
    mnist = load_dataset("mnist")
    assert len(mnist.train_labels) == 60000 and len(mnist.test_labels) == 10000
    assert sorted(set(mnist.test_labels.tolist())) == list(range(10))


def test_subset_is_stratified_and_fixed(fashion) -> None:
    small = fashion.subset(1000)
    assert np.bincount(small.train_labels).tolist() == [100] * 10
    assert np.bincount(small.test_labels).tolist() == [100] * 10
    again = fashion.subset(1000)
    assert np.array_equal(small.train_images, again.train_images)
    labels = np.array([0] * 90 + [1] * 10)
    chosen = stratified_subset(labels, 11, seed=0)
    assert len(chosen) == 11 and np.bincount(labels[chosen]).tolist() == [10, 1]
    with pytest.raises(SpecError, match="--subset 5 is too small"):  # a bad option: exit 2
        fashion.subset(5)


def test_raw_and_gzip_files_both_load(tmp_path: Path) -> None:
    write_dataset(tmp_path / "gz" / "mnist", gz=True)
    write_dataset(tmp_path / "raw" / "mnist", gz=False)
    a = load_dataset("mnist", data_dir=tmp_path / "gz", verify=False)
    b = load_dataset("mnist", data_dir=tmp_path / "raw", verify=False)
    assert np.array_equal(a.train_images, b.train_images) and a.train_images.shape == (20, 1, 28, 28)


@pytest.mark.parametrize("damage, message", [
    (lambda f: f.write_bytes(f.read_bytes()[:200]), "train-images-idx3-ubyte.gz is corrupt or truncated"),
    (lambda f: f.write_bytes(b"not gzip at all"), "train-images-idx3-ubyte.gz is corrupt or truncated"),
])
def test_damaged_gzip_is_named(tmp_path: Path, damage, message: str) -> None:
    write_dataset(tmp_path / "mnist")
    damage(tmp_path / "mnist" / "train-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match=message):
        load_dataset("mnist", data_dir=tmp_path, verify=False)


def test_mismatched_images_and_labels_are_named(tmp_path: Path) -> None:
    write_dataset(tmp_path / "mnist", labels=19)
    with pytest.raises(DataError, match="has 20 images but .*train-labels-idx1-ubyte.gz has 19 labels"):
        load_dataset("mnist", data_dir=tmp_path, verify=False)
    write_dataset(tmp_path / "other" / "mnist", side=32)
    with pytest.raises(DataError, match="holds 32x32 images, expected 28x28"):
        load_dataset("mnist", data_dir=tmp_path / "other", verify=False)


def test_lookup_order_option_then_env_then_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("option", "env", "cache/lenet-lab"):
        write_dataset(tmp_path / name / "mnist")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("LENET_LAB_DATA", str(tmp_path / "env"))
    assert find_dataset("mnist", tmp_path / "option") == tmp_path / "option" / "mnist"
    assert find_dataset("mnist") == tmp_path / "env" / "mnist"
    monkeypatch.delenv("LENET_LAB_DATA")
    assert find_dataset("mnist") == tmp_path / "cache" / "lenet-lab" / "mnist"


@pytest.fixture
def mirror():
    """The real dataset files served over HTTP on 127.0.0.1, with one file that can be swapped."""
    root = Path(tempfile.mkdtemp())
    shutil.copytree(DATA_DIR, root / "data")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root / "data"))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root / "data"
    server.shutdown()
    server.server_close()
    shutil.rmtree(root)


def test_download_over_loopback_verifies_and_loads(mirror, tmp_path: Path) -> None:
    base, _ = mirror
    seen = []
    target = download("mnist", tmp_path / "mnist", mirrors=(f"{base}/mnist/",),
                      progress=lambda name, done, total: seen.append((name, done, total)))
    assert sorted(p.name for p in target.iterdir()) == sorted(DATASET_INFO["mnist"].sha256)
    assert seen[-1][1] == seen[-1][2] > 0  # progress reached the file's full length
    assert len(load_dataset("mnist", data_dir=tmp_path).train_labels) == 60000


def test_download_rejects_a_checksum_mismatch_and_leaves_no_file(mirror, tmp_path: Path) -> None:
    base, served = mirror
    (served / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"tampered")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz has SHA-256 .*, expected b91679a0"):
        download("mnist", tmp_path / "mnist", mirrors=(f"{base}/mnist/",))
    left = sorted(p.name for p in (tmp_path / "mnist").iterdir())
    assert "t10k-labels-idx1-ubyte.gz" not in left and not any(n.endswith(".part") for n in left)


def test_own_mirror_from_the_environment(mirror, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    base, _ = mirror
    monkeypatch.setenv("LENET_LAB_MIRROR", base)
    monkeypatch.setenv("LENET_LAB_DATA", str(tmp_path / "empty"))
    data = load_dataset("fashion-mnist")  # not found anywhere: fetched into the cache
    assert data.source == tmp_path / "cache" / "lenet-lab" / "fashion-mnist"
    assert len(data.test_labels) == 10000


def test_download_falls_back_to_the_next_mirror(mirror, tmp_path: Path) -> None:
    base, _ = mirror
    download("fashion-mnist", tmp_path / "f", mirrors=(f"{base}/missing/", f"{base}/fashion-mnist/"))
    assert len(list((tmp_path / "f").glob("*.gz"))) == 4


def test_nothing_found_and_download_failing_is_one_line_that_says_where_and_how(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LENET_LAB_DATA")
    # LENET_LAB_MIRROR (set for all tests) points at a loopback port where nothing listens:
    # the download fails at once, as it does offline.
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as caught:
        load_dataset("mnist", data_dir=tmp_path / "empty")
    message = str(caught.value)
    assert "\n" not in message and str(tmp_path / "empty" / "mnist") in message
    assert "cannot fetch http://127.0.0.1:1/mnist/train-images-idx3-ubyte.gz" in message
    assert "LENET_LAB_DATA" in message
    with pytest.raises(DataError, match="MNIST not found"):
        load_dataset("mnist", data_dir=tmp_path / "empty", download_missing=False)


def test_real_files_that_are_not_the_official_ones_are_named(tmp_path: Path) -> None:
    # MNIST's files in Fashion-MNIST's folder: well-formed, 28x28, ten classes, and wrong.
    shutil.copytree(DATA_DIR / "mnist", tmp_path / "fashion-mnist")
    with pytest.raises(DataError, match=r"fashion-mnist/train-images-idx3-ubyte.gz is not the "
                                        r"official Fashion-MNIST file train-images-idx3-ubyte"):
        load_dataset("fashion-mnist", data_dir=tmp_path)
    # The official files, one unpacked with a label edited: the raw file is named.
    shutil.rmtree(tmp_path / "fashion-mnist")
    shutil.copytree(DATA_DIR / "fashion-mnist", tmp_path / "fashion-mnist")
    packed = tmp_path / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(packed.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10
    packed.unlink()
    (packed.parent / "t10k-labels-idx1-ubyte").write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte is not the official"):
        load_dataset("fashion-mnist", data_dir=tmp_path)
    # Unpacked but unedited, the same file is accepted: the content counts, not the packing.
    raw[-1] = (raw[-1] - 1) % 10
    (packed.parent / "t10k-labels-idx1-ubyte").write_bytes(bytes(raw))
    assert len(load_dataset("fashion-mnist", data_dir=tmp_path).test_labels) == 10000


def test_a_second_load_reads_the_checked_arrays_from_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(DATA_DIR / "fashion-mnist", tmp_path / "fashion-mnist")
    first = load_dataset("fashion-mnist", data_dir=tmp_path)
    cached = list((tmp_path / "cache" / "lenet-lab" / "parsed").glob("fashion-mnist-*.npz"))
    assert len(cached) == 1  # conftest points XDG_CACHE_HOME at tmp_path / "cache"

    def unread(*_):
        raise AssertionError("the files were read and checked again")

    monkeypatch.setattr("lenet_lab.data._load_split", unread)
    again = load_dataset("fashion-mnist", data_dir=tmp_path)
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        assert np.array_equal(getattr(first, name), getattr(again, name))
        assert getattr(first, name).dtype == getattr(again, name).dtype
    monkeypatch.undo()
    # an edited file is a new file: read and checked again, and refused
    packed = tmp_path / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(packed.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10
    packed.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz is not the official"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


@pytest.mark.parametrize("packed", [False, True], ids=["a 2 GB file", "a gzip bomb"])
def test_a_file_far_larger_than_the_official_one_is_refused_before_it_fills_memory(
        tmp_path: Path, packed: bool) -> None:
    """The official training images are 47,040,016 bytes: a file that would unpack to far
    more (2 GB of zeros behind a valid header on disk, or 100 MB gzipped into 100 KB) is
    read no further than that and named."""
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for name in ("train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(DATA_DIR / "fashion-mnist" / name, folder / name)
    header = idx(IMAGE_MAGIC, (60000, 28, 28), b"")
    if packed:
        with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb", compresslevel=1) as out:
            out.write(header)
            for _ in range(100):
                out.write(bytes(1 << 20))
    else:
        with open(folder / "train-images-idx3-ubyte", "wb") as out:
            out.write(header)
            out.truncate(2 << 30)  # sparse: 2 GB that take no disk
    with pytest.raises(DataError, match=r"holds more than the 47,040,016 bytes of the official "
                                        r"file: it is not that file"):
        load_dataset("fashion-mnist", data_dir=tmp_path, download_missing=False)


def test_a_file_that_is_no_idx_file_is_named_by_its_header(tmp_path: Path) -> None:
    folder = tmp_path / "fashion-mnist"
    shutil.copytree(DATA_DIR / "fashion-mnist", folder)
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    with gzip.open(folder / "train-labels-idx1-ubyte.gz", "wb") as out:
        out.write(b"<html>not found</html>" * 1000)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz is not a valid IDX file: "
                                        r"magic number 0x3c68746d, expected 0x00000801"):
        load_dataset("fashion-mnist", data_dir=tmp_path, download_missing=False)
