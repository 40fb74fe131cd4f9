"""Tests for fedlatent.data on real data (sklearn digits, Debian Fashion-MNIST) and IDX
files written here; no mocks."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlatent.data.loading import (
    DATASETS,
    FASHION_MNIST_DEBIAN_DIR,
    DataError,
    Dataset,
    find_idx_files,
    load_dataset,
    read_idx,
)
from fedlatent.data.partition import PARTITIONS, public_private_split
from fedlatent.partitions import partition

STEMS = {
    "train-images": "train-images-idx3-ubyte",
    "train-labels": "train-labels-idx1-ubyte",
    "test-images": "t10k-images-idx3-ubyte",
    "test-labels": "t10k-labels-idx1-ubyte",
}


def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_idx(path: Path, arr: np.ndarray) -> Path:
    data = idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_fake_mnist(
    folder: Path, n_train: int = 50, n_test: int = 20, gz: bool = False, seed: int = 0
) -> dict[str, Path]:
    """A tiny MNIST-format dataset: random 28x28 images, labels cycling through 0..9."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels": np.arange(n_train) % 10,
        "test-images": rng.integers(0, 256, (n_test, 28, 28)),
        "test-labels": np.arange(n_test) % 10,
    }
    ext = ".gz" if gz else ""
    return {k: write_idx(folder / (STEMS[k] + ext), v) for k, v in arrays.items()}


def balanced_labels(per_class: int = 200, classes: int = 10) -> np.ndarray:
    return np.repeat(np.arange(classes), per_class).astype(np.int64)


def check_partition(parts: list[np.ndarray], indices: np.ndarray, num_clients: int) -> None:
    assert len(parts) == num_clients
    for p in parts:
        assert p.dtype == np.int64 and len(p) > 0 and np.all(np.diff(p) > 0)
    allidx = np.concatenate(parts)
    assert len(allidx) == len(indices)  # disjoint, given the union check below
    assert np.array_equal(np.sort(allidx), np.sort(indices))


def mean_tv(labels: np.ndarray, parts: list[np.ndarray], classes: int = 10) -> float:
    """Mean total-variation distance of client label distributions from the global one."""
    glob = np.bincount(labels, minlength=classes) / len(labels)
    tvs = [0.5 * np.abs(np.bincount(labels[p], minlength=classes) / len(p) - glob).sum() for p in parts]
    return float(np.mean(tvs))


# ---------------------------------------------------------------- digits / datasets


def test_digits_loads() -> None:
    ds = load_dataset("digits")
    assert isinstance(ds, Dataset) and ds.name == "digits" and ds.num_classes == 10
    assert ds.image_shape == (1, 8, 8)
    assert len(ds.x_train) + len(ds.x_test) == 1797
    assert len(ds.x_test) == round(0.2 * 1797)
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert x.dtype == np.float32 and x.ndim == 4 and x.shape[1:] == (1, 8, 8)
        assert y.dtype == np.int64 and y.shape == (len(x),)
        assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() == 1.0
        assert set(np.unique(y)) == set(range(10))
    # stratified: every class's test share is close to 20%
    share = np.bincount(ds.y_test, minlength=10) / (
        np.bincount(ds.y_test, minlength=10) + np.bincount(ds.y_train, minlength=10)
    )
    assert np.all(np.abs(share - 0.2) < 0.01)


def test_digits_test_split_fixed() -> None:
    a, b = load_dataset("digits"), load_dataset("digits")
    assert np.array_equal(a.x_test, b.x_test) and np.array_equal(a.y_test, b.y_test)
    assert np.array_equal(a.x_train, b.x_train)


def test_max_train_max_test_subset() -> None:
    full, sub = load_dataset("digits"), load_dataset("digits", max_train=300, max_test=50)
    assert len(sub.x_train) == 300 and len(sub.x_test) == 50
    assert np.bincount(sub.y_train, minlength=10).min() >= 28  # stratified: ~30 per class
    again = load_dataset("digits", max_train=300, max_test=50)
    assert np.array_equal(sub.x_train, again.x_train) and np.array_equal(sub.y_test, again.y_test)
    # the subset is made of real training records
    flat = {row.tobytes() for row in full.x_train}
    assert all(row.tobytes() in flat for row in sub.x_train)


def test_dataset_rejects_bad_arrays() -> None:
    x = np.zeros((3, 1, 8, 8), np.float32)
    y = np.zeros(3, np.int64)
    with pytest.raises(DataError):
        Dataset("bad", x.astype(np.float64), y, x, y, 10)
    with pytest.raises(DataError):
        Dataset("bad", x, y[:2], x, y, 10)


# ---------------------------------------------------------------- read_idx


@pytest.mark.parametrize("ext", ["", ".gz"])
def test_read_idx_round_trip(tmp_path: Path, ext: str) -> None:
    arr = np.random.default_rng(1).integers(0, 256, (7, 28, 28)).astype(np.uint8)
    got = read_idx(write_idx(tmp_path / f"imgs{ext}", arr))
    assert got.dtype == np.uint8 and np.array_equal(got, arr)
    labels = np.arange(13, dtype=np.uint8)
    assert np.array_equal(read_idx(str(write_idx(tmp_path / f"labs{ext}", labels))), labels)


def test_read_idx_gzip_without_gz_suffix(tmp_path: Path) -> None:
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    path = tmp_path / "renamed-idx2-ubyte"
    path.write_bytes(gzip.compress(idx_bytes(arr)))
    assert np.array_equal(read_idx(path), arr)


def _raises_naming(path: Path) -> None:
    with pytest.raises(DataError, match=path.name):
        read_idx(path)


@pytest.mark.parametrize("ext", ["", ".gz"])
def test_read_idx_truncated_and_overlong(tmp_path: Path, ext: str) -> None:
    data = idx_bytes(np.ones((5, 28, 28), np.uint8))
    for name, payload in (("trunc", data[:-10]), ("long", data + b"\x00"), ("header", data[:9])):
        path = tmp_path / f"{name}-idx3-ubyte{ext}"
        path.write_bytes(gzip.compress(payload) if ext else payload)
        _raises_naming(path)


def test_read_idx_bad_magic_and_dtype(tmp_path: Path) -> None:
    good = idx_bytes(np.ones(4, np.uint8))
    cases = {
        "magic": b"\x01" + good[1:],
        "dtype": good[:2] + b"\x0d" + good[3:],
        "ndim0": good[:3] + b"\x00",
        "empty": b"",
    }
    for name, payload in cases.items():
        path = tmp_path / name
        path.write_bytes(payload)
        _raises_naming(path)


def test_read_idx_corrupt_gzip(tmp_path: Path) -> None:
    data = gzip.compress(idx_bytes(np.random.default_rng(2).integers(0, 256, (20, 28, 28))))
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    cases = {
        "cut.gz": data[: len(data) // 2],
        "flip.gz": bytes(flipped),
        "garbage.gz": b"this is not gzip at all",
        "crc.gz": data[:-8] + b"\0" * 8,
    }
    for name, payload in cases.items():
        path = tmp_path / name
        path.write_bytes(payload)
        _raises_naming(path)


def test_read_idx_missing_file(tmp_path: Path) -> None:
    _raises_naming(tmp_path / "nope-idx1-ubyte")


# ---------------------------------------------------------------- find_idx_files / load


@pytest.mark.parametrize(("name", "sub"), [("fashion-mnist", "FashionMNIST"), ("mnist", "MNIST")])
def test_find_idx_files_torchvision_layout(tmp_path: Path, name: str, sub: str) -> None:
    written = write_fake_mnist(tmp_path / sub / "raw", gz=True)
    found = find_idx_files(name, str(tmp_path))
    assert found == written
    # plain files are preferred over .gz when both exist (torchvision keeps both)
    plain = write_fake_mnist(tmp_path / sub / "raw", gz=False)
    assert find_idx_files(name, str(tmp_path)) == plain


def test_find_idx_files_flat_and_test_prefix(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path)
    for role in ("test-images", "test-labels"):  # "test-" as an alternative to "t10k-"
        src = tmp_path / STEMS[role]
        src.rename(tmp_path / STEMS[role].replace("t10k", "test"))
    found = find_idx_files("mnist", str(tmp_path))
    assert found["test-images"].name == "test-images-idx3-ubyte"
    assert found["train-labels"].parent == tmp_path


def test_find_idx_files_missing_names_file(tmp_path: Path) -> None:
    files = write_fake_mnist(tmp_path)
    files["test-labels"].unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte") as err:
        find_idx_files("mnist", str(tmp_path))
    assert str(tmp_path) in str(err.value)
    assert "train-images" not in str(err.value)


def test_find_idx_files_bad_args(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="download"):
        find_idx_files("mnist", None)
    with pytest.raises(DataError):
        find_idx_files("digits", str(tmp_path))


def test_load_fake_mnist(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path / "MNIST" / "raw")
    ds = load_dataset("mnist", data_dir=str(tmp_path))
    assert ds.image_shape == (1, 28, 28) and ds.num_classes == 10
    assert ds.x_train.shape == (50, 1, 28, 28) and ds.x_test.shape == (20, 1, 28, 28)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    raw = read_idx(tmp_path / "MNIST" / "raw" / STEMS["train-images"])
    assert np.allclose(ds.x_train[:, 0] * 255, raw)
    # download=True with the files already in place needs no network
    again = load_dataset("mnist", data_dir=str(tmp_path), download=True, max_train=20)
    assert len(again.x_train) == 20 and len(again.x_test) == 20


def test_load_count_mismatch_names_both_files(tmp_path: Path) -> None:
    files = write_fake_mnist(tmp_path)
    write_idx(files["train-labels"], np.arange(49) % 10)
    with pytest.raises(DataError) as err:
        load_dataset("mnist", data_dir=str(tmp_path))
    msg = str(err.value)
    assert STEMS["train-images"] in msg and STEMS["train-labels"] in msg


def test_load_bad_labels_and_shapes(tmp_path: Path) -> None:
    files = write_fake_mnist(tmp_path)
    write_idx(files["test-labels"], np.full(20, 10))
    with pytest.raises(DataError, match=STEMS["test-labels"]):
        load_dataset("mnist", data_dir=str(tmp_path))
    files = write_fake_mnist(tmp_path)
    write_idx(files["train-images"], np.zeros((50, 32, 32)))
    with pytest.raises(DataError, match=STEMS["train-images"]):
        load_dataset("mnist", data_dir=str(tmp_path))
    files = write_fake_mnist(tmp_path)
    files["test-images"].write_bytes(files["test-images"].read_bytes()[:-1])
    with pytest.raises(DataError, match=STEMS["test-images"]):
        load_dataset("mnist", data_dir=str(tmp_path))


def test_load_bad_args(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="fashion-mnist"):  # lists DATASETS
        load_dataset("cifar10")
    with pytest.raises(DataError):
        load_dataset("digits", max_train=-1)
    with pytest.raises(DataError, match="download"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_dataset("fashion-mnist", data_dir=str(tmp_path))
    assert DATASETS == ("digits", "fashion-mnist", "mnist", "mnist-5k")


@pytest.mark.skipif(
    not Path(FASHION_MNIST_DEBIAN_DIR).is_dir(), reason="Debian package dataset-fashion-mnist not installed"
)
def test_load_fashion_mnist_debian() -> None:
    ds = load_dataset("fashion-mnist", max_train=2000)
    assert ds.image_shape == (1, 28, 28) and ds.num_classes == 10
    assert ds.x_train.shape == (2000, 1, 28, 28) and len(ds.x_test) == 10000
    assert set(np.unique(ds.y_train)) == set(range(10)) == set(np.unique(ds.y_test))
    assert np.bincount(ds.y_train, minlength=10).tolist() == [200] * 10  # stratified subset
    assert ds.x_train.dtype == np.float32 and 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0


# ---------------------------------------------------------------- public/private split


def test_public_private_split() -> None:
    labels = np.random.default_rng(3).integers(0, 10, 5000)
    pub, priv = public_private_split(labels, public_fraction=0.1, seed=7)
    assert pub.dtype == np.int64 and priv.dtype == np.int64
    assert np.all(np.diff(pub) > 0) and np.all(np.diff(priv) > 0)
    assert len(np.intersect1d(pub, priv)) == 0
    assert np.array_equal(np.union1d(pub, priv), np.arange(5000))
    assert len(pub) == 500
    counts = np.bincount(labels, minlength=10)
    assert np.all(np.abs(np.bincount(labels[pub], minlength=10) - 0.1 * counts) <= 1)
    pub2, priv2 = public_private_split(labels, public_fraction=0.1, seed=7)
    assert np.array_equal(pub, pub2) and np.array_equal(priv, priv2)
    pub3, _ = public_private_split(labels, public_fraction=0.1, seed=8)
    assert not np.array_equal(pub, pub3)


def test_public_private_split_edges() -> None:
    labels = np.arange(30) % 3
    pub, priv = public_private_split(labels, public_fraction=0.0, seed=0)
    assert len(pub) == 0 and pub.dtype == np.int64 and np.array_equal(priv, np.arange(30))
    pub, priv = public_private_split(labels, public_fraction=0.999, seed=0)
    assert len(priv) >= 1 and len(pub) + len(priv) == 30
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(DataError):
            public_private_split(labels, public_fraction=bad, seed=0)
    with pytest.raises(DataError):
        public_private_split(np.zeros((3, 3), np.int64), public_fraction=0.5, seed=0)


# ---------------------------------------------------------------- partition


@pytest.mark.parametrize("scheme", PARTITIONS)
def test_partition_basic(scheme: str) -> None:
    labels = balanced_labels()
    indices = np.random.default_rng(4).permutation(len(labels))[:1500]
    parts = partition(labels, indices, num_clients=10, scheme=scheme, seed=1)
    check_partition(parts, indices, 10)
    same = partition(labels, indices, num_clients=10, scheme=scheme, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, same, strict=True))
    other = partition(labels, indices, num_clients=10, scheme=scheme, seed=2)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_partition_iid_sizes() -> None:
    parts = partition(balanced_labels(), np.arange(2000), num_clients=7, scheme="iid")
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_dirichlet_skew_and_min_size() -> None:
    labels, indices = balanced_labels(), np.arange(2000)
    tv = {}
    for key, scheme, alpha in (("iid", "iid", 0.5), ("a0.1", "dirichlet", 0.1), ("a100", "dirichlet", 100.0)):
        parts = partition(labels, indices, num_clients=10, scheme=scheme, alpha=alpha, seed=0)
        check_partition(parts, indices, 10)
        assert min(len(p) for p in parts) >= 10
        tv[key] = mean_tv(labels, parts)
    assert tv["a0.1"] > 2 * tv["iid"] and tv["a0.1"] > 2 * tv["a100"]
    assert tv["a0.1"] > 0.3


def test_shards_few_labels_per_client() -> None:
    labels, indices = balanced_labels(), np.arange(2000)
    parts = partition(labels, indices, num_clients=10, scheme="shards", seed=3)
    check_partition(parts, indices, 10)
    assert all(len(np.unique(labels[p])) <= 4 for p in parts)
    # remainder records (here 2003 = 20 * 100 + 3) are kept
    labels = np.concatenate([labels, [9, 9, 9]])
    parts = partition(labels, np.arange(2003), num_clients=10, scheme="shards", seed=3)
    check_partition(parts, np.arange(2003), 10)


@settings(max_examples=60, deadline=None)
@given(
    num_clients=st.integers(1, 20),
    seed=st.integers(0, 2**32 - 1),
    scheme=st.sampled_from(PARTITIONS),
    extra=st.integers(0, 300),
    classes=st.integers(1, 10),
    alpha=st.floats(5.0, 100.0),
)
def test_partition_property(num_clients: int, seed: int, scheme: str, extra: int, classes: int, alpha: float) -> None:
    # 50 records per client and alpha >= 5 make a min-size-10 Dirichlet draw likely per try.
    n = 50 * num_clients + extra
    labels = np.random.default_rng(seed).integers(0, classes, n + 17)
    indices = np.random.default_rng(seed + 1).choice(n + 17, n, replace=False)
    parts = partition(labels, indices, num_clients=num_clients, scheme=scheme, alpha=alpha, seed=seed)
    check_partition(parts, indices, num_clients)


@settings(max_examples=40, deadline=None)
@given(
    num_clients=st.integers(1, 12), seed=st.integers(0, 2**32 - 1), n=st.integers(1, 150), alpha=st.floats(0.01, 100.0)
)
def test_dirichlet_valid_or_dataerror(num_clients: int, seed: int, n: int, alpha: float) -> None:
    labels = np.random.default_rng(seed).integers(0, 10, n)
    try:
        parts = partition(labels, np.arange(n), num_clients=num_clients, scheme="dirichlet", alpha=alpha, seed=seed)
    except DataError:
        return  # too few records or no acceptable draw: a clean refusal is allowed
    check_partition(parts, np.arange(n), num_clients)
    assert min(len(p) for p in parts) >= min(10, n // num_clients)


def test_partition_bad_args() -> None:
    labels, idx = balanced_labels(10, 3), np.arange(30)
    bad_kwargs = [
        {"num_clients": 3, "scheme": "random"},
        {"num_clients": 0, "scheme": "iid"},
        {"num_clients": 3, "scheme": "dirichlet", "alpha": 0.0},
        {"num_clients": 3, "scheme": "dirichlet", "alpha": -1.0},
        {"num_clients": 31, "scheme": "iid"},  # more clients than records
        {"num_clients": 16, "scheme": "shards"},  # 30 records, 32 shards
    ]
    for kwargs in bad_kwargs:
        with pytest.raises(DataError):
            partition(labels, idx, **kwargs)  # type: ignore[arg-type]
    for bad_idx in (np.array([0, 1, 1, 2]), np.array([0, 30]), np.array([-1, 2]), np.array([0.0, 1.0])):
        with pytest.raises(DataError):
            partition(labels, bad_idx, num_clients=1, scheme="iid")
    with pytest.raises(DataError):  # one class, 3 clients, tiny alpha: no acceptable draw
        partition(np.zeros(30, np.int64), idx, num_clients=3, scheme="dirichlet", alpha=1e-3)
