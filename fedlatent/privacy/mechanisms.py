"""The release mechanisms of ``latent-share``: clipping, Gaussian noise on latents, randomized labels.

What: ``gaussian_release`` clips each latent to an L2 norm and adds Gaussian noise whose std
``latent_noise_std`` calibrates with an Opacus accountant (replacement of one record,
sensitivity 2C); ``randomized_response`` is k-ary randomized response on labels (pure ε).
``clip_rows`` is shared with the server learners, which clip their inputs as the release did.
"""

from __future__ import annotations

import math

import torch

from fedlatent.privacy.accounting import calibrate_noise_multiplier


def clip_rows(x: torch.Tensor, *, max_norm: float) -> torch.Tensor:
    """Scale each row (first dimension) to L2 norm at most ``max_norm``; shorter rows are unchanged."""
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")
    norms = x.reshape(len(x), -1).norm(dim=1)
    factor = torch.where(norms > max_norm, max_norm / norms.clamp_min(torch.finfo(x.dtype).tiny), 1.0)
    return x * factor.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)


def latent_noise_std(*, epsilon: float, delta: float, clip: float, releases: int = 1, accountant: str = "rdp") -> float:
    """Std σ of the Gaussian noise, per coordinate, for releasing clipped latents ``releases`` times.

    Neighbours differ by the replacement of one record; old and new latent are clipped to
    L2 norm ``clip``, so the released matrix moves by at most ``2 * clip`` (L2 sensitivity).
    With ``sample_rate=1`` an Opacus accountant treats a step as the plain (not subsampled)
    Gaussian mechanism with sensitivity 1 and std ``z``; ``z`` is calibrated for ``releases``
    compositions (ε ≤ target within 1%) and scaled: ``σ = z · 2 · clip``. Unlike the classic
    ``sqrt(2 ln(1.25/δ)) / ε`` bound, valid only for ε < 1, this holds for any ε.
    """
    if not (clip > 0 and releases >= 1):
        raise ValueError(f"need clip > 0 and releases >= 1, got {clip}, {releases}")
    z = calibrate_noise_multiplier(
        target_epsilon=epsilon, delta=delta, sample_rate=1.0, steps=releases, accountant=accountant
    )
    return z * 2.0 * clip


def gaussian_release(latents: torch.Tensor, *, clip: float, std: float, generator: torch.Generator) -> torch.Tensor:
    """Clip each latent to L2 norm ``clip`` and add N(0, std²) noise to every coordinate."""
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std}")
    clipped = clip_rows(latents, max_norm=clip)
    noise = torch.randn(clipped.shape, generator=generator, dtype=clipped.dtype, device=clipped.device)
    return clipped + std * noise


def randomized_response(
    labels: torch.Tensor, *, epsilon: float, num_classes: int, generator: torch.Generator
) -> torch.Tensor:
    """k-ary randomized response: ε-DP (label only) for each record's label.

    The true label is kept with probability ``e^ε / (e^ε + k - 1)``; otherwise one of the
    ``k - 1`` other labels is drawn uniformly. ``epsilon=inf`` keeps every label.
    """
    if not (epsilon >= 0 and num_classes >= 2):
        raise ValueError(f"need epsilon >= 0 and num_classes >= 2, got {epsilon}, {num_classes}")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    if math.isinf(epsilon):
        return labels.clone()
    keep_prob = 1.0 / (1.0 + (num_classes - 1) * math.exp(-epsilon))
    keep = torch.rand(labels.shape, generator=generator) < keep_prob
    offset = torch.randint(1, num_classes, labels.shape, generator=generator)
    return torch.where(keep, labels, (labels + offset) % num_classes)
