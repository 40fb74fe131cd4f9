"""Who holds which record: a public/private split and the clients' partitions.

``public_private_split`` holds out a stratified *public* part of the training set (data the
server may see) and keeps the *private* rest for the clients; ``partition`` spreads the private
records over N clients, IID or label-skewed (Dirichlet, shards). Both are pure functions of
labels, indices and a seed, so every mode compared sees exactly the same records.
"""

from __future__ import annotations

import numpy as np

from fedlatent.data.loading import DataError, stratified_take

PARTITIONS: tuple[str, ...] = ("iid", "dirichlet", "shards")
_DIRICHLET_TRIES = 1000


def public_private_split(labels: np.ndarray, *, public_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices 0..len(labels)-1 into stratified (public, private) index sets.

    ``round(public_fraction * n)`` records (at most n - 1) go public, each class in proportion.
    Both results are sorted int64, disjoint, and together cover every index.

    Raises
    ------
    DataError
        ``public_fraction`` outside [0, 1), or labels not a 1-D integer array.
    """
    labels = _int_vector(labels, "labels")
    if not 0.0 <= public_fraction < 1.0:
        raise DataError(f"public_fraction must be in [0, 1), got {public_fraction}")
    n = len(labels)
    n_public = min(round(public_fraction * n), max(n - 1, 0))
    public = stratified_take(labels, n_public, np.random.default_rng(seed)) if n_public else np.empty(0, dtype=np.int64)
    private = np.setdiff1d(np.arange(n, dtype=np.int64), public, assume_unique=True)
    return public, private


def partition(
    labels: np.ndarray, indices: np.ndarray, *, num_clients: int, scheme: str, alpha: float = 0.5, seed: int = 0
) -> list[np.ndarray]:
    """Partition ``indices`` (into ``labels``) over ``num_clients`` clients.

    Schemes: "iid" (random, near-equal sizes); "dirichlet" (per class, proportions drawn
    from Dirichlet(alpha) over clients, as in NIID-Bench, redrawn until each client holds
    at least min(10, n // num_clients) records); "shards" (McMahan et al. 2017: sort by
    label, cut 2 * num_clients shards, two random shards per client).

    Returns ``num_clients`` sorted int64 arrays, none empty, each index in exactly one;
    the same inputs and seed give the same output.

    Raises
    ------
    DataError
        Unknown scheme, alpha <= 0, num_clients < 1, bad or duplicate indices, too few
        records, or no acceptable Dirichlet draw within the try budget.
    """
    labels = _int_vector(labels, "labels")
    if scheme not in PARTITIONS:
        raise DataError(f"unknown scheme {scheme!r}; choose one of {', '.join(PARTITIONS)}")
    if not isinstance(num_clients, (int, np.integer)) or num_clients < 1:
        raise DataError(f"num_clients must be >= 1, got {num_clients}")
    if not alpha > 0:  # also rejects NaN
        raise DataError(f"alpha must be > 0, got {alpha}")
    # Sorting makes the result depend on the set of indices, not the order they came in.
    idx = np.sort(_int_vector(indices, "indices").astype(np.int64))
    if idx.size and (idx[0] < 0 or idx[-1] >= len(labels)):
        raise DataError(f"indices must lie in [0, {len(labels)})")
    if np.any(idx[1:] == idx[:-1]):
        raise DataError("indices contain duplicates")
    if len(idx) < num_clients:
        raise DataError(f"{len(idx)} records cannot give each of {num_clients} clients one")
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        parts = np.array_split(rng.permutation(idx), num_clients)
    elif scheme == "dirichlet":
        parts = _dirichlet(labels[idx], idx, num_clients, alpha, rng)
    else:
        parts = _shards(labels[idx], idx, num_clients, rng)
    return [np.sort(p).astype(np.int64) for p in parts]


def _int_vector(values: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise DataError(f"{what} must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    return arr


def _dirichlet(lab: np.ndarray, idx: np.ndarray, k: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    n = len(idx)
    min_size = min(10, n // k)
    # Shuffle each class once; a retry only needs fresh proportions to change the partition.
    by_class = [rng.permutation(idx[lab == c]) for c in np.unique(lab)]
    for _ in range(_DIRICHLET_TRIES):
        parts: list[list[np.ndarray]] = [[] for _ in range(k)]
        sizes = np.zeros(k, dtype=np.int64)
        for members in by_class:
            # NIID-Bench balancing: a client holding its fair share n/k gets no more of the
            # later classes, so one client cannot swallow most of the data.
            open_ = sizes < n / k  # never all False: fewer than n records are placed so far
            p = rng.dirichlet(np.full(k, alpha)) * open_
            p = p / p.sum() if p.sum() > 0 else open_ / open_.sum()  # underflow at tiny alpha
            cuts = (np.cumsum(p)[:-1] * len(members)).astype(np.int64)
            for client, chunk in enumerate(np.split(members, cuts)):
                parts[client].append(chunk)
                sizes[client] += len(chunk)
        if sizes.min() >= min_size:
            return [np.concatenate(p) for p in parts]
    raise DataError(
        f"dirichlet(alpha={alpha}): no draw in {_DIRICHLET_TRIES} tries gave all "
        f"{k} clients >= {min_size} of {n} records; use fewer clients or larger alpha"
    )


def _shards(lab: np.ndarray, idx: np.ndarray, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    n, n_shards = len(idx), 2 * k
    if n < n_shards:
        raise DataError(f"shards: {n} records cannot fill 2 * {k} = {n_shards} shards")
    # Shuffle, then stable-sort by label: shards are label-sorted runs, random within a label.
    perm = rng.permutation(n)
    order = idx[perm][np.argsort(lab[perm], kind="stable")]
    size, rem = divmod(n, n_shards)
    # The last `rem` shards take one extra record each, so no record is dropped.
    bounds = np.cumsum([size + (s >= n_shards - rem) for s in range(n_shards)])[:-1]
    shards = np.split(order, bounds)
    owner = rng.permutation(n_shards)
    return [np.concatenate([shards[owner[2 * c]], shards[owner[2 * c + 1]]]) for c in range(k)]
