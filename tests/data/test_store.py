"""Tests for fedlatent.data.store: decoded once per process, never stale, never a damaged entry."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from fedlatent.data import store
from fedlatent.data.loading import DataError, load_dataset
from fedlatent.data.store import Memo, cached_dataset


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def fake_mnist(root: Path, n: int = 60, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n), ("t10k", n // 2)):
        write_idx(root / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28)))
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", np.arange(count) % 10)
    return root


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every real decode, by data set name; the process memo starts empty."""
    calls: list[str] = []
    monkeypatch.setattr(store, "DECODED", Memo(capacity=2))

    def counting(name: str, **kw: object) -> object:
        calls.append(name)
        return load_dataset(name, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "load_dataset", counting)
    return calls


def same(a, b) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("x_train", "y_train", "x_test", "y_test"))


def test_a_process_decodes_a_data_set_once(decodes: list[str]) -> None:
    first = cached_dataset("digits", max_train=300)
    again = cached_dataset("digits", max_train=300)
    assert again is first and decodes == ["digits"]
    other = cached_dataset("digits", max_train=200)  # another key: decoded too
    assert len(other.y_train) == 200 and decodes == ["digits", "digits"]
    assert same(first, load_dataset("digits", max_train=300))


def test_a_changed_source_file_is_decoded_afresh(tmp_path: Path, decodes: list[str]) -> None:
    root = fake_mnist(tmp_path / "data")
    first = cached_dataset("mnist", data_dir=str(root))
    fake_mnist(root, seed=1)  # same names, new bytes
    second = cached_dataset("mnist", data_dir=str(root))
    assert decodes == ["mnist", "mnist"] and not same(first, second)
    (root / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b not gzip")  # corrupt: the clear error of today
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        cached_dataset("mnist", data_dir=str(root))


def test_the_disk_cache_serves_other_processes_and_never_a_damaged_entry(tmp_path: Path, decodes: list[str]) -> None:
    root, cache = fake_mnist(tmp_path / "data"), tmp_path / "cache"
    first = cached_dataset("mnist", data_dir=str(root), cache_dir=str(cache))
    (entry,) = cache.glob("data-*")
    store.DECODED.clear()  # a new process: nothing in memory
    mapped = cached_dataset("mnist", data_dir=str(root), cache_dir=str(cache))
    assert decodes == ["mnist"] and isinstance(mapped.x_train, np.memmap) and same(first, mapped)
    store.DECODED.clear()
    (entry / "x_train.npy").write_bytes(b"damaged")
    repaired = cached_dataset("mnist", data_dir=str(root), cache_dir=str(cache))
    assert decodes == ["mnist", "mnist"] and same(first, repaired)
    store.DECODED.clear()
    fake_mnist(root, seed=2)  # a changed source: its own entry, never the old arrays
    os.utime(root / "train-images-idx3-ubyte.gz", ns=(0, 0))
    changed = cached_dataset("mnist", data_dir=str(root), cache_dir=str(cache))
    assert decodes == ["mnist", "mnist", "mnist"] and not same(first, changed)
    assert len(list(cache.glob("data-*"))) == 2


def test_memo_is_least_recently_used_and_counts() -> None:
    memo: Memo[int] = Memo(capacity=2)
    assert [memo.get(k, lambda k=k: len(k)) for k in ("a", "bb", "a", "ccc", "bb")] == [1, 2, 1, 3, 2]
    assert (memo.hits, memo.misses) == (1, 4)  # "bb" was evicted by "ccc", "a" was kept


def test_a_partition_is_computed_once_per_cache_and_a_foreign_entry_is_recomputed(tmp_path) -> None:
    from fedlatent.data.store import stored_parts

    calls: list[int] = []

    def compute() -> list[np.ndarray]:
        calls.append(1)
        return [np.arange(3, dtype=np.int64), np.arange(3, 5, dtype=np.int64)]

    first = stored_parts(str(tmp_path), ("k", "1"), compute)
    again = stored_parts(str(tmp_path), ("k", "1"), compute)
    assert len(calls) == 1 and [a.tolist() for a in again] == [a.tolist() for a in first] == [[0, 1, 2], [3, 4]]
    (entry,) = tmp_path.glob("parts-*.npz")
    entry.write_bytes(b"damaged")
    assert [a.tolist() for a in stored_parts(str(tmp_path), ("k", "1"), compute)] == [[0, 1, 2], [3, 4]]
    assert len(calls) == 2
    stored_parts(str(tmp_path), ("k", "2"), compute)  # another key, another entry
    assert len(list(tmp_path.glob("parts-*.npz"))) == 2 and len(calls) == 3
    assert stored_parts("", ("k", "1"), compute) and len(calls) == 4  # no cache: computed
