"""The clients' partitions, as the Flower ecosystem defines them (flwr-datasets).

What: ``partition`` spreads the private records over N clients with flwr-datasets'
``IidPartitioner``, ``DirichletPartitioner`` or ``ShardPartitioner``, run over an in-memory
``datasets.Dataset`` of the labels (no hub, no download), so "Dirichlet α=0.5" here means what
it means in other Flower work. It adds what the library leaves to its user: a seeded IID order,
every record in exactly one non-empty client, and clear ``DataError``s.

Why here, above ``data/``: the data layer imports nothing of Flower (ARCHITECTURE.md import
rules). flwr-datasets costs ~30 s and ~300 MB (pyarrow, pandas) to install and ~2 s to import;
it is imported only when a partition is computed, which ``plan.make_plan`` does once per process
(and once per machine with a ``cache-dir``).
"""

from __future__ import annotations

import numpy as np

from fedlatent.data.loading import DataError
from fedlatent.data.partition import PARTITIONS, int_vector


def partition(
    labels: np.ndarray, indices: np.ndarray, *, num_clients: int, scheme: str, alpha: float = 0.5, seed: int = 0
) -> list[np.ndarray]:
    """Partition ``indices`` (into ``labels``) over ``num_clients`` clients with flwr-datasets.

    Schemes: "iid" (a seeded permutation cut into near-equal contiguous parts,
    ``IidPartitioner``); "dirichlet" (``DirichletPartitioner``: per class, proportions drawn from
    Dirichlet(alpha) over clients, redrawn until each holds at least min(10, n // num_clients)
    records; the library's defaults otherwise); "shards" (``ShardPartitioner``, McMahan et al.
    2017: sorted by label, cut into shards of n // (2 num_clients) records, about two random
    shards per client; the incomplete last shard is kept so that no record is dropped).

    Returns ``num_clients`` sorted int64 arrays, none empty, each index in exactly one;
    the same inputs and seed give the same output.

    Raises
    ------
    DataError
        Unknown scheme, alpha <= 0, num_clients < 1, bad or duplicate indices, too few
        records, or no acceptable Dirichlet draw within the library's tries.
    """
    labels = int_vector(labels, "labels")
    if scheme not in PARTITIONS:
        raise DataError(f"unknown scheme {scheme!r}; choose one of {', '.join(PARTITIONS)}")
    if not isinstance(num_clients, (int, np.integer)) or num_clients < 1:
        raise DataError(f"num_clients must be >= 1, got {num_clients}")
    if not alpha > 0:  # also rejects NaN
        raise DataError(f"alpha must be > 0, got {alpha}")
    # Sorting makes the result depend on the set of indices, not the order they came in.
    idx = np.sort(int_vector(indices, "indices").astype(np.int64))
    if idx.size and (idx[0] < 0 or idx[-1] >= len(labels)):
        raise DataError(f"indices must lie in [0, {len(labels)})")
    if np.any(idx[1:] == idx[:-1]):
        raise DataError("indices contain duplicates")
    if len(idx) < num_clients:
        raise DataError(f"{len(idx)} records cannot give each of {num_clients} clients one")
    if scheme == "shards" and len(idx) < 2 * num_clients:
        raise DataError(f"shards: {len(idx)} records cannot fill 2 * {num_clients} = {2 * num_clients} shards")
    if scheme == "iid":  # IidPartitioner cuts contiguous runs: the seeded order makes them random
        idx = np.random.default_rng(seed).permutation(idx)
    parts = _flower_partition(labels[idx], idx, num_clients, scheme, alpha, seed)
    placed = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    if len(placed) != len(idx) or len(np.unique(placed)) != len(idx) or min(len(p) for p in parts) == 0:
        raise DataError(f"{scheme}: the partition left a client empty or a record out; use fewer clients")
    return [np.sort(p).astype(np.int64) for p in parts]


def _flower_partition(
    lab: np.ndarray, idx: np.ndarray, k: int, scheme: str, alpha: float, seed: int
) -> list[np.ndarray]:
    """The records of each client as flwr-datasets' partitioner of ``scheme`` assigns them."""
    import warnings

    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, Partitioner, ShardPartitioner

    n = len(idx)
    partitioner: Partitioner
    if scheme == "iid":
        partitioner = IidPartitioner(num_partitions=k)
    elif scheme == "dirichlet":
        min_size = min(10, n // k)
        partitioner = DirichletPartitioner(k, "label", alpha, min_partition_size=min_size, seed=seed)
    else:
        partitioner = ShardPartitioner(k, "label", shard_size=n // (2 * k), keep_incomplete_shard=True, seed=seed)
    partitioner.dataset = Dataset.from_dict({"label": lab, "record": idx})
    with warnings.catch_warnings():  # each Dirichlet redraw warns; the outcome is what counts
        warnings.simplefilter("ignore")
        try:
            return [np.asarray(partitioner.load_partition(c)["record"], dtype=np.int64) for c in range(k)]
        except ValueError as err:
            raise DataError(f"{scheme}(alpha={alpha}) over {k} clients and {n} records: {err}") from err
