"""Tests for fedlatent.privacy.clipping: every method's clipped sum equals Opacus' to float tolerance."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedlatent.learning.models import Autoencoder, ImageClassifier, LatentClassifier
from fedlatent.learning.training import classification_losses, reconstruction_record_losses
from fedlatent.privacy.book_keeping import bk_clipped_sum, supports
from fedlatent.privacy.clipping import METHODS

MODELS = {
    "image-mlp": lambda: ImageClassifier(image_shape=(1, 28, 28), num_classes=10, arch="mlp"),
    "image-cnn": lambda: ImageClassifier(image_shape=(1, 28, 28), num_classes=10, arch="cnn"),
    "tanh-cnn": lambda: ImageClassifier(image_shape=(1, 28, 28), num_classes=10, arch="tanh-cnn"),
    "latent-mlp": lambda: LatentClassifier(latent_dim=64, num_classes=10),
    "scatter-linear": lambda: LatentClassifier(latent_dim=3969, num_classes=10, hidden=()),
    "ae-mlp": lambda: Autoencoder(image_shape=(1, 28, 28), latent_dim=16),
}


def _sums(method: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, clip: float) -> list[torch.Tensor]:
    loss_fn = reconstruction_record_losses if isinstance(model, Autoencoder) else classification_losses
    with METHODS[method](model, loss_fn, clip) as run:
        return run(x, y)[0]


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("method", ["book-keeping", "vmap"])
def test_clipped_sum_is_opacus_ghost_clipping(name, method):
    torch.manual_seed(0)
    model = MODELS[name]()
    assert supports(model)
    shape = (3969,) if name == "scatter-linear" else (64,) if name == "latent-mlp" else (1, 28, 28)
    x, y = torch.rand(24, *shape), torch.randint(0, 10, (24,))
    for clip in (1e-3, 1e6):  # every record clipped; none clipped
        ours, opacus = _sums(method, model, x, y, clip), _sums("ghost", model, x, y, clip)
        assert len(ours) == len(opacus) == len(list(model.parameters()))
        for a, b in zip(ours, opacus, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * clip)
    assert all(p.grad is None for p in model.parameters())  # the model is left as it was


def test_book_keeping_refuses_a_layer_called_twice_and_unsupported_layers():
    shared = nn.Linear(4, 4)
    twice = nn.Sequential(shared, nn.Tanh(), shared)
    with pytest.raises(ValueError, match="exactly once"):
        bk_clipped_sum(twice, torch.rand(3, 4), torch.zeros(3, dtype=torch.long),
                       record_loss_fn=classification_losses, max_grad_norm=1.0)  # fmt: skip
    assert not supports(nn.Sequential(nn.Flatten(), nn.ConvTranspose2d(1, 1, 3)))
    assert not supports(nn.Conv2d(2, 2, 3, groups=2))
