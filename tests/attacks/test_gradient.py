"""Tests for fedlatent.attacks.gradient on 8x8 digits and tiny synthetic server views."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from torch import nn

from fedlatent.attacks.gradient import gradient_inversion, infer_labels, invert_gradient
from fedlatent.attacks.metrics import ssim
from fedlatent.attacks.scoring import Truth, score_gradient_inversion
from fedlatent.attacks.view import AttackerView, Upload
from fedlatent.config import RunConfig
from fedlatent.data.loading import Dataset, load_dataset
from fedlatent.learning.models import Encoder, ImageClassifier
from fedlatent.learning.training import train_classifier
from fedlatent.plan import build_classifier


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def mlp(seed: int = 0) -> ImageClassifier:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ImageClassifier(image_shape=(1, 8, 8), num_classes=10, arch="mlp")


def true_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    loss = nn.functional.cross_entropy(model(x), y)
    return list(torch.autograd.grad(loss, list(model.parameters())))


def test_one_image_is_recovered_from_its_gradient(digits):
    x, y = torch.from_numpy(digits.x_train[5:6]), torch.from_numpy(digits.y_train[5:6])
    model = mlp()
    before = [p.detach().clone() for p in model.parameters()]
    grads = true_gradient(model, x, y)
    recon, labels = invert_gradient(
        model, grads, input_shape=(1, 8, 8), steps=200, lr=0.1, generator=torch.Generator().manual_seed(0)
    )
    assert labels.tolist() == y.tolist()  # iDLG: the label comes from the last layer's gradient
    assert recon.shape == x.shape and 0.0 <= float(recon.min()) and float(recon.max()) <= 1.0
    assert ssim(recon, x)[0] > 0.8
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # model untouched


def test_soft_labels_and_l2_matching_also_recover_the_image(digits):
    x, y = torch.from_numpy(digits.x_train[5:6]), torch.from_numpy(digits.y_train[5:6])
    model = mlp()
    grads = true_gradient(model, x, y)
    gen = torch.Generator().manual_seed(0)
    recon, labels = invert_gradient(model, grads, input_shape=(1, 8, 8), steps=200, infer=False, generator=gen)
    assert labels.tolist() == y.tolist() and ssim(recon, x)[0] > 0.8  # DLG: labels optimized as soft labels
    recon, _ = invert_gradient(model, grads, input_shape=(1, 8, 8), steps=200, labels=y, loss="l2", generator=gen)
    assert ssim(recon, x)[0] > 0.8


def test_label_inference_reads_the_last_layer(digits):
    model = mlp(1)
    for i in range(5):
        x, y = torch.from_numpy(digits.x_train[i : i + 1]), torch.from_numpy(digits.y_train[i : i + 1])
        assert infer_labels(model, true_gradient(model, x, y), 1).tolist() == y.tolist()


def test_random_gradient_reconstructs_no_digit(digits):
    model = mlp()
    g = torch.Generator().manual_seed(1)
    fake = [torch.randn(p.shape, generator=g) for p in model.parameters()]
    recon, _ = invert_gradient(
        model, fake, input_shape=(1, 8, 8), steps=200, generator=torch.Generator().manual_seed(0)
    )
    records = digits.x_train[:200]
    best = ssim(np.broadcast_to(recon.numpy(), records.shape), records).max()
    assert best < 0.5  # a real reconstruction scores > 0.8 against its source


def test_bad_loss_name_is_refused():
    model = mlp()
    with pytest.raises(ValueError, match="cosine"):
        invert_gradient(
            model,
            [torch.zeros_like(p) for p in model.parameters()],
            input_shape=(1, 8, 8),
            loss="l1",  # type: ignore[arg-type]
            generator=torch.Generator(),
        )


def synthetic_view(digits: Dataset, settings: dict, encoder: bool) -> tuple[AttackerView, Truth]:
    """A server view with one classifier upload of client 0 (trained on 16 records) and its truth."""
    cfg = RunConfig.from_run_config({"rounds": 1, "local-epochs": 2, "batch-size": 8, "latent-dim": 8, **settings})
    aux_x, aux_y = digits.x_train[:150], digits.y_train[:150]
    cx, cy = digits.x_train[200:216], digits.y_train[200:216]
    start_model = build_classifier(cfg, digits)
    start = {k: v.detach().numpy().copy() for k, v in start_model.state_dict().items()}
    enc_state = None
    inputs = torch.from_numpy(cx)
    if cfg.is_latent:
        with torch.random.fork_rng():
            torch.manual_seed(3)
            enc = Encoder(image_shape=(1, 8, 8), latent_dim=cfg.latent_dim).eval()
        with torch.no_grad():
            inputs = enc(inputs)
        enc_state = {k: v.numpy().copy() for k, v in enc.state_dict().items()} if encoder else None
    train_classifier(
        start_model,
        inputs,
        torch.from_numpy(cy),
        epochs=cfg.local_epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        generator=torch.Generator().manual_seed(0),
    )
    weights = {k: v.detach().numpy().copy() for k, v in start_model.state_dict().items()}
    view = AttackerView(
        cfg=cfg,
        aux_x=aux_x,
        aux_y=aux_y,
        test_x=digits.x_test[:50],
        test_y=digits.y_test[:50],
        num_classes=10,
        encoder_state=enc_state,
        final_state=weights,
        uploads=[Upload("classifier", 1, 0, weights, start), Upload("classifier", 1, 1, weights, None)],
    )
    return view, Truth(client_x={0: cx}, client_y={0: cy})


def finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def test_gradient_inversion_on_a_raw_upload(digits):
    view, truth = synthetic_view(digits, {"mode": "raw"}, encoder=False)
    out = gradient_inversion(view, num_inputs=2, steps=30)
    assert list(out.images) == [(1, 0)]  # the upload without a recorded start is skipped
    assert out.images[(1, 0)].shape == (2, 1, 8, 8) and out.labels[(1, 0)].shape == (2,)
    assert out.settings["steps"] == 30 and out.settings["inputs"] == "images"
    scores = score_gradient_inversion(out, truth, view)
    assert scores["reconstructions"] == 2
    for key in ("ssim", "psnr", "leakage_ssim", "label_match"):
        assert finite(scores[key]), key
    by = scores["by_baseline"]
    assert set(by) == {"aux_mean", "aux_class_mean", "nearest_public"}
    # The headline is against the strongest baseline: never above the attack minus any of them.
    assert scores["leakage_ssim"] == pytest.approx(scores["ssim"] - max(b["ssim"] for b in by.values()))
    assert by[scores["leakage_baseline"]]["ssim"] == max(b["ssim"] for b in by.values())
    assert scores["leakage_n"] == 2
    ind = scores["individual"]
    assert ind["individual_n"] == 1 and ind["kind"] == "class-typical"  # one client: no interval
    assert ind["rank_candidates"] == 1 and ind["uploader_rank"] == 1.0
    assert 0.0 <= ind["auc"] <= 1.0 and ind["kind"] in ("individual", "class-typical")
    assert scores["latent_cosine"] is None


def test_gradient_inversion_on_a_latent_upload_with_known_encoder(digits):
    view, truth = synthetic_view(digits, {"mode": "latent-fedavg", "encoder": "public"}, encoder=True)
    out = gradient_inversion(view, steps=30, inverse_epochs=3)
    assert out.latents[(1, 0)].shape == (1, 8)
    assert out.images[(1, 0)].shape == (1, 1, 8, 8)  # via the inverse network
    scores = score_gradient_inversion(out, truth, view)
    for key in ("ssim", "psnr", "leakage_ssim", "latent_cosine", "baseline_latent_cosine"):
        assert finite(scores[key]), key
    assert -1.0 <= scores["latent_cosine"] <= 1.0


def test_gradient_inversion_with_a_local_encoder_reports_latents_only(digits):
    view, truth = synthetic_view(digits, {"mode": "latent-fedavg", "encoder": "local"}, encoder=False)
    out = gradient_inversion(view, steps=10)
    assert out.images == {} and np.isfinite(out.latents[(1, 0)]).all()
    scores = score_gradient_inversion(out, truth, view)
    assert scores["ssim"] is None and scores["latent_cosine"] is None and scores["reconstructions"] == 1


def test_attack_takes_no_private_data():
    params = inspect.signature(gradient_inversion).parameters
    assert "truth" not in params and all(p.annotation != "Truth" for p in params.values())


def test_a_run_without_weight_uploads_is_not_applicable(digits):
    import dataclasses

    from fedlatent.attacks.common import NotApplicable

    view, _ = synthetic_view(digits, {"mode": "raw"}, encoder=False)
    with pytest.raises(NotApplicable, match="no classifier weight uploads"):
        gradient_inversion(dataclasses.replace(view, uploads=[]), steps=1)
