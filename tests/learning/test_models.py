"""Tests for fedlatent.models: shapes, output ranges, linear heads, Opacus compatibility."""

from __future__ import annotations

import pytest
import torch
from opacus import GradSampleModule
from opacus.validators import ModuleValidator
from torch import nn

from fedlatent.learning.models import Autoencoder, Decoder, Encoder, ImageClassifier, LatentClassifier
from fedlatent.learning.training import classification_losses, reconstruction_record_losses
from fedlatent.privacy.book_keeping import supports
from fedlatent.privacy.clipping import METHODS, method_for
from fedlatent.privacy.dp_sgd import dp_fit

SHAPES = [(1, 8, 8), (1, 28, 28)]
AE_ARCHS = ["mlp", "conv"]
B, D = 5, 6


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def leaves(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if not list(m.children())]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("arch", AE_ARCHS)
def test_autoencoder_shapes(shape, arch):
    x = torch.rand(B, *shape)
    ae = Autoencoder(image_shape=shape, latent_dim=D, arch=arch)
    z = ae.encoder(x)
    assert z.shape == (B, D)
    assert ae.decoder(z).shape == (B, *shape)
    assert ae(x).shape == (B, *shape)
    assert Encoder(image_shape=shape, latent_dim=D, arch=arch)(x).shape == (B, D)
    assert Decoder(image_shape=shape, latent_dim=D, arch=arch)(torch.randn(B, D)).shape == (B, *shape)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("arch", AE_ARCHS)
def test_decoder_output_in_unit_interval(shape, arch):
    dec = Decoder(image_shape=shape, latent_dim=D, arch=arch)
    out = dec(torch.randn(64, D) * 50)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.min() < 0.5 < out.max()  # not a constant


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("arch", AE_ARCHS)
def test_encoder_bottleneck_is_linear(shape, arch):
    enc = Encoder(image_shape=shape, latent_dim=D, arch=arch)
    last = leaves(enc)[-1]
    assert isinstance(last, nn.Linear) and last.out_features == D
    z = enc(torch.rand(32, *shape))
    assert (z < 0).any(), "no negative latents: a ReLU at the bottleneck?"
    assert (z > 0).any()


@pytest.mark.parametrize(
    "model, x",
    [
        (LatentClassifier(latent_dim=D, num_classes=10), torch.randn(16, D)),
        (ImageClassifier(image_shape=(1, 8, 8), num_classes=10, arch="mlp"), torch.rand(16, 1, 8, 8)),
        (ImageClassifier(image_shape=(1, 8, 8), num_classes=10, arch="cnn"), torch.rand(16, 1, 8, 8)),
        (ImageClassifier(image_shape=(1, 28, 28), num_classes=10, arch="mlp"), torch.rand(16, 1, 28, 28)),
        (ImageClassifier(image_shape=(1, 28, 28), num_classes=10, arch="cnn"), torch.rand(16, 1, 28, 28)),
    ],
    ids=["latent", "mlp8", "cnn8", "mlp28", "cnn28"],
)
def test_classifier_logits(model, x):
    logits = model(x)
    assert logits.shape == (16, 10)
    assert isinstance(leaves(model)[-1], nn.Linear)
    assert (logits < 0).any(), "no negative logits: a ReLU on the output?"


def test_classifier_num_classes():
    assert LatentClassifier(latent_dim=3, num_classes=4)(torch.randn(2, 3)).shape == (2, 4)
    assert ImageClassifier(image_shape=(1, 8, 8), num_classes=3, arch="cnn")(torch.rand(2, 1, 8, 8)).shape == (2, 3)


@pytest.mark.parametrize("shape", [(1, 10, 10), (1, 6, 6), (1, 8, 12)])
@pytest.mark.parametrize("cls", [Encoder, Decoder, Autoencoder])
def test_conv_needs_square_side_divisible_by_4(cls, shape):
    with pytest.raises(ValueError, match="divisible by 4"):
        cls(image_shape=shape, latent_dim=D, arch="conv")


def test_mlp_accepts_any_side():
    ae = Autoencoder(image_shape=(1, 10, 10), latent_dim=D, arch="mlp")
    assert ae(torch.rand(2, 1, 10, 10)).shape == (2, 1, 10, 10)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Encoder(image_shape=(1, 8, 8), latent_dim=D, arch="vae"),
        lambda: Decoder(image_shape=(1, 8, 8), latent_dim=D, arch="vae"),
        lambda: Autoencoder(image_shape=(1, 8, 8), latent_dim=D, arch="cnn"),
        lambda: ImageClassifier(image_shape=(1, 8, 8), num_classes=10, arch="conv"),
    ],
)
def test_unknown_arch_raises(build):
    with pytest.raises(ValueError, match="unknown"):
        build()


OPACUS_MODELS = {
    "image-cnn": (lambda: ImageClassifier(image_shape=(1, 8, 8), num_classes=10, arch="cnn"), (1, 8, 8)),
    "image-mlp": (lambda: ImageClassifier(image_shape=(1, 8, 8), num_classes=10, arch="mlp"), (1, 8, 8)),
    "latent": (lambda: LatentClassifier(latent_dim=D, num_classes=10), (D,)),
    "ae-mlp": (lambda: Autoencoder(image_shape=(1, 8, 8), latent_dim=D, arch="mlp"), (1, 8, 8)),
    "ae-conv": (lambda: Autoencoder(image_shape=(1, 8, 8), latent_dim=D, arch="conv"), (1, 8, 8)),
    "tanh-cnn": (lambda: ImageClassifier(image_shape=(1, 16, 16), num_classes=10, arch="tanh-cnn"), (1, 16, 16)),
    "linear": (lambda: LatentClassifier(latent_dim=D, num_classes=10, hidden=()), (D,)),
}


@pytest.mark.parametrize("name", list(OPACUS_MODELS))
def test_opacus_compatible(name):
    build, in_shape = OPACUS_MODELS[name]
    model = build()
    assert ModuleValidator.validate(model, strict=False) == []
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    # Per-sample gradients actually compute, one per example.
    gsm = GradSampleModule(model)
    gsm(torch.rand(3, *in_shape).requires_grad_()).sum().backward()  # input grad: no hook warning
    for p in gsm.parameters():
        assert p.grad_sample is not None and p.grad_sample.shape == (3, *p.shape)


def test_tanh_cnn_is_papernots_26k_weight_network_and_refuses_small_images():
    model = ImageClassifier(image_shape=(1, 28, 28), num_classes=10, arch="tanh-cnn")
    assert sum(p.numel() for p in model.parameters()) == 26010
    assert sum(isinstance(m, nn.Tanh) for m in model.modules()) == 3
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="16x16"):
        ImageClassifier(image_shape=(1, 8, 8), num_classes=10, arch="tanh-cnn")


def _methods(name: str) -> list[str]:
    """Every clipping method that handles the model (book-keeping: Linear, Conv2d, GroupNorm only)."""
    return [m for m in METHODS if m != "book-keeping" or supports(OPACUS_MODELS[name][0]())]


@pytest.mark.parametrize(("name", "method"), [(n, m) for n in OPACUS_MODELS for m in _methods(n)])
def test_dp_fit_step_is_the_mean_of_clipped_per_record_gradients(name, method):
    # No clipping method of dp_fit is the textbook one (book-keeping and ghost clipping never
    # materialize a record's gradient; vmap vectorizes), so check each one's update against
    # per-record gradients computed one by one, for every model fedlatent trains.
    # SGD with lr 1, no momentum and no noise exposes the privatized gradient.
    build, in_shape = OPACUS_MODELS[name]
    model = build()
    loss_fn = reconstruction_record_losses if isinstance(model, Autoencoder) else classification_losses
    x, y = torch.rand(8, *in_shape), torch.randint(0, 10, (8,))
    grads = []
    for i in range(len(x)):
        model.zero_grad()
        loss_fn(model, x[i : i + 1], y[i : i + 1]).sum().backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    norms = [float(torch.sqrt(sum((g**2).sum() for g in gs.values()))) for gs in grads]
    clip = sorted(norms)[len(norms) // 2]  # half the records are clipped
    mean = {
        k: sum(gs[k] * min(1.0, clip / (n + 1e-6)) for gs, n in zip(grads, norms, strict=True)) / len(x)
        for k in grads[0]
    }
    expected = {k: p.detach() - mean[k] for k, p in model.named_parameters()}
    _, steps, rate = dp_fit(
        model,
        x,
        y,
        record_loss_fn=loss_fn,
        epochs=1.0,
        batch_size=len(x),
        lr=1.0,
        noise_multiplier=0.0,
        max_grad_norm=clip,
        generator=torch.Generator().manual_seed(0),
        optimizer="sgd",
        method=method,
    )
    assert (steps, rate) == (1, 1.0)  # one step over every record
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[k], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", AE_ARCHS)
def test_seed_bugs_put_the_seeds_two_relus_back_and_keep_the_weight_keys(arch):
    """``seed-bugs`` reproduces the seed: no negative latent or logit, same state_dict (weights load)."""
    fixed = Autoencoder(image_shape=(1, 28, 28), latent_dim=D, arch=arch)
    buggy = Autoencoder(image_shape=(1, 28, 28), latent_dim=D, arch=arch, seed_bugs=True)
    buggy.load_state_dict(fixed.state_dict())  # strict: the keys are the same
    x = torch.rand(32, 1, 28, 28)
    z_fixed, z_buggy = fixed.encoder(x), buggy.encoder(x)
    assert (z_fixed < 0).any() and (z_buggy >= 0).all()
    assert torch.equal(z_buggy, z_fixed.clamp(min=0))
    head = LatentClassifier(latent_dim=D, num_classes=10)
    bad = LatentClassifier(latent_dim=D, num_classes=10, seed_bugs=True)
    bad.load_state_dict(head.state_dict())
    z = torch.randn(16, D)
    assert torch.equal(bad(z), head(z).clamp(min=0))


def test_every_model_fedlatent_trains_takes_book_keeping_but_the_conv_decoder():
    # The timings in docs/privacy.md chose book-keeping wherever it applies; Opacus' ghost
    # clipping covers what it does not (the conv autoencoder's transposed convolutions).
    chosen = {name: method_for(build()) for name, (build, _) in OPACUS_MODELS.items()}
    assert chosen == {name: "ghost" if name == "ae-conv" else "book-keeping" for name in OPACUS_MODELS}
    # ...but a convnet's largest batches take vmap, the MLPs never do.
    large = {name: method_for(build(), 2028) for name, (build, _) in OPACUS_MODELS.items()}
    assert {n for n, m in large.items() if m == "vmap"} == {"image-cnn", "tanh-cnn"}
    assert large["ae-conv"] == "ghost" and method_for(OPACUS_MODELS["tanh-cnn"][0](), 1023) == "book-keeping"
