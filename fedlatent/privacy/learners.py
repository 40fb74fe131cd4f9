"""Server-side learners for ``latent-share`` that know how the latents were privatised.

What: ``fit_server_learner`` trains a classifier on pooled released latents, each of which is
``clip_rows(z, C) + N(0, σ² I)`` with public ``C`` and ``σ``, whose labels may have gone through
k-ary randomized response with public ε. Besides the naive MLP, it offers generative learners
whose sufficient statistics can be de-noised exactly, because the noise is known:

- ``class-mean``: nearest (de-noised) class mean. The noise is zero-mean, so class means of
  noisy latents are unbiased; only the label mixing of randomized response needs undoing.
- ``lda``: Gaussian classes with a shared covariance. The noisy covariance is the clean one
  plus ``σ² I``; subtracting it and projecting onto well-conditioned matrices de-noises it.

Both invert the randomized-response mixing: the observed per-label counts and sums are a known
linear mixture ``Mᵀ`` of the true per-class ones, so solving with ``Mᵀ`` recovers them.

Why: a discriminative model fitted to noisy inputs learns to classify *noisy* points; at small
ε the noise dominates and it collapses, while the test inputs are clean. The generative models
here estimate the *clean* class-conditional laws and so stay useful at high noise.

Every learner returns a ``ClippedClassifier``: it clips its input exactly as the release did
(optionally after subtracting a public centre), so clean test latents live where the training
distribution did. Its weights are plain float tensors, so it travels in an ``ArrayRecord``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fedlatent.learning.models import LatentClassifier
from fedlatent.learning.training import train_classifier
from fedlatent.privacy.mechanisms import clip_rows


class ClippedClassifier(nn.Module):
    """``inner(clip_rows((z - center) @ projection.T, clip))``: a classifier that clips like the release.

    Parameters
    ----------
    inner : nn.Module
        Maps ``(B, k)`` released-space latents to ``(B, K)`` logits.
    clip : float
        L2 clip applied to each (centred, projected) input row, as in ``gaussian_release``.
    center : Tensor, optional
        A public ``(d,)`` offset subtracted first (``None``: the current release, no offset).
    projection : Tensor, optional
        A public ``(k, d)`` matrix applied after centring (``None``: identity, ``k = d``).
    """

    clip: torch.Tensor
    center: torch.Tensor
    projection: torch.Tensor

    def __init__(
        self,
        inner: nn.Module,
        *,
        clip: float,
        center: torch.Tensor | None = None,
        projection: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if not clip > 0:
            raise ValueError(f"clip must be > 0, got {clip}")
        self.inner = inner
        # Buffers, not attributes: they are saved with the weights and checked on load.
        self.register_buffer("clip", torch.tensor([float(clip)]))
        for name, value in (("center", center), ("projection", projection)):
            self.register_buffer(name, torch.zeros(0) if value is None else value.detach().float().clone())

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.center.numel():
            z = z - self.center
        if self.projection.numel():
            z = z @ self.projection.T
        return self.inner(clip_rows(z, max_norm=float(self.clip)))


def rr_mixing(num_classes: int, label_epsilon: float) -> torch.Tensor:
    """Matrix ``M[i, j] = P(released label j | true label i)`` of k-ary randomized response."""
    if math.isinf(label_epsilon):
        return torch.eye(num_classes, dtype=torch.float64)
    keep = 1.0 / (1.0 + (num_classes - 1) * math.exp(-label_epsilon))
    other = (1.0 - keep) / (num_classes - 1)
    return torch.full((num_classes, num_classes), other, dtype=torch.float64).fill_diagonal_(keep)


def class_statistics(
    z: torch.Tensor, y: torch.Tensor, *, num_classes: int, label_epsilon: float = math.inf
) -> tuple[torch.Tensor, torch.Tensor]:
    """Priors ``(K,)`` and means ``(K, d)`` of the true classes, in float64.

    The observed counts ``ñ`` and sums ``S̃`` per released label satisfy ``ñ = Mᵀ n`` and
    ``S̃ = Mᵀ S`` in expectation, so ``n`` and ``S`` solve linear systems in ``Mᵀ`` (``M`` is
    invertible for every ε > 0). Latent noise is zero-mean and needs no correction.
    """
    if label_epsilon <= 0:
        raise ValueError(f"label_epsilon must be > 0 to recover class means, got {label_epsilon}")
    z64 = z.double()
    onehot = nn.functional.one_hot(y, num_classes).double()
    counts, sums = onehot.sum(0), onehot.T @ z64
    mt = rr_mixing(num_classes, label_epsilon).T
    counts = torch.linalg.solve(mt, counts).clamp_min(1e-3)  # an unseen class gets a tiny prior
    sums = torch.linalg.solve(mt, sums)
    return counts / counts.sum(), sums / counts[:, None]


def denoised_covariance(
    z: torch.Tensor,
    *,
    priors: torch.Tensor,
    means: torch.Tensor,
    noise_std: float,
    shrinkage: float = 0.0,
) -> torch.Tensor:
    """Shared within-class covariance of the clean latents, positive definite, float64.

    Computed from the *total* covariance, which needs no labels: ``cov(noisy) - σ² I`` minus
    the between-class scatter of the (label-corrected) means. Eigenvalues that cannot be told
    apart from sampling noise are floored at the excess of the Marchenko-Pastur edge of pure
    noise, ``σ² ((1 + sqrt(d/n))² - 1)``, then the result is shrunk towards its mean eigenvalue.
    """
    n, d = z.shape
    z64 = z.double()
    centred = z64 - z64.mean(0)
    total = centred.T @ centred / max(n - 1, 1)
    spread = means - priors @ means
    between = spread.T @ (priors[:, None] * spread)
    within = total - between - noise_std**2 * torch.eye(d, dtype=torch.float64)
    evals, evecs = torch.linalg.eigh((within + within.T) / 2)
    # Floor: what noise alone could fake, and a relative epsilon for the noiseless case.
    floor = noise_std**2 * ((1 + math.sqrt(d / n)) ** 2 - 1)
    floor = max(floor, 1e-6 * float(evals.clamp_min(0).mean()), 1e-12)
    evals = evals.clamp_min(floor)
    evals = (1 - shrinkage) * evals + shrinkage * evals.mean()
    return (evecs * evals) @ evecs.T


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight.float())
        layer.bias.copy_(bias.float())
    return layer


@dataclass(frozen=True)
class Release:
    """What the server knows of the release: clip, noise std, label ε, number of classes."""

    clip: float
    noise_std: float
    label_epsilon: float
    num_classes: int


@dataclass(frozen=True)
class Training:
    """Settings of the learners: MLP training, and the LDA covariance shrinkage."""

    epochs: int
    batch_size: int
    lr: float
    generator: torch.Generator | None
    shrinkage: float


def _fit_mlp(z: torch.Tensor, y: torch.Tensor, release: Release, train: Training) -> nn.Module:
    """``LatentClassifier`` trained on the noisy latents as they are (ignores the noise)."""
    mlp = LatentClassifier(latent_dim=z.shape[1], num_classes=release.num_classes)
    gen = train.generator if train.generator is not None else torch.Generator().manual_seed(0)
    train_classifier(mlp, z.float(), y, epochs=train.epochs, batch_size=train.batch_size, lr=train.lr, generator=gen)
    return mlp.eval()


def _fit_class_mean(z: torch.Tensor, y: torch.Tensor, release: Release, train: Training) -> nn.Module:
    """Nearest de-noised class mean: argmax of x . mu_k - |mu_k|^2 / 2 (no prior: the geometry is unknown)."""
    _, means = class_statistics(z, y, num_classes=release.num_classes, label_epsilon=release.label_epsilon)
    return _linear(means, -0.5 * (means**2).sum(1))


def _fit_lda(z: torch.Tensor, y: torch.Tensor, release: Release, train: Training) -> nn.Module:
    """Shared-covariance Gaussian classes with a de-noised covariance and label-corrected means."""
    priors, means = class_statistics(z, y, num_classes=release.num_classes, label_epsilon=release.label_epsilon)
    cov = denoised_covariance(z, priors=priors, means=means, noise_std=release.noise_std, shrinkage=train.shrinkage)
    weight = torch.linalg.solve(cov, means.T).T  # rows: Σ⁻¹ μ_k
    return _linear(weight, -0.5 * (weight * means).sum(1) + priors.log())


Learner = Callable[[torch.Tensor, torch.Tensor, Release, Training], nn.Module]
LEARNERS: dict[str, Learner] = {"mlp": _fit_mlp, "class-mean": _fit_class_mean, "lda": _fit_lda}
"""The server learners by name (the ``server-learner`` key's choices, with ``auto``)."""


def fit_server_learner(
    z: torch.Tensor,
    y: torch.Tensor,
    *,
    kind: str,
    num_classes: int,
    clip: float,
    noise_std: float,
    label_epsilon: float = math.inf,
    center: torch.Tensor | None = None,
    projection: torch.Tensor | None = None,
    shrinkage: float = 0.0,
    epochs: int = 20,
    batch_size: int = 32,
    lr: float = 1e-3,
    generator: torch.Generator | None = None,
) -> ClippedClassifier:
    """Train a classifier of clean latents from released (clipped, noisy) latents.

    Parameters
    ----------
    z : Tensor
        Released latents ``(n, k)``: ``clip_rows((latent - center) @ projection.T, clip)`` plus
        N(0, σ²) noise per coordinate (no centre and no projection in the current release).
    y : Tensor
        Released int64 labels ``(n,)``, possibly through randomized response.
    kind : {"mlp", "class-mean", "lda"}
        ``mlp``: ``LatentClassifier`` trained on the noisy latents as they are (the old
        behaviour; ignores the noise). ``class-mean``: nearest class mean. ``lda``: shared-
        covariance Gaussian classes with a de-noised covariance. The last two correct labels.
    num_classes : int
        Number of classes ``K``.
    clip : float
        The release's L2 clip ``C``; the returned module clips its inputs to it.
    noise_std : float
        The release's per-coordinate noise std σ (0: none).
    label_epsilon : float
        Randomized-response ε of the labels (``inf``: labels in clear).
    center : Tensor, optional
        Public ``(d,)`` offset the release subtracted before clipping; ``None``: none.
    projection : Tensor, optional
        Public ``(k, d)`` map the release applied after centring; ``None``: identity.
    shrinkage : float
        ``lda`` only: weight in [0, 1] of the mean eigenvalue in the covariance.
    epochs, batch_size, lr, generator
        ``mlp`` only: training settings of ``train_classifier``.

    Returns
    -------
    ClippedClassifier
        Maps clean latents ``(B, d)`` to logits ``(B, K)`` (float32).

    Raises
    ------
    ValueError
        Unknown kind, negative σ, non-positive clip or label ε, bad shapes or labels.
    """
    if kind not in LEARNERS:
        raise ValueError(f"unknown learner kind {kind!r}; choose one of {tuple(LEARNERS)}")
    if not (noise_std >= 0 and clip > 0 and label_epsilon > 0 and 0 <= shrinkage <= 1 and num_classes >= 2):
        raise ValueError(
            "need noise_std >= 0, clip > 0, label_epsilon > 0, shrinkage in [0, 1], num_classes >= 2; got "
            f"{noise_std}, {clip}, {label_epsilon}, {shrinkage}, {num_classes}"
        )
    if z.dim() != 2 or y.shape != (len(z),) or len(z) < 2:
        raise ValueError(f"need latents (n, d) with n >= 2 and labels (n,), got {tuple(z.shape)} and {tuple(y.shape)}")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes})")
    d = z.shape[1] if projection is None else projection.shape[1]
    if projection is not None and projection.shape != (z.shape[1], d):
        raise ValueError(f"projection must have shape ({z.shape[1]}, d), got {tuple(projection.shape)}")
    if center is not None and center.shape != (d,):
        raise ValueError(f"center must have shape ({d},), got {tuple(center.shape)}")
    release = Release(clip=clip, noise_std=noise_std, label_epsilon=label_epsilon, num_classes=num_classes)
    train = Training(epochs=epochs, batch_size=batch_size, lr=lr, generator=generator, shrinkage=shrinkage)
    inner = LEARNERS[kind](z, y, release, train)
    return ClippedClassifier(inner, clip=clip, center=center, projection=projection).eval()
