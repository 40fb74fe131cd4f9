"""Tests for fedlatent.privacy.dp_sgd: Poisson batches, step counts, the DP-SGD loop."""

from __future__ import annotations

import math

import pytest
import torch

from fedlatent.learning.models import LatentClassifier
from fedlatent.learning.training import classification_losses, evaluate
from fedlatent.privacy import dp_sgd
from fedlatent.privacy.dp_sgd import PoissonBatches, dp_fit, dp_steps

# Small noise multipliers push Opacus' best RDP order to the end of its grid; it warns.
pytestmark = [pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")]

DELTA = 1e-5


def test_poisson_batches_sizes_and_reproducibility():
    n, q, steps = 1000, 0.05, 400
    x, y = torch.arange(n).float().unsqueeze(1), torch.arange(n)
    batches = list(PoissonBatches(x, y, sample_rate=q, steps=steps, generator=torch.Generator().manual_seed(6)))
    assert len(batches) == steps
    sizes = torch.tensor([len(b[1]) for b in batches]).double()
    # sd of the mean size is sqrt(n q (1 - q) / steps) = 0.34; allow 7 sd.
    assert abs(sizes.mean().item() - q * n) < 2.5
    assert all(torch.equal(bx.squeeze(1).long(), by) and len(by.unique()) == len(by) for bx, by in batches)
    again = list(PoissonBatches(x, y, sample_rate=q, steps=steps, generator=torch.Generator().manual_seed(6)))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(batches, again, strict=True))
    tiny = PoissonBatches(x[:10], y[:10], sample_rate=0.01, steps=50, generator=torch.Generator().manual_seed(7))
    assert len(tiny) == 50 and any(len(by) == 0 for _, by in tiny)


def test_dp_steps():
    assert dp_steps(epochs=1, sample_rate=0.1) == 10
    assert dp_steps(epochs=0.5, sample_rate=0.3) == 2
    assert dp_steps(epochs=3, sample_rate=1.0) == 3
    assert dp_steps(epochs=0, sample_rate=0.5) == 0


D, K = 8, 3


def blobs(n_per_class: int = 100, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """K well separated Gaussian clusters in R^D."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(K).repeat_interleave(n_per_class)
    x = (torch.eye(D)[:K] * 4.0)[y] + 0.5 * torch.randn(len(y), D, generator=g)
    return x, y


def classifier(seed: int = 0) -> LatentClassifier:
    torch.manual_seed(seed)
    return LatentClassifier(latent_dim=D, num_classes=K, hidden=(32,))


def fit(model, x, y, **overrides):
    kw = {
        "record_loss_fn": classification_losses,
        "epochs": 4.0,
        "batch_size": 50,
        "lr": 0.01,
        "noise_multiplier": 1.0,
        "max_grad_norm": 1.0,
        "generator": torch.Generator().manual_seed(8),
    } | overrides
    return dp_fit(model, x, y, **kw)


def test_dp_fit_learns_and_leaves_a_plain_model():
    x, y = blobs()
    model = classifier()
    keys = list(model.state_dict())
    loss, steps, q = fit(model, x, y)
    assert q == pytest.approx(50 / 300) and steps == dp_steps(epochs=4.0, sample_rate=q) == 24
    assert math.isfinite(loss) and loss < math.log(K)
    assert evaluate(model, x, y)[1] > 0.9  # chance is 1/3
    assert list(model.state_dict()) == keys
    for module in model.modules():
        assert not module._forward_hooks and not module._backward_hooks
    for p in model.parameters():
        assert not hasattr(p, "grad_sample") and not hasattr(p, "summed_grad") and p.grad is None
    again = classifier()
    fit(again, x, y)
    assert all(torch.equal(model.state_dict()[k], again.state_dict()[k]) for k in keys)


def test_dp_fit_clips_per_sample_gradients():
    # Without noise, the averaged gradient is a sum of per-sample gradients clipped to norm
    # 1e-12 over the expected batch size, so each coordinate is at most (n / 50) * 1e-12, and an
    # Adam step (at most lr * |g| / eps, eps = 1e-8) moves a weight by at most lr * (n / 50) * 1e-4.
    # Unclipped gradients move weights by about lr a step.
    x, y = blobs(50)
    before = classifier().state_dict()
    moved = {}
    for clip in (1e-12, 1e6):
        model = classifier()
        _, steps, _ = fit(model, x, y, noise_multiplier=0.0, max_grad_norm=clip, epochs=1.0)
        moved[clip] = max((model.state_dict()[k] - before[k]).abs().max().item() for k in before)
    assert moved[1e-12] < steps * 0.01 * (len(x) / 50) * 1e-4
    assert moved[1e6] > 0.02


class _EmptyBatches(PoissonBatches):
    def __iter__(self):
        for _ in range(self.steps):
            yield self.x[:0], self.y[:0]


def test_dp_fit_empty_batches_take_noise_only_steps(monkeypatch):
    monkeypatch.setattr(dp_sgd, "PoissonBatches", _EmptyBatches)
    x, y = blobs(15)
    before = classifier().state_dict()
    quiet = classifier()
    loss, steps, _ = fit(quiet, x, y, noise_multiplier=0.0, epochs=1.0)
    assert math.isnan(loss) and steps == 1
    assert all(torch.equal(quiet.state_dict()[k], before[k]) for k in before)
    noisy = classifier()
    fit(noisy, x, y, noise_multiplier=1.0, epochs=1.0)
    assert all(not torch.equal(noisy.state_dict()[k], before[k]) for k in before)
