"""Tests for fedlatent.privacy.statistics: additive statistics, their sensitivity, and the LDA they define."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from fedlatent.privacy.statistics import (
    Projected,
    client_statistics,
    decode_statistics,
    fit_projection,
    lda_from_statistics,
    statistics_dim,
    statistics_ridge,
)


def _blobs(n: int = 600, p: int = 6, k: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    centers = torch.randn(k, p, generator=g) * 0.4
    return (centers[y] + 0.15 * torch.randn(n, p, generator=g)).double(), y


def test_statistics_add_up_over_clients_and_decode_back():
    u, y = _blobs()
    whole = client_statistics(u, y, num_classes=3, clip=10.0)
    parts = sum(client_statistics(u[i::3], y[i::3], num_classes=3, clip=10.0) for i in range(3))
    assert torch.allclose(whole, parts) and len(whole) == statistics_dim(3, 6)
    sums, counts, moment = decode_statistics(whole.numpy() * 7.0, num_classes=3, dim=6, clip=10.0, scale=7.0)
    np.testing.assert_allclose(counts, torch.bincount(y, minlength=3).numpy())
    np.testing.assert_allclose(sums[1], u[y == 1].sum(0).numpy(), atol=1e-9)
    np.testing.assert_allclose(moment, (u.T @ u).numpy(), atol=1e-9)


def test_one_record_moves_the_vector_by_at_most_root_three_clips():
    u, y = _blobs(50)
    clip = float(u.norm(dim=1).max())
    base = client_statistics(u[:-1], y[:-1], num_classes=3, clip=clip)
    more = client_statistics(u, y, num_classes=3, clip=clip)
    assert (more - base).norm() <= math.sqrt(3) * clip + 1e-9
    with pytest.raises(ValueError, match="clipped"):
        client_statistics(u * 2, y, num_classes=3, clip=clip)


def test_lda_from_exact_statistics_predicts_as_sklearns_lda():
    u, y = _blobs()
    sums, counts, moment = decode_statistics(client_statistics(u, y, num_classes=3, clip=10.0).numpy(),
                                             num_classes=3, dim=6, clip=10.0, scale=1.0)  # fmt: skip
    w, b = lda_from_statistics(sums, counts, moment, ridge=1e-9)
    ours = np.argmax(u.numpy() @ w.T + b, axis=1)
    theirs = LinearDiscriminantAnalysis(solver="lsqr").fit(u.numpy(), y.numpy()).predict(u.numpy())
    assert (ours == theirs).mean() >= 0.99
    assert (ours == y.numpy()).mean() > 0.9


def test_the_projection_puts_most_public_latents_inside_the_unit_ball():
    z, _ = _blobs(400, p=20)
    mean, basis = fit_projection(z.float(), 5)
    norms = ((z.float() - mean) @ basis).norm(dim=1)
    assert basis.shape == (20, 5) and float((norms <= 1.0 + 1e-5).float().mean()) == pytest.approx(0.9, abs=0.01)
    model = Projected(mean, basis, clip=1.0, num_classes=3)
    assert model.project(z.float()).norm(dim=1).max() <= 1.0 + 1e-5 and model(z.float()).shape == (400, 3)
    with pytest.raises(ValueError, match="stat-dim"):
        fit_projection(z[:4].float(), 5)


def test_the_ridge_rises_with_the_noise():
    quiet = statistics_ridge(clip=1.0, dim=64, moment_noise_std=0.0, records=1e4)
    loud = statistics_ridge(clip=1.0, dim=64, moment_noise_std=100.0, records=1e4)
    assert quiet == 0.01 / 64 and loud == 2 * 8 * 100.0 / 1e4
