"""Tests for fedlatent.privacy.mechanisms: clipping, the calibrated latent release, randomized response."""

from __future__ import annotations

import math

import pytest
import torch

from fedlatent.privacy.accounting import dp_sgd_epsilon
from fedlatent.privacy.mechanisms import clip_rows, gaussian_release, latent_noise_std, randomized_response

# Small noise multipliers push Opacus' best RDP order to the end of its grid; it warns.
pytestmark = [pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")]

DELTA = 1e-5


def test_clip_rows_bounds_norms_keeps_short_rows_and_directions():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 16, generator=g) * torch.rand(500, 1, generator=g) * 3
    clipped = clip_rows(x, max_norm=1.5)
    norms, new_norms = x.norm(dim=1), clipped.norm(dim=1)
    assert (new_norms <= 1.5 + 1e-6).all()
    short = norms <= 1.5
    assert short.any() and (~short).any()
    assert torch.equal(clipped[short], x[short])
    assert torch.allclose(new_norms[~short], torch.full_like(new_norms[~short], 1.5))
    cosine = torch.nn.functional.cosine_similarity(clipped, x, dim=1)
    assert torch.allclose(cosine, torch.ones_like(cosine), atol=1e-6)
    assert torch.equal(clip_rows(torch.zeros(3, 4), max_norm=1.0), torch.zeros(3, 4))
    with pytest.raises(ValueError):
        clip_rows(x, max_norm=0.0)


# Calibrated σ for clip C = 1, δ = 1e-5, one release, against the classic
# sqrt(2 ln(1.25/δ)) · 2C / ε (valid only for ε < 1):
#   ε = 1: RDP 8.129, PRV 7.565, classic 9.690
#   ε = 3: RDP 3.009, PRV 2.811, classic 3.230
#   ε = 8: RDP 1.281, PRV 1.207, classic 1.211 (RDP is looser than the invalid classic value)
@pytest.mark.parametrize("accountant,epsilon", [("rdp", 1.0), ("rdp", 3.0), ("rdp", 8.0), ("prv", 3.0)])
def test_latent_noise_std_is_calibrated_for_replacement(accountant, epsilon):
    clip = 2.5
    std = latent_noise_std(epsilon=epsilon, delta=DELTA, clip=clip, accountant=accountant)
    z = std / (2 * clip)  # noise in units of the sensitivity 2C
    eps = dp_sgd_epsilon(noise_multiplier=z, sample_rate=1.0, steps=1, delta=DELTA, accountant=accountant)
    assert 0.99 * epsilon <= eps <= epsilon


def test_latent_noise_std_monotone_and_composes():
    std = {e: latent_noise_std(epsilon=e, delta=DELTA, clip=1.0) for e in (0.5, 1.0, 3.0, 8.0)}
    assert std[0.5] > std[1.0] > std[3.0] > std[8.0]
    four = latent_noise_std(epsilon=3.0, delta=DELTA, clip=1.0, releases=4)
    assert four > std[3.0]
    eps = dp_sgd_epsilon(noise_multiplier=four / 2, sample_rate=1.0, steps=4, delta=DELTA)
    assert 2.97 <= eps <= 3.0
    assert latent_noise_std(epsilon=3.0, delta=DELTA, clip=2.0) == pytest.approx(2 * std[3.0])


def test_gaussian_release_noise_has_the_requested_std():
    n, d, std = 5000, 40, 0.7
    g = torch.Generator().manual_seed(1)
    noise = gaussian_release(torch.zeros(n, d, dtype=torch.float64), clip=1.0, std=std, generator=g)
    # The sample variance over N = 200 000 draws has relative sd sqrt(2/N) = 0.0032: a 3%
    # bound on the std (6% on the variance) is ~19 sd; the mean bound is 6 sd.
    assert noise.std().item() == pytest.approx(std, rel=0.03)
    assert abs(noise.mean().item()) < 6 * std / math.sqrt(n * d)


def test_gaussian_release_clips_before_noise_and_is_reproducible():
    x = torch.randn(1000, 8, generator=torch.Generator().manual_seed(2)) * 10
    released = gaussian_release(x, clip=1.0, std=0.0, generator=torch.Generator())
    assert torch.equal(released, clip_rows(x, max_norm=1.0))
    a = gaussian_release(x, clip=1.0, std=0.5, generator=torch.Generator().manual_seed(3))
    b = gaussian_release(x, clip=1.0, std=0.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert (a - clip_rows(x, max_norm=1.0)).std().item() == pytest.approx(0.5, rel=0.05)


@pytest.mark.parametrize("epsilon,k", [(1.0, 10), (0.0, 4), (3.0, 2)])
def test_randomized_response_keep_rate_and_uniform_flips(epsilon, k):
    n, true = 200_000, 1
    labels = torch.full((n,), true, dtype=torch.long)
    out = randomized_response(labels, epsilon=epsilon, num_classes=k, generator=torch.Generator().manual_seed(4))
    p_keep = math.exp(epsilon) / (math.exp(epsilon) + k - 1)
    keep_rate = (out == true).double().mean().item()
    assert abs(keep_rate - p_keep) < 6 * math.sqrt(p_keep * (1 - p_keep) / n)
    flipped = out[out != true]
    assert ((flipped >= 0) & (flipped < k)).all()
    counts = torch.bincount(flipped, minlength=k).double()
    assert counts[true] == 0
    others = counts[torch.arange(k) != true]
    expected = len(flipped) / (k - 1)
    assert (others - expected).abs().max() < 6 * math.sqrt(expected)


def test_randomized_response_edge_cases():
    labels = torch.arange(10) % 3
    g = torch.Generator().manual_seed(5)
    assert torch.equal(randomized_response(labels, epsilon=math.inf, num_classes=3, generator=g), labels)
    mixed = torch.randint(0, 5, (50_000,), generator=g)
    out = randomized_response(mixed, epsilon=2.0, num_classes=5, generator=g)
    assert abs((out == mixed).double().mean().item() - math.exp(2) / (math.exp(2) + 4)) < 0.015
    with pytest.raises(ValueError):
        randomized_response(labels, epsilon=-1.0, num_classes=3, generator=g)
    with pytest.raises(ValueError):
        randomized_response(labels, epsilon=1.0, num_classes=2, generator=g)  # label 2 out of range


# --- Poisson sampling and DP-SGD ----------------------------------------------------------
