"""The partitions are flwr-datasets' own: the same records per client as its partitioners give."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset
from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, ShardPartitioner

from fedlatent.data.loading import DataError
from fedlatent.partitions import partition

LABELS = np.random.default_rng(5).integers(0, 10, 3000)
PRIVATE = np.sort(np.random.default_rng(6).choice(3000, 2500, replace=False))


def flower(partitioner, labels: np.ndarray, idx: np.ndarray) -> list[list[int]]:
    partitioner.dataset = Dataset.from_dict({"label": labels[idx], "record": idx})
    return [sorted(partitioner.load_partition(c)["record"]) for c in range(partitioner.num_partitions)]


def test_dirichlet_is_flowers_dirichlet_partitioner() -> None:
    ours = partition(LABELS, PRIVATE, num_clients=8, scheme="dirichlet", alpha=0.5, seed=3)
    theirs = flower(DirichletPartitioner(8, "label", 0.5, min_partition_size=10, seed=3), LABELS, PRIVATE)
    assert [p.tolist() for p in ours] == theirs
    sizes = [len(p) for p in ours]
    assert max(sizes) > 2 * min(sizes)  # alpha 0.5: visibly skewed


def test_shards_are_flowers_shard_partitioner_with_no_record_dropped() -> None:
    ours = partition(LABELS, PRIVATE, num_clients=8, scheme="shards", seed=3)
    size = len(PRIVATE) // 16
    theirs = flower(ShardPartitioner(8, "label", shard_size=size, keep_incomplete_shard=True, seed=3), LABELS, PRIVATE)
    assert [p.tolist() for p in ours] == theirs
    assert sum(len(p) for p in ours) == len(PRIVATE)
    assert np.median([len(np.unique(LABELS[p])) for p in ours]) <= 3  # about two label-sorted shards each


def test_iid_is_flowers_iid_partitioner_over_a_seeded_order() -> None:
    ours = partition(LABELS, PRIVATE, num_clients=7, scheme="iid", seed=4)
    order = np.random.default_rng(4).permutation(PRIVATE)
    assert [p.tolist() for p in ours] == flower(IidPartitioner(7), LABELS, order)
    assert max(len(p) for p in ours) - min(len(p) for p in ours) <= 1


def test_an_impossible_dirichlet_draw_is_a_data_error_naming_the_setting() -> None:
    with pytest.raises(DataError, match=r"dirichlet\(alpha=0.01\) over 100 clients"):
        partition(LABELS[:1000], np.arange(1000), num_clients=100, scheme="dirichlet", alpha=0.01)
