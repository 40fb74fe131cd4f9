"""Tests of fedlatent.learners on synthetic Gaussian classes with known release noise."""

from __future__ import annotations

import math

import pytest
import torch

from fedlatent.learning.training import evaluate
from fedlatent.privacy.learners import LEARNERS, ClippedClassifier, class_statistics, fit_server_learner, rr_mixing
from fedlatent.privacy.mechanisms import clip_rows, gaussian_release, randomized_response

K, D, CLIP = 4, 8, 1.0


def gaussian_classes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Labels, clean points (all inside the clip ball) and the true class means.

    Anisotropic shared covariance, so LDA has something to gain over nearest class mean.
    """
    gen = torch.Generator().manual_seed(seed)
    means = torch.zeros(K, D)
    means[torch.arange(K), torch.arange(K)] = 0.25
    scales = torch.tensor([0.06] * K + [0.2] * (D - K))  # class axes tight, the others loose
    y = torch.randint(0, K, (n,), generator=gen)
    x = means[y] + scales * torch.randn(n, D, generator=gen)
    return y, clip_rows(x, max_norm=CLIP * 0.999), means


def release(x: torch.Tensor, std: float, seed: int) -> torch.Tensor:
    return gaussian_release(x, clip=CLIP, std=std, generator=torch.Generator().manual_seed(seed))


def accuracy(kind: str, z: torch.Tensor, y: torch.Tensor, std: float, test: tuple[torch.Tensor, torch.Tensor]) -> float:
    model = fit_server_learner(
        z, y, kind=kind, num_classes=K, clip=CLIP, noise_std=std, epochs=3, batch_size=256,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    return evaluate(model, *reversed(test))[1]


@pytest.fixture(scope="module")
def data() -> dict[str, torch.Tensor]:
    y, x, means = gaussian_classes(20000, seed=1)
    y_test, x_test, _ = gaussian_classes(4000, seed=2)
    return {"y": y, "x": x, "means": means, "y_test": y_test, "x_test": x_test}


def test_noise_aware_learners_beat_naive_mlp_at_high_noise(data: dict[str, torch.Tensor]) -> None:
    std = 2.0  # per coordinate: 8x the distance of a class mean from the origin
    z = release(data["x"], std, seed=3)
    test = (data["y_test"], data["x_test"])
    naive = accuracy("mlp", z, data["y"], std, test)
    lda = accuracy("lda", z, data["y"], std, test)
    class_mean = accuracy("class-mean", z, data["y"], std, test)
    # Measured: naive 0.30, lda 0.97, class-mean 0.975 (the Bayes rule on clean points: ~0.99).
    assert naive < 0.6, naive
    assert lda > 0.9 and class_mean > 0.9, (lda, class_mean)


def test_lda_is_near_optimal_without_noise(data: dict[str, torch.Tensor]) -> None:
    test = (data["y_test"], data["x_test"])
    lda = accuracy("lda", data["x"], data["y"], 0.0, test)
    # Bayes rule with the true parameters (the clip at 0.999 leaves these points untouched).
    scales = torch.tensor([0.06] * K + [0.2] * (D - K))
    dist = (((data["x_test"][:, None, :] - data["means"]) / scales) ** 2).sum(-1)
    bayes = float((dist.argmin(1) == data["y_test"]).float().mean())
    assert bayes > 0.95 and lda >= bayes - 0.01
    assert accuracy("class-mean", data["x"], data["y"], 0.0, test) > 0.85


def test_randomized_response_correction_recovers_class_means(data: dict[str, torch.Tensor]) -> None:
    gen = torch.Generator().manual_seed(4)
    noisy = randomized_response(data["y"], epsilon=1.0, num_classes=K, generator=gen)
    priors, means = class_statistics(data["x"], noisy, num_classes=K, label_epsilon=1.0)
    naive_means = torch.stack([data["x"][noisy == k].mean(0) for k in range(K)])
    truth = torch.stack([data["x"][data["y"] == k].mean(0) for k in range(K)]).double()
    assert (means - truth).norm(dim=1).max() < 0.03  # the means are 0.35 apart
    assert (naive_means.double() - truth).norm(dim=1).min() > 0.08  # uncorrected: shrunk towards the centre
    assert torch.allclose(priors, torch.full((K,), 1 / K, dtype=torch.float64), atol=0.02)
    assert torch.allclose(rr_mixing(K, 1.0).sum(1), torch.ones(K, dtype=torch.float64))
    assert torch.equal(rr_mixing(K, math.inf), torch.eye(K, dtype=torch.float64))


def test_lda_with_label_noise_stays_accurate(data: dict[str, torch.Tensor]) -> None:
    gen = torch.Generator().manual_seed(5)
    noisy = randomized_response(data["y"], epsilon=1.0, num_classes=K, generator=gen)
    z = release(data["x"], 0.3, seed=6)
    model = fit_server_learner(z, noisy, kind="lda", num_classes=K, clip=CLIP, noise_std=0.3, label_epsilon=1.0)
    assert evaluate(model, data["x_test"], data["y_test"])[1] > 0.9


def test_module_clips_and_centres_its_input() -> None:
    inner = torch.nn.Identity()
    model = ClippedClassifier(inner, clip=2.0, center=torch.tensor([1.0, 0.0]))
    out = model(torch.tensor([[7.0, 8.0], [1.5, 0.0]]))
    assert torch.allclose(out, torch.tensor([[1.2, 1.6], [0.5, 0.0]]))
    swap = ClippedClassifier(inner, clip=1.0, projection=torch.tensor([[0.0, 1.0], [2.0, 0.0]]))
    assert torch.allclose(swap(torch.tensor([[0.3, 0.4]])), torch.tensor([[0.4, 0.6]]))
    # Scaling a far-away input changes nothing: it is clipped onto the same point.
    lda = fit_server_learner(torch.randn(50, 3), torch.arange(50) % 2, kind="lda", num_classes=2, clip=1.0, noise_std=0)
    far = torch.randn(5, 3) * 10
    assert torch.allclose(lda(far), lda(far * 3), atol=1e-5)


@pytest.mark.parametrize("kind", LEARNERS)
def test_shapes_dtypes_and_state_dict(kind: str) -> None:
    z, y = torch.randn(64, 5), torch.arange(64) % 3
    model = fit_server_learner(z, y, kind=kind, num_classes=3, clip=1.0, noise_std=0.5, epochs=1)
    out = model(torch.randn(7, 5))
    assert out.shape == (7, 3) and out.dtype == torch.float32 and torch.isfinite(out).all()
    state = model.state_dict()
    assert all(v.dtype == torch.float32 for v in state.values())
    assert state["clip"].item() == 1.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "svm"},
        {"noise_std": -1.0},
        {"clip": 0.0},
        {"label_epsilon": 0.0},
        {"shrinkage": 1.5},
        {"num_classes": 1},
        {"center": torch.zeros(3)},
        {"projection": torch.zeros(3, 4)},
    ],
)
def test_bad_arguments_raise(kwargs: dict) -> None:
    args = {"kind": "lda", "num_classes": 2, "clip": 1.0, "noise_std": 0.1, **kwargs}
    with pytest.raises(ValueError):
        fit_server_learner(torch.randn(10, 4), torch.arange(10) % 2, **args)


def test_bad_labels_raise() -> None:
    with pytest.raises(ValueError):
        fit_server_learner(torch.randn(10, 4), torch.arange(10), kind="lda", num_classes=2, clip=1.0, noise_std=0.1)
