"""Scores of attacks and models, from torchmetrics and scikit-learn, and the standard SSIM.

- ``psnr`` / ``ssim``: per-image reconstruction quality, images in [0, 1] (data range 1);
  ``ssim`` is Wang et al.'s valid-window SSIM (``attacks.ssim``, pinned to scikit-image).
- ``mia_scores``: ROC AUC and TPR at fixed low FPRs of a membership score.
- ``aux_class_means``: the no-leakage guess of an attacker who knows a record's label; the
  trivial baselines and the leakage rule are ``attacks.scoring.reconstruction`` and
  ``attacks.leakage`` (ARCHITECTURE.md, "Threat model").
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torchmetrics.functional.image import peak_signal_noise_ratio

from fedlatent.attacks.ssim import as_images, ssim, ssim_matrix

__all__ = ["psnr", "ssim", "ssim_matrix", "mia_scores", "aux_class_means", "summarize"]

FPR_LEVELS = (0.01, 0.001)


def _pair(recon: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    r = as_images(recon).clamp(0.0, 1.0)
    t = as_images(target)
    if r.shape != t.shape:
        raise ValueError(f"need two (n, C, H, W) batches of the same shape, got {tuple(r.shape)} and {tuple(t.shape)}")
    return r, t


def psnr(recon: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> np.ndarray:
    """PSNR in dB of each reconstruction against its target (images in [0, 1])."""
    r, t = _pair(recon, target)
    out = peak_signal_noise_ratio(r, t, data_range=1.0, reduction="none", dim=(1, 2, 3))
    return out.numpy().astype(np.float64)


def mia_scores(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> dict[str, float]:
    """AUC and TPR at 1% / 0.1% FPR of a score that is higher for members."""
    s = np.concatenate([member_scores, nonmember_scores]).astype(np.float64)
    if not np.isfinite(s).all():
        raise ValueError("membership scores must be finite")
    truth = np.concatenate([np.ones(len(member_scores)), np.zeros(len(nonmember_scores))])
    fpr, tpr, _ = roc_curve(truth, s)
    # With n non-members the smallest non-zero FPR is 1/n: below it a "TPR at level" is the TPR at
    # FPR 0 (a lower bound for the attacker), so the resolution is reported beside it.
    out = {"auc": float(roc_auc_score(truth, s)), "fpr_resolution": 1.0 / len(nonmember_scores)}
    for level in FPR_LEVELS:
        # TPR at the largest threshold whose FPR does not exceed the level (never optimistic).
        out[f"tpr_at_{level:g}_fpr"] = float(tpr[fpr <= level].max(initial=0.0))
    return out


def aux_class_means(aux_x: np.ndarray, aux_y: np.ndarray, num_classes: int) -> np.ndarray:
    """Aux class-mean image of every class ``(K, C, H, W)``; the aux mean for a class absent from aux.

    The no-leakage guess of an attacker who knows a record's label (public data only).
    """
    overall = aux_x.mean(axis=0)
    return np.stack(
        [aux_x[aux_y == c].mean(axis=0) if (aux_y == c).any() else overall for c in range(num_classes)]
    ).astype(np.float32)


def summarize(recon: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Mean PSNR and SSIM of a batch of reconstructions."""
    return {"psnr": float(psnr(recon, target).mean()), "ssim": float(ssim(recon, target).mean())}
