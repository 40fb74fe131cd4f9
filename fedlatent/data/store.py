"""Decoded data sets, decoded once: a per-process memo and an optional on-disk cache, both keyed.

What: ``cached_dataset`` returns what ``load_dataset`` would, but decodes a data set at most
once per process (``Memo``, keyed on the data set, its location, ``max_train`` and a SHA-256
of the source files) and, with a ``cache_dir``, at most once per machine: the decoded float32
arrays are stored as ``.npy`` files and later memory-mapped (copy-on-write), which is what
the fresh ClientApp process of every deployment message needs.

Why: each Flower message may be handled by a ClientApp that rebuilds its data plan; decoding
70,000 Fashion-MNIST images costs ~1 s, so 1,000 clients paid O(clients x data set) per
round. The key holds the files' digest, so a changed or replaced file is decoded afresh and
its errors are raised as before; a damaged cache entry is ignored and rewritten. Hashing the
files runs once per (path, size, mtime, inode) per process: ~40 ms for Fashion-MNIST.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from fedlatent.data.loading import Dataset, load_dataset, source_files

T = TypeVar("T")
_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
FORMAT = 1


@dataclass
class Memo(Generic[T]):
    """A small least-recently-used map from a key to a value, with hit and miss counts.

    Explicit and keyed: every value is found by the full key of what determined it.
    """

    capacity: int = 2
    hits: int = 0
    misses: int = 0
    _items: OrderedDict[Hashable, T] = field(default_factory=OrderedDict)

    def get(self, key: Hashable, make: Callable[[], T]) -> T:
        """The value for ``key``, made (and kept) on a miss."""
        if key in self._items:
            self.hits += 1
            self._items.move_to_end(key)
            return self._items[key]
        self.misses += 1
        value = make()
        self._items[key] = value
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        """Forget every value (the counts stay)."""
        self._items.clear()


DECODED: Memo[Dataset] = Memo(capacity=2)  # this process's decoded data sets, by full key
_DIGESTS: dict[tuple[str, int, int, int], str] = {}  # file stat -> SHA-256, this process


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, computed once per (path, size, mtime, inode) in this process."""
    st = path.stat()
    stat_key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if stat_key not in _DIGESTS:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[stat_key] = h.hexdigest()
    return _DIGESTS[stat_key]


def dataset_key(name: str, *, data_dir: str | None, download: bool, max_train: int) -> tuple[str, ...]:
    """Everything that determines a decoded data set: name, ``max_train`` and the source files' digests."""
    files = source_files(name, data_dir=data_dir, download=download)
    return (f"v{FORMAT}", name, str(max_train), *(file_digest(p) for p in files))


def cached_dataset(
    name: str, *, data_dir: str | None = None, download: bool = False, max_train: int = 0, cache_dir: str = ""
) -> Dataset:
    """``load_dataset(name, ...)``, decoded at most once per process (and per ``cache_dir``).

    Raises
    ------
    DataError
        As ``load_dataset``: a missing, corrupt or inconsistent source file is never hidden.
    """
    key = dataset_key(name, data_dir=data_dir, download=download, max_train=max_train)

    def decode() -> Dataset:
        return load_dataset(name, data_dir=data_dir, download=download, max_train=max_train)

    def make() -> Dataset:
        return _from_disk(Path(cache_dir), key, decode) if cache_dir else decode()

    return DECODED.get(key, make)


def _from_disk(root: Path, key: tuple[str, ...], decode: Callable[[], Dataset]) -> Dataset:
    """The entry for ``key`` under ``root``, memory-mapped; decoded and stored first if absent or damaged."""
    blob = json.dumps(key)
    entry = root / f"data-{hashlib.sha256(blob.encode()).hexdigest()[:20]}"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        meta = json.loads((entry / "key.json").read_text())
        if meta["key"] == blob:  # a foreign or colliding entry is never served
            arrays = [np.load(entry / f"{a}.npy", mmap_mode="c") for a in _ARRAYS]
            if [list(a.shape) for a in arrays] == meta["shapes"]:
                x_train, y_train, x_test, y_test = arrays
                return Dataset(meta["name"], x_train, y_train, x_test, y_test, num_classes=int(meta["num_classes"]))
    ds = decode()
    tmp = root / f".{entry.name}.tmp{uuid.uuid4().hex}"  # unique across processes and machines (a shared cache)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for a in _ARRAYS:
        np.save(tmp / f"{a}.npy", getattr(ds, a))
    shapes = [list(getattr(ds, a).shape) for a in _ARRAYS]
    meta = {"key": blob, "name": ds.name, "num_classes": ds.num_classes, "shapes": shapes}
    (tmp / "key.json").write_text(json.dumps(meta))  # written last: an entry without it is ignored
    shutil.rmtree(entry, ignore_errors=True)
    with contextlib.suppress(OSError):  # a concurrent process may have stored the same entry
        tmp.rename(entry)
    shutil.rmtree(tmp, ignore_errors=True)
    return ds


def stored_parts(cache_dir: str, key: tuple[str, ...], compute: Callable[[], list[np.ndarray]]) -> list[np.ndarray]:
    """The clients' index arrays for ``key``: from ``cache_dir`` when stored there, else computed (and stored).

    Why: a partition costs flwr-datasets' import (~2 s) and its run, in every fresh process; a
    deployment starts one per message. The entry holds its key, so a foreign or damaged file is
    recomputed, never served; without a ``cache_dir`` this is ``compute()``.
    """
    if not cache_dir:
        return compute()
    blob = json.dumps(key)
    path = Path(cache_dir) / f"parts-{hashlib.sha256(blob.encode()).hexdigest()[:20]}.npz"
    with contextlib.suppress(OSError, ValueError, KeyError, EOFError):
        with np.load(path) as stored:
            if str(stored["key"]) == blob:
                return [stored[f"c{i}"] for i in range(int(stored["count"]))]
    parts = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.npz")
    arrays: dict[str, np.ndarray] = {"key": np.array(blob), "count": np.array(len(parts))}
    np.savez(tmp, **arrays, **{f"c{i}": p for i, p in enumerate(parts)})  # type: ignore[arg-type]
    os.replace(tmp, path)
    return parts
