"""Tests for latent inversion and model inversion on tiny digits views built in memory.

Views are built with ``AttackerView``'s constructor from the digits data set: the first
records of the training split are the aux (public) set, two slices of the rest are the
clients' private partitions (the ``Truth``). Encoders are exact invertible linear maps written
into the MLP ``Encoder``'s weights, so whether the latents carry the images is known exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect

import numpy as np
import pytest
import torch

from fedlatent.attacks.common import NotApplicable
from fedlatent.attacks.inversion import latent_inversion
from fedlatent.attacks.model_inversion import model_inversion
from fedlatent.attacks.scoring import Truth, score_inversion, score_model_inversion
from fedlatent.attacks.view import AttackerView, pseudo_labelled
from fedlatent.config import RunConfig
from fedlatent.data.loading import load_dataset
from fedlatent.learning.models import MLP_AE_HIDDEN, Encoder, ImageClassifier, LatentClassifier
from fedlatent.learning.training import encode, train_classifier
from fedlatent.privacy.mechanisms import gaussian_release, latent_noise_std

D = 64  # latent size = pixels of an 8x8 digit: a linear encoder can keep everything
N_AUX = 700
PARTS = ((700, 900), (900, 1100))  # two clients' private slices of the training split


@functools.cache
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ds = load_dataset("digits")
    return ds.x_train, ds.y_train, ds.x_test, ds.y_test


def linear_encoder_state(seed: int = 0) -> dict[str, np.ndarray]:
    """MLP ``Encoder`` weights computing z = A x for a well-conditioned random A.

    ReLU layers pass A x through as relu(Ax) and relu(-Ax); the last layer subtracts them.
    """
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=g))
    a = q * torch.linspace(0.5, 2.0, D)  # invertible, condition number 4
    h1, h2, h3 = MLP_AE_HIDDEN
    w1 = torch.zeros(h1, D)
    w1[:D], w1[D : 2 * D] = a, -a
    w2, w3 = torch.eye(h2, h1), torch.eye(h3, h2)  # pass the first 2D units through
    w4 = torch.zeros(D, h3)
    w4[:, :D], w4[:, D : 2 * D] = torch.eye(D), -torch.eye(D)
    weights = {"net.1.0": w1, "net.1.2": w2, "net.1.4": w3, "net.1.6": w4}
    state = {f"{k}.weight": w for k, w in weights.items()} | {
        f"{k}.bias": torch.zeros(len(w)) for k, w in weights.items()
    }
    return {k: v.numpy() for k, v in state.items()}


def make_view(cfg: dict, *, encoder: bool = True) -> tuple[AttackerView, Truth]:
    """A latent-share view whose shared latents are the linear encoding of the private slices.

    Under DP (finite ``epsilon`` in ``cfg``) the latents go through the clients' release.
    """
    run = RunConfig.from_run_config({"mode": "latent-share", "latent-dim": D, **cfg})
    std = latent_noise_std(epsilon=run.epsilon, delta=run.delta, clip=run.latent_clip) if run.dp else 0.0
    x, y, xt, yt = digits()
    enc_state = linear_encoder_state()
    enc = Encoder(image_shape=(1, 8, 8), latent_dim=D)
    enc.load_state_dict({k: torch.from_numpy(v) for k, v in enc_state.items()})
    latents, truth_x, truth_y = {}, {}, {}
    gen = torch.Generator().manual_seed(7)
    for pid, (lo, hi) in enumerate(PARTS):
        z = encode(enc, torch.from_numpy(x[lo:hi]))
        if std > 0:  # the client's release, with noise the attacker cannot know
            z = gaussian_release(z, clip=run.latent_clip, std=std, generator=gen)
        latents[pid] = (z.numpy(), y[lo:hi].copy())
        truth_x[pid], truth_y[pid] = x[lo:hi], y[lo:hi]
    # A latent classifier trained briefly on the shared latents: the query-free attack uses it.
    torch.manual_seed(0)
    clf = LatentClassifier(latent_dim=D, num_classes=10)
    zs = torch.cat([torch.from_numpy(z) for z, _ in latents.values()])
    ys = torch.cat([torch.from_numpy(lab) for _, lab in latents.values()])
    train_classifier(clf, zs, ys, epochs=5, batch_size=64, lr=1e-3, generator=torch.Generator().manual_seed(1))
    view = AttackerView(
        cfg=run,
        aux_x=x[:N_AUX],
        aux_y=y[:N_AUX],
        test_x=xt,
        test_y=yt,
        num_classes=10,
        encoder_state=enc_state if encoder else None,
        final_state={k: v.detach().numpy() for k, v in clf.state_dict().items()},
        latents=latents,
    )
    return view, Truth(client_x=truth_x, client_y=truth_y)


def test_linear_encoder_state_is_the_linear_map():
    view, _ = make_view({})
    enc = view.encoder()
    assert enc is not None
    x = torch.from_numpy(digits()[0][:5])
    z = encode(enc, x)
    a = torch.from_numpy(linear_encoder_state()["net.1.0.weight"][:D])
    assert torch.allclose(z, x.reshape(5, -1) @ a.T, atol=1e-4)


def test_black_box_inversion_of_invertible_encoder_recovers_images():
    view, truth = make_view({"encoder": "public"})
    rec = latent_inversion(view, epochs=15, seed=0)
    assert rec.method == "black-box" and rec.settings["label_aware"] and rec.settings["output"] == "network"
    scores = score_inversion(rec, truth, view, recognizer_epochs=20)
    assert scores["ssim"] > 0.9
    assert scores["leakage_ssim"] > 0.1
    # Near-exact reconstructions single out their own records: individual leakage, far from chance.
    ind = scores["individual"]
    assert ind["kind"] == "individual" and ind["individual_interval"][0] > 0.3
    assert ind["uploader_rank"] < 1.5 and ind["auc"] > 0.95
    assert scores["recognition_accuracy"] > 0.8
    assert set(scores["per_partition"]) == {0, 1}
    assert set(scores["baselines"]) == set(scores["by_baseline"]) == {"aux_mean", "aux_class_mean", "nearest_public"}
    assert scores["ssim"] <= scores["ssim_max"] <= 1.0 and scores["ssim_max"] > scores["baseline_ssim_max"]


def test_inversion_of_pure_noise_latents_stays_at_baseline():
    # Epsilon 1 with clip 1 gives per-coordinate noise std ~8 on latents of norm <= 1.
    view, truth = make_view({"encoder": "public", "epsilon": 1.0, "latent-clip": 1.0})
    rec = latent_inversion(view, epochs=10, noise_draws=2, seed=0)
    assert rec.settings["noise_std"] > 5.0
    scores = score_inversion(rec, truth, view, recognizer_epochs=5)
    assert scores["leakage_ssim"] < 0.05
    assert np.isfinite(scores["psnr"])
    # Label-aware: the labels came with the latents, so the attack is never below the class-mean
    # guess it could output for free (the noise hides everything else).
    assert rec.settings["label_aware"] and rec.settings["output"] in ("network", "class-mean")
    class_mean = scores["baselines"]["aux_class_mean"]["ssim"]
    assert scores["ssim"] >= class_mean - 0.02, (scores["ssim"], class_mean)
    blind = score_inversion(latent_inversion(view, epochs=10, noise_draws=2, label_aware=False), truth, view)
    assert scores["ssim"] > blind["ssim"]  # the label-blind network is the weak attack of issue 12


def test_query_free_inversion_returns_one_image_per_shared_latent():
    view, truth = make_view({"encoder": "local"}, encoder=False)
    rec = latent_inversion(view, epochs=3, shadow_epochs=3, seed=0)
    assert rec.method == "query-free"
    assert set(rec.images) == set(view.latents)
    for pid, images in rec.images.items():
        assert images.shape == (len(view.latents[pid][0]), 1, 8, 8)
        assert images.dtype == np.float32
        assert images.min() >= 0.0 and images.max() <= 1.0
    assert np.isfinite(score_inversion(rec, truth, view, recognizer_epochs=2)["ssim"])
    # Model inversion of the same run maps latents to images through the same kind of shadow.
    out = model_inversion(view, steps=5, inverse_epochs=2, shadow_epochs=2, seed=0)
    assert out.settings["encoder"] == "shadow" and out.images.shape == (10, 1, 8, 8)


def test_model_inversion_without_encoder_or_latents_is_not_applicable():
    view, _ = make_view({"encoder": "local"}, encoder=False)
    view.latents = {}
    with pytest.raises(NotApplicable):
        model_inversion(view, steps=1)


def test_inversion_without_shared_latents_is_not_applicable():
    view, _ = make_view({"encoder": "public"})
    view.latents = {}
    with pytest.raises(NotApplicable):
        latent_inversion(view, epochs=1)


def test_model_inversion_of_raw_classifier_yields_recognized_representatives():
    x, y, xt, yt = digits()
    run = RunConfig.from_run_config({"mode": "raw"})
    torch.manual_seed(0)
    clf = ImageClassifier(image_shape=(1, 8, 8), num_classes=10)
    train_classifier(
        clf,
        torch.from_numpy(x[N_AUX:]),
        torch.from_numpy(y[N_AUX:]),
        epochs=15,
        batch_size=64,
        lr=1e-3,
        generator=torch.Generator().manual_seed(0),
    )
    state = {k: v.detach().numpy() for k, v in clf.state_dict().items()}
    view = AttackerView(run, x[:N_AUX], y[:N_AUX], xt, yt, num_classes=10, encoder_state=None, final_state=state)
    truth = Truth(client_x={0: x[N_AUX:1100], 1: x[1100:]}, client_y={0: y[N_AUX:1100], 1: y[1100:]})
    out = model_inversion(view, steps=150, seed=0)
    assert out.images.shape == (10, 1, 8, 8)
    assert out.images.min() >= 0.0 and out.images.max() <= 1.0
    with torch.no_grad():
        pred = view.classifier()(torch.from_numpy(out.images)).argmax(1).numpy()
    assert (pred == np.arange(10)).all()
    scores = score_model_inversion(out, truth, view)
    assert all(np.isfinite(scores[k]) for k in ("ssim", "psnr", "leakage_ssim"))
    assert np.isfinite(scores["baseline"]["aux_class_mean"]["ssim"])
    assert scores["baseline"]["aux_class_mean"]["ssim"] > 0.5  # the aux class mean alone is close
    assert len(scores["per_class"]) == 10


def test_model_inversion_of_latent_classifier_maps_through_inverse_network():
    view, truth = make_view({"encoder": "public"})
    out = model_inversion(view, steps=50, inverse_epochs=5, seed=0)
    assert out.images.shape == (10, 1, 8, 8)
    assert out.settings["method"] == "latent"
    assert np.isfinite(score_model_inversion(out, truth, view)["ssim"])


@pytest.mark.parametrize("attack", [latent_inversion, model_inversion])
def test_attacks_take_only_the_view_and_settings(attack):
    params = inspect.signature(attack).parameters
    first, *rest = params.values()
    assert first.name == "view" and "AttackerView" in str(first.annotation)
    for p in rest:
        assert p.kind is inspect.Parameter.KEYWORD_ONLY
        assert "Truth" not in str(p.annotation) and "truth" not in p.name and "private" not in p.name
        assert isinstance(p.default, (int, float)), f"{p.name} is a setting and needs a plain default"


def test_attacker_assumes_the_noise_clients_really_added() -> None:
    from fedlatent.plan import release_noise_std

    cfg = RunConfig.from_run_config(
        {"mode": "latent-share", "encoder": "federated", "epsilon": 3.0, "encoder-epsilon": 1.0}
    )
    empty = np.zeros((1, 1, 8, 8), np.float32)
    labels = np.zeros(1, np.int64)
    view = AttackerView(cfg, empty, labels, empty, labels, 10, None, {})
    assert view.latent_noise_std() == release_noise_std(cfg)  # calibrated for epsilon - encoder-epsilon


def test_without_public_labels_the_attacker_labels_aux_with_the_final_model() -> None:
    view, truth = make_view({"epsilon": "inf"})
    blind = dataclasses.replace(view, cfg=dataclasses.replace(view.cfg, public_labels=False))
    pseudo = pseudo_labelled(blind)
    with torch.no_grad():
        predicted = view.classifier()(encode(view.encoder(), torch.from_numpy(view.aux_x))).argmax(1).numpy()
    assert pseudo.aux_labels == "pseudo" and view.aux_labels == "public"
    np.testing.assert_array_equal(pseudo.aux_y, predicted)
    assert not np.array_equal(pseudo.aux_y, view.aux_y)  # a briefly trained model: not the truth
    # No encoder at the server: the aux images cannot be fed to the latent model; the best
    # label-free guess is the most frequent label the server received.
    no_encoder = pseudo_labelled(dataclasses.replace(blind, encoder_state=None))
    shared = np.concatenate([lab for _, lab in view.latents.values()])
    assert set(no_encoder.aux_y) == {np.bincount(shared).argmax()}
