"""latent-share by sufficient statistics: what a linear discriminant needs, summed with distributed noise.

What: instead of releasing its latents and labels, each client sends (through SecAgg+, with its
Skellam share of the noise, ``distributed.py``) three sums over its records: the per-class sums
of its projected latents, the per-class counts, and the second-moment matrix. The server fits a
linear discriminant (LDA: class means and a shared covariance) from the noisy total. Labels
never leave a client in clear, so with a data-free or public encoder the guarantee is end to end.

The projection: latents are centred and projected onto the top ``stat-dim`` principal directions
of the *public* split's latents (3,969 ScatterNet features would make a 15.7M-entry moment
matrix), then clipped to L2 norm C. All of that is fitted on public data and known to every party.

Sensitivity (adding or removing one record): its projected latent u (‖u‖ ≤ C) moves one class
row of the sums by u, one count by 1 and the moment matrix by u uᵀ (Frobenius norm ‖u‖² ≤ C²).
The counts are sent times C and the moment matrix's upper triangle divided by C, so each block
moves by at most C and the whole vector by at most √3·C. One release (no sampling).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from fedlatent.privacy.mechanisms import clip_rows


def fit_projection(public: torch.Tensor, dim: int, *, quantile: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, basis)``: the public latents' mean and their top ``dim`` principal directions (d × dim).

    The basis is scaled so that ``quantile`` of the public latents project to norm at most 1: the
    clip (``stat-clip``, a public setting) then reads on the same scale whatever the encoder.
    """
    mean = public.double().mean(dim=0)
    _, _, vh = torch.linalg.svd(public.double() - mean, full_matrices=False)
    if dim > vh.shape[0]:
        raise ValueError(f"stat-dim {dim} exceeds the {vh.shape[0]} directions the public split spans")
    basis = vh[:dim].T
    radius = float(((public.double() - mean) @ basis).norm(dim=1).quantile(quantile))
    return mean.float(), (basis / max(radius, 1e-12)).float().contiguous()


class Projected(nn.Module):
    """Latent -> clipped projection -> a linear map: the classifier the statistics path trains."""

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor, *, clip: float, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone())
        self.register_buffer("basis", basis.clone())
        self.register_buffer("clip", torch.tensor(float(clip)))
        self.linear = nn.Linear(basis.shape[1], num_classes)

    mean: torch.Tensor
    basis: torch.Tensor
    clip: torch.Tensor

    def project(self, z: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return clip_rows((z - self.mean) @ self.basis, max_norm=float(self.clip))

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.linear(self.project(z))


def statistics_dim(num_classes: int, dim: int) -> int:
    """Length of the statistics vector: class sums, counts, upper triangle of the moment matrix."""
    return num_classes * dim + num_classes + dim * (dim + 1) // 2


def client_statistics(u: torch.Tensor, y: torch.Tensor, *, num_classes: int, clip: float) -> torch.Tensor:
    """The flat statistics vector of projected, clipped latents ``u`` with labels ``y`` (float64).

    Blocks scaled so each moves by at most ``clip`` when a record is added (module docstring).
    """
    if len(u) and u.norm(dim=1).max() > clip * (1 + 1e-6):
        raise ValueError("latents must be clipped to the statistics' clip before summing")
    u = u.double()
    sums = torch.zeros(num_classes, u.shape[1], dtype=torch.float64).index_add_(0, y, u)
    counts = torch.bincount(y, minlength=num_classes).double()
    upper = torch.triu_indices(u.shape[1], u.shape[1])
    moment = (u.T @ u)[upper[0], upper[1]]
    return torch.cat([sums.reshape(-1), counts * clip, moment / clip])


def decode_statistics(
    total: np.ndarray, *, num_classes: int, dim: int, clip: float, scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(class sums K×p, counts K, moment p×p)`` from the secure sum of integer statistics vectors."""
    v = np.asarray(total, dtype=np.float64) / scale
    if len(v) != statistics_dim(num_classes, dim):
        raise ValueError(f"statistics vector has {len(v)} entries, expected {statistics_dim(num_classes, dim)}")
    k = num_classes * dim
    sums, counts = v[:k].reshape(num_classes, dim), v[k : k + num_classes] / clip
    moment = np.zeros((dim, dim))
    moment[np.triu_indices(dim)] = v[k + num_classes :] * clip
    moment = moment + np.triu(moment, 1).T
    return sums, counts, moment


def lda_from_statistics(
    sums: np.ndarray, counts: np.ndarray, moment: np.ndarray, *, ridge: float
) -> tuple[np.ndarray, np.ndarray]:
    """Weights (K×p) and biases (K) of the linear discriminant the (noisy) statistics define.

    Class means are sums over counts (a count the noise drove below 1 is taken as 1); the shared
    within-class covariance is the moment matrix minus the class means' part, over the total,
    made positive definite by flooring its eigenvalues at ``ridge`` (noise can make it indefinite).
    """
    n = np.maximum(counts, 1.0)
    means = sums / n[:, None]
    total = n.sum()
    within = (moment - (means.T * n) @ means) / total
    within = (within + within.T) / 2
    values, vectors = np.linalg.eigh(within)
    precision = (vectors / np.maximum(values, ridge)) @ vectors.T
    weights = means @ precision
    biases = -0.5 * np.einsum("kp,kp->k", weights, means) + np.log(n / total)
    return weights, biases


def statistics_ridge(*, clip: float, dim: int, moment_noise_std: float, records: float) -> float:
    """Eigenvalue floor of the noisy covariance: the noise's spectral edge, at least 1% of C²/p.

    The moment matrix carries noise of std ``moment_noise_std`` per entry; divided by the
    ``records`` it becomes a symmetric noise matrix whose eigenvalues spread to about 2√p times
    that std (the semicircle's edge). Directions below it are noise: they get the floor.
    """
    return max(0.01 * clip**2 / dim, 2 * math.sqrt(dim) * moment_noise_std / max(records, 1.0))
