"""Tests for fedlatent.training on tiny synthetic data."""

from __future__ import annotations

import pytest
import torch

from fedlatent.learning.models import Autoencoder, Encoder, LatentClassifier
from fedlatent.learning.training import (
    encode,
    evaluate,
    make_loader,
    reconstruction_loss,
    train_autoencoder,
    train_classifier,
)

D, K = 4, 3


def blobs(n_per_class: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """K well separated Gaussian clusters in R^D."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.eye(D)[:K] * 6.0
    y = torch.arange(K).repeat_interleave(n_per_class)
    x = centers[y] + 0.5 * torch.randn(len(y), D, generator=g)
    return x, y


def fresh_classifier(seed: int = 0) -> LatentClassifier:
    torch.manual_seed(seed)
    return LatentClassifier(latent_dim=D, num_classes=K, hidden=(16,))


def weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.state_dict().values()]


def test_train_classifier_learns_separable_data():
    x, y = blobs()
    model = fresh_classifier()
    test_x, test_y = blobs(seed=1)
    loss_before, _ = evaluate(model, test_x, test_y)
    loss = train_classifier(model, x, y, epochs=5, batch_size=16, lr=3e-2, generator=torch.Generator().manual_seed(0))
    test_loss, acc = evaluate(model, test_x, test_y)
    assert acc >= 0.95
    assert loss < 0.5 and test_loss < min(0.5, loss_before)


def test_evaluate_counts_correctly():
    # A fixed linear model whose argmax is the first coordinate's sign.
    model = torch.nn.Linear(1, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-1.0], [1.0]]))
        model.bias.zero_()
    x = torch.tensor([[-1.0], [2.0], [3.0], [-4.0]])
    y = torch.tensor([0, 1, 0, 0])
    loss, acc = evaluate(model, x, y, batch_size=3)  # batch_size < n: the loop is exercised
    assert acc == pytest.approx(0.75)
    expected = torch.nn.functional.cross_entropy(model(x), y).item()
    assert loss == pytest.approx(expected, rel=1e-5)


def _train(gen_seed: int) -> list[torch.Tensor]:
    x, y = blobs()
    model = fresh_classifier()
    train_classifier(model, x, y, epochs=2, batch_size=8, lr=1e-2, generator=torch.Generator().manual_seed(gen_seed))
    return weights(model)


def test_training_is_reproducible_from_generator():
    a, b, c = _train(1), _train(1), _train(2)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a, c, strict=True))


def test_training_ignores_global_rng_after_init():
    x, y = blobs()
    out = []
    for global_seed in (10, 20):
        model = fresh_classifier()
        torch.manual_seed(global_seed)
        train_classifier(model, x, y, epochs=1, batch_size=8, lr=1e-2, generator=torch.Generator().manual_seed(3))
        out.append(weights(model))
    assert all(torch.equal(p, q) for p, q in zip(*out, strict=True))


def test_loader_order_follows_generator():
    x = torch.arange(20.0)[:, None]
    y = torch.zeros(20, dtype=torch.long)

    def order(seed: int) -> list[float]:
        loader = make_loader(x, y, batch_size=20, generator=torch.Generator().manual_seed(seed))
        return next(iter(loader))[0].flatten().tolist()

    assert order(5) == order(5)
    assert order(5) != order(6)
    assert sorted(order(5)) == x.flatten().tolist()


def test_train_autoencoder_lowers_reconstruction_loss():
    g = torch.Generator().manual_seed(0)
    prototypes = (torch.rand(4, 1, 8, 8, generator=g) > 0.5).float()
    x = (prototypes[torch.arange(64) % 4] * 0.9 + 0.05).clamp(0, 1)
    torch.manual_seed(0)
    ae = Autoencoder(image_shape=(1, 8, 8), latent_dim=D, arch="conv")  # small: fast on 2 cores
    with torch.no_grad():
        before = reconstruction_loss(ae, x, x).item()
    last = train_autoencoder(ae, x, epochs=6, batch_size=16, lr=1e-2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        after = reconstruction_loss(ae.eval(), x, x).item()
    assert after < 0.8 * before
    assert last < before


def test_fit_raises_on_nan_loss():
    x, y = blobs()
    x[3, 0] = float("nan")
    model = fresh_classifier()
    with pytest.raises(FloatingPointError):
        train_classifier(model, x, y, epochs=1, batch_size=len(x), lr=1e-2, generator=torch.Generator())


def test_fit_raises_on_nan_weights():
    x, y = blobs()
    model = fresh_classifier()
    with torch.no_grad():
        next(model.parameters())[0, 0] = float("inf")
    with pytest.raises(FloatingPointError):
        train_classifier(model, x, y, epochs=1, batch_size=8, lr=1e-2, generator=torch.Generator())


def test_encode_shape_and_no_grad():
    torch.manual_seed(0)
    enc = Encoder(image_shape=(1, 8, 8), latent_dim=D)
    x = torch.rand(7, 1, 8, 8)
    z = encode(enc, x, batch_size=3)
    assert z.shape == (7, D)
    assert not z.requires_grad and z.grad_fn is None
    assert not enc.training
    with torch.no_grad():
        assert torch.allclose(z, enc(x))


def test_hybrid_autoencoder_makes_latents_carry_the_public_labels():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from fedlatent.learning.training import encode, train_autoencoder, train_hybrid_autoencoder

    digits = load_digits()
    x = torch.from_numpy(digits.images[:600] / 16.0).float()[:, None]
    y = torch.from_numpy(digits.target[:600]).long()
    accs = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        ae = Autoencoder(image_shape=(1, 8, 8), latent_dim=2)  # 2-d: too small to keep everything
        keys = set(ae.state_dict())
        kw = {"epochs": 15, "batch_size": 32, "lr": 1e-3, "generator": torch.Generator().manual_seed(0)}
        if weight:
            train_hybrid_autoencoder(ae, x[:400], y[:400], num_classes=10, label_weight=weight, **kw)
        else:
            train_autoencoder(ae, x[:400], **kw)
        assert set(ae.state_dict()) == keys  # the head is not part of the autoencoder
        z = encode(ae.encoder, x).numpy()
        probe = LogisticRegression(max_iter=2000).fit(z[:400], y[:400].numpy())
        accs[weight] = probe.score(z[400:], y[400:].numpy())
    assert accs[1.0] > accs[0.0] + 0.1, accs
