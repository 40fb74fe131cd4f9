"""The leakage rule, the stranger test and the standard SSIM, on real Fashion-MNIST images (issue 24).

Controls: reconstructions that are the aux class means leak nothing (headline 0, not positive,
and a stranger interval that contains 0); planted copies of the uploader's records leak
individually (an interval above 0, rank 1). The SSIM is pinned to scikit-image's.
"""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from fedlatent.attacks.gradient import GradientInversion
from fedlatent.attacks.inversion import Reconstructions
from fedlatent.attacks.leakage import beyond_baselines, interval, kind
from fedlatent.attacks.metrics import aux_class_means
from fedlatent.attacks.scoring import Truth, score_gradient_inversion, score_inversion
from fedlatent.attacks.ssim import ssim, ssim_matrix
from fedlatent.attacks.view import AttackerView
from fedlatent.config import RunConfig
from fedlatent.data.loading import Dataset, load_dataset

N_AUX, PER_CLIENT = 600, 1000


@pytest.fixture(scope="module")
def fmnist() -> Dataset:
    return load_dataset("fashion-mnist")


@pytest.fixture(scope="module")
def setting(fmnist: Dataset) -> tuple[AttackerView, Truth]:
    x, y = fmnist.x_train, fmnist.y_train
    view = AttackerView(
        cfg=RunConfig(mode="raw", dataset="fashion-mnist"), aux_x=x[:N_AUX], aux_y=y[:N_AUX],
        test_x=fmnist.x_test[:2000], test_y=fmnist.y_test[:2000], num_classes=10, encoder_state=None, final_state={},
    )  # fmt: skip
    parts = {p: slice(N_AUX + p * PER_CLIENT, N_AUX + (p + 1) * PER_CLIENT) for p in range(3)}
    return view, Truth(client_x={p: x[s] for p, s in parts.items()}, client_y={p: y[s] for p, s in parts.items()})


def test_ssim_is_scikit_image_s_standard_ssim_on_real_images(fmnist):
    a, b = fmnist.x_train[:300], fmnist.x_test[:300]
    ours = ssim(a, b)
    theirs = [
        structural_similarity(
            a[i, 0].astype(np.float64), b[i, 0].astype(np.float64),
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
        )
        for i in range(len(a))
    ]  # fmt: skip
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    np.testing.assert_allclose(ssim_matrix(a[:3], b[:50])[1], ssim(np.repeat(a[1:2], 50, axis=0), b[:50]), atol=1e-6)
    assert ssim(a[:1], a[:1])[0] == pytest.approx(1.0, abs=1e-5)
    assert 0.05 < ours.mean() < 0.15  # random pairs: ~0.09 (torchmetrics' padded SSIM gave ~0.18)


def test_interval_and_strongest_baseline():
    ci = interval(np.array([1.0, 2.0, 3.0]))
    assert ci["mean"] == 2.0 and ci["n"] == 3
    assert ci["high"] - 2.0 == pytest.approx(4.302652729 / np.sqrt(3))  # t(0.975, 2) * sd / sqrt(n)
    assert interval(np.array([0.5]))["low"] is None
    with pytest.raises(ValueError):
        interval(np.array([np.nan, 1.0]))
    out = beyond_baselines(np.array([0.5, 0.7]), {"weak": np.array([0.1, 0.1]), "strong": np.array([0.6, 0.6])})
    assert out["leakage_baseline"] == "strong" and out["leakage_ssim"] == pytest.approx(0.0)
    assert out["by_baseline"]["weak"]["leakage"] == pytest.approx(0.5)
    assert kind(0.01) == "individual" and kind(-0.01) == "class-typical" and kind(None) == "class-typical"


def _uploads(images: dict[int, np.ndarray], labels: dict[int, np.ndarray]) -> GradientInversion:
    """One upload of each client, round 1, its reconstructions given."""
    return GradientInversion(
        images={(1, p): x for p, x in images.items()}, labels={(1, p): y.astype(np.int64) for p, y in labels.items()}
    )


def test_class_mean_reconstructions_leak_nothing(setting):
    view, truth = setting
    labels = {p: truth.client_y[p][:15] for p in truth.client_y}
    means = aux_class_means(view.aux_x, view.aux_y, 10)
    scores = score_gradient_inversion(_uploads({p: means[y] for p, y in labels.items()}, labels), truth, view)
    assert scores["leakage_ssim"] <= 1e-12  # 0 when the class mean is the strongest baseline, else below
    assert scores["by_baseline"]["aux_class_mean"]["leakage"] == pytest.approx(0.0, abs=1e-12)
    ind = scores["individual"]
    low, high = ind["individual_interval"]
    assert low < 0.0 < high and ind["kind"] == "class-typical"


def test_planted_copies_of_the_uploader_s_records_leak_individually(setting):
    view, truth = setting
    planted = {p: x[100:115] for p, x in truth.client_x.items()}
    labels = {p: y[100:115] for p, y in truth.client_y.items()}
    scores = score_gradient_inversion(_uploads(planted, labels), truth, view)
    assert scores["ssim"] == pytest.approx(1.0, abs=1e-5) and scores["leakage_ssim"] > 0.3
    ind = scores["individual"]
    assert ind["kind"] == "individual" and ind["individual_interval"][0] > 0.2
    assert ind["uploader_rank"] == 1.0 and ind["rank_candidates"] == 3
    assert ind["individual_n"] == 3 and ind["individual_unit"] == "client"
    assert ind["auc"] > 0.5  # 15 of each uploader's 1,000 records are singled out


def test_latent_inversion_controls(setting):
    view, truth = setting
    y0, y1 = truth.client_y[0][:300], truth.client_y[1][:300]
    shared = {0: (np.zeros((300, 4), np.float32), y0), 1: (np.zeros((300, 4), np.float32), y1)}
    small = Truth(client_x={p: truth.client_x[p][:300] for p in (0, 1)}, client_y={0: y0, 1: y1})
    latent_view = AttackerView(**{**view.__dict__, "latents": shared})
    means = aux_class_means(view.aux_x, view.aux_y, 10)
    typical = score_inversion(Reconstructions("black-box", {0: means[y0], 1: means[y1]}), small, latent_view,
                              recognizer_epochs=1)  # fmt: skip
    assert typical["leakage_ssim"] <= 1e-12 and typical["leakage_baseline"] in ("aux_class_mean", "nearest_public")
    low, high = typical["individual"]["individual_interval"]
    assert low < 0.0 < high and typical["individual"]["kind"] == "class-typical"
    exact = score_inversion(Reconstructions("black-box", dict(small.client_x)), small, latent_view, recognizer_epochs=1)
    assert exact["individual"]["kind"] == "individual" and exact["individual"]["uploader_rank"] == 1.0
    assert exact["individual"]["auc"] > 0.99
