"""ScatterNet features: fixed shape, deterministic, cached and reloaded bit-identically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fedlatent.config import RunConfig
from fedlatent.learning import scatter
from fedlatent.learning.models import Encoder
from fedlatent.learning.scatter import FEATURES, ScatterFeatures, feature_dim, feature_shape


def test_the_documented_shapes_on_digits_and_28x28() -> None:
    assert feature_shape((1, 28, 28)) == (81, 7, 7) and feature_dim((1, 28, 28)) == 3969  # J=2, L=8
    assert feature_shape((1, 8, 8)) == (9, 4, 4) and feature_dim((1, 8, 8)) == 144  # J=1 on digits
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    z = ScatterFeatures((1, 28, 28)).transform(x)
    assert z.shape == (5, 3969) and torch.isfinite(z).all()
    # Normalised per image over groups of channels: zero mean, variance var / (var + eps) <= 1.
    groups = z.reshape(5, 27, -1)
    var = groups.var(-1, unbiased=False)
    assert groups.mean(-1).abs().max() < 1e-4 and var.max() <= 1 + 1e-4 and var.max() > 0.9
    for dataset, dim in (("digits", 144), ("fashion-mnist", 3969), ("mnist-5k", 3969)):
        assert RunConfig.from_run_config({"dataset": dataset, "encoder": "scatternet"}).feature_dim == dim


def test_features_are_deterministic_and_data_free() -> None:
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    a, b = Encoder(image_shape=(1, 8, 8), latent_dim=144, arch="scatternet"), ScatterFeatures((1, 8, 8))
    assert torch.equal(a(x), b.transform(x))  # two independently built encoders agree: nothing learned
    assert sum(p.numel() for p in a.parameters()) == 0


def test_features_are_cached_and_reloaded_bit_identically(tmp_path: Path, monkeypatch) -> None:
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    FEATURES.clear()
    first = ScatterFeatures((1, 28, 28), cache_dir=str(tmp_path))(x)
    (entry,) = tmp_path.glob("scatter-*.npy")
    FEATURES.clear()  # a fresh process: only the disk copy is left
    calls: list[int] = []
    original = ScatterFeatures.transform
    monkeypatch.setattr(ScatterFeatures, "transform", lambda self, v: (calls.append(1), original(self, v))[1])
    again = ScatterFeatures((1, 28, 28), cache_dir=str(tmp_path))(x)
    assert calls == [] and np.array_equal(first.numpy(), again.numpy())
    entry.write_bytes(b"damaged")
    FEATURES.clear()
    assert np.array_equal(ScatterFeatures((1, 28, 28), cache_dir=str(tmp_path))(x).numpy(), first.numpy())
    assert calls == [1]  # the damaged entry was recomputed


def test_an_attacker_can_differentiate_through_the_features() -> None:
    x = torch.rand(1, 1, 8, 8, requires_grad=True)
    ScatterFeatures((1, 8, 8))(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert scatter.scales((1, 8, 8)) == 1
