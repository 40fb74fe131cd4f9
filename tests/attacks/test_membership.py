"""Tests for fedlatent.attacks.membership on 8x8 digits with tiny hand-built server views."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from fedlatent.attacks.common import NotApplicable
from fedlatent.attacks.membership import loss_attack, shadow_attack
from fedlatent.attacks.scoring import Truth, candidates, score_membership
from fedlatent.attacks.view import AttackerView
from fedlatent.config import RunConfig
from fedlatent.data.loading import Dataset, load_dataset
from fedlatent.learning.models import Encoder
from fedlatent.learning.training import train_classifier
from fedlatent.plan import build_classifier

# Disjoint random index sets of the digits training split. Random, not contiguous: the
# data set is ordered by writer, and a block of writers would differ from the (random) test
# split, which alone moves the AUC off 0.5.
_ORDER = np.random.default_rng(0).permutation(1438)
AUX = _ORDER[:300]  # public records: the attacker's, and shadow training data
OVERFIT = _ORDER[300:350]  # the overfit model's only training records
UNSEEN = _ORDER[600:1000]  # "members" that the second model never saw


@pytest.fixture(scope="module")
def digits() -> Dataset:
    ds = load_dataset("digits")
    assert len(ds.x_train) == len(_ORDER)
    return ds


def make_view(digits: Dataset, train: np.ndarray, epochs: int, **settings: object) -> tuple[AttackerView, Truth]:
    """A raw-mode view whose final model trained ``epochs`` epochs on ``x_train[train]``."""
    # Large batches and lr keep the step count (the cost on 2 shared cores) small.
    base = {"mode": "raw", "rounds": 1, "local-epochs": epochs, "batch-size": 64, "lr": 5e-3}
    cfg = RunConfig.from_run_config({**base, **settings})
    model = build_classifier(cfg, digits)
    x, y = torch.from_numpy(digits.x_train[train]), torch.from_numpy(digits.y_train[train])
    gen = torch.Generator().manual_seed(0)
    train_classifier(model, x, y, epochs=epochs, batch_size=cfg.batch_size, lr=cfg.lr, generator=gen)
    view = AttackerView(
        cfg=cfg,
        aux_x=digits.x_train[AUX],
        aux_y=digits.y_train[AUX],
        test_x=digits.x_test,
        test_y=digits.y_test,
        num_classes=10,
        encoder_state=None,
        final_state={k: v.detach().numpy().copy() for k, v in model.state_dict().items()},
    )
    return view, Truth(client_x={0: digits.x_train[train]}, client_y={0: digits.y_train[train]})


@pytest.fixture(scope="module")
def overfit(digits: Dataset) -> tuple[AttackerView, Truth]:
    return make_view(digits, OVERFIT, epochs=150)


def test_candidates_are_balanced_shuffled_and_reproducible(digits, overfit):
    view, truth = overfit
    x, y, is_member = candidates(truth, view, n=81, seed=3)
    assert x.shape == (81, 1, 8, 8) and y.dtype == np.int64 and is_member.dtype == bool
    assert is_member.sum() == 40 and not (is_member[:40].all() and not is_member[40:].any())  # shuffled
    private = {r.tobytes() for r in truth.client_x[0]}
    assert all((r.tobytes() in private) == m for r, m in zip(x, is_member, strict=True))
    again = candidates(truth, view, n=81, seed=3)
    assert np.array_equal(again[0], x) and np.array_equal(again[2], is_member)
    with pytest.raises(ValueError, match="private"):
        candidates(truth, view, n=200, seed=0)  # only 50 private records


def test_loss_attack_detects_members_of_an_overfit_model(overfit):
    view, truth = overfit
    x, y, is_member = candidates(truth, view, n=100, seed=0)
    scores = loss_attack(view, x, y)
    assert scores.shape == (100,) and np.isfinite(scores).all()
    result = score_membership(scores, is_member)
    assert result["auc"] > 0.7
    assert set(result) >= {"auc", "tpr_at_0.01_fpr", "tpr_at_0.001_fpr"}


def test_loss_attack_is_at_chance_on_records_never_trained_on(digits):
    view, truth = make_view(digits, AUX, epochs=5)
    truth = Truth(client_x={0: digits.x_train[UNSEEN]}, client_y={0: digits.y_train[UNSEEN]})
    x, y, is_member = candidates(truth, view, n=400, seed=0)
    auc = score_membership(loss_attack(view, x, y), is_member)["auc"]
    assert abs(auc - 0.5) < 0.1


def test_shadow_attack_detects_members_of_an_overfit_model(overfit):
    view, truth = overfit
    x, y, is_member = candidates(truth, view, n=100, seed=0)
    scores = shadow_attack(view, x, y, num_shadows=4, epochs=30, seed=0)
    assert scores.shape == (100,) and np.isfinite(scores).all()
    assert score_membership(scores, is_member)["auc"] > 0.6
    with pytest.raises(ValueError, match="num_shadows"):
        shadow_attack(view, x, y, num_shadows=1)


def latent_view(digits: Dataset, encoder: str, with_state: bool) -> AttackerView:
    cfg = RunConfig.from_run_config({"mode": "latent-fedavg", "encoder": encoder, "latent-dim": 8})
    with torch.random.fork_rng():
        torch.manual_seed(0)
        enc = Encoder(image_shape=(1, 8, 8), latent_dim=8)
    classifier = build_classifier(cfg, digits)
    return AttackerView(
        cfg=cfg,
        aux_x=digits.x_train[:40],
        aux_y=digits.y_train[:40],
        test_x=digits.x_test,
        test_y=digits.y_test,
        num_classes=10,
        encoder_state={k: v.numpy().copy() for k, v in enc.state_dict().items()} if with_state else None,
        final_state={k: v.detach().numpy().copy() for k, v in classifier.state_dict().items()},
    )


def test_latent_models_are_attacked_through_the_known_encoder(digits):
    view = latent_view(digits, "public", with_state=True)
    x, y = digits.x_test[:10], digits.y_test[:10]
    assert np.isfinite(loss_attack(view, x, y)).all()
    assert shadow_attack(view, x, y, num_shadows=2, epochs=1).shape == (10,)


def test_secret_local_encoder_makes_the_attacks_not_applicable(digits):
    view = latent_view(digits, "local", with_state=False)
    x, y = digits.x_test[:10], digits.y_test[:10]
    with pytest.raises(NotApplicable, match="local"):
        loss_attack(view, x, y)
    with pytest.raises(ValueError, match="local"):  # NotApplicable is a ValueError
        shadow_attack(view, x, y, num_shadows=2, epochs=1)


def test_attacks_take_no_private_data():
    for attack in (loss_attack, shadow_attack):
        params = inspect.signature(attack).parameters
        assert list(params)[:3] == ["view", "x", "y"]
        assert all("Truth" not in str(p.annotation) for p in params.values())


def test_ssim_in_chunks_equals_ssim_at_once(monkeypatch) -> None:
    from fedlatent.attacks import metrics, ssim

    rng = np.random.default_rng(0)
    x, y = rng.random((7, 1, 28, 28), dtype=np.float32), rng.random((7, 1, 28, 28), dtype=np.float32)
    whole = metrics.ssim(x, y)
    monkeypatch.setattr(ssim, "CHUNK", 3)
    np.testing.assert_array_equal(metrics.ssim(x, y), whole)
    assert metrics.ssim(x[:0], y[:0]).shape == (0,)
