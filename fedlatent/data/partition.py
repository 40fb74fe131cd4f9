"""Who holds which record: a public/private split and the clients' partitions.

``public_private_split`` holds out a stratified *public* part of the training set (data the
server may see) and keeps the *private* rest for the clients; ``partition`` spreads the private
records over N clients, IID or label-skewed (Dirichlet, shards). Both are pure functions of
labels, indices and a seed, so every mode compared sees exactly the same records.

The client partitions themselves are Flower's (flwr-datasets), so they live above the data
layer, in ``fedlatent.partitions``; this module keeps the public split, the scheme names and
the index checks both use.
"""

from __future__ import annotations

import numpy as np

from fedlatent.data.loading import DataError, stratified_take

PARTITIONS: tuple[str, ...] = ("iid", "dirichlet", "shards")


def public_private_split(labels: np.ndarray, *, public_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices 0..len(labels)-1 into stratified (public, private) index sets.

    ``round(public_fraction * n)`` records (at most n - 1) go public, each class in proportion.
    Both results are sorted int64, disjoint, and together cover every index.

    Raises
    ------
    DataError
        ``public_fraction`` outside [0, 1), or labels not a 1-D integer array.
    """
    labels = int_vector(labels, "labels")
    if not 0.0 <= public_fraction < 1.0:
        raise DataError(f"public_fraction must be in [0, 1), got {public_fraction}")
    n = len(labels)
    n_public = min(round(public_fraction * n), max(n - 1, 0))
    public = stratified_take(labels, n_public, np.random.default_rng(seed)) if n_public else np.empty(0, dtype=np.int64)
    private = np.setdiff1d(np.arange(n, dtype=np.int64), public, assume_unique=True)
    return public, private


def int_vector(values: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise DataError(f"{what} must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    return arr
