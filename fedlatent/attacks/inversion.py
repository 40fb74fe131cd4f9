"""Latent inversion (He, Zhang & Lee 2019): images back from the latents the server received.

What: an inverse network latent -> image is trained on public (aux) images and their latents,
then applied to every shared latent. Two settings of the paper:

- black-box: the server can query the encoder (``public``/``federated``), so the training pairs
  are ``(release(encoder(aux)), aux)``;
- query-free: the encoder is secret (``local``), so a *shadow* encoder is first fitted to what
  the server does hold — aux images and labels, the final latent classifier, and the moments
  of the shared latents — and its inverse network is applied to the shared latents.

Why the release step: the attacker knows every public setting of the run (clip norm, noise
std), so a fair inverse network learns from aux latents that went through the same clipping
and Gaussian noise as the clients' (ARCHITECTURE.md, "Threat model of the attacks"). Scores
always stand beside the trivial baselines of ``attacks.metrics``: a latent that leaks nothing
still "reconstructs" the aux (class-)mean image, so leakage is what goes beyond them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from fedlatent.attacks.common import NotApplicable, release, train_inverse
from fedlatent.attacks.view import AttackerView
from fedlatent.learning import seeding
from fedlatent.learning.models import Autoencoder, Encoder
from fedlatent.learning.progress import Progress
from fedlatent.learning.training import encode, fit, make_loader


@dataclass(frozen=True, eq=False)  # eq=False: dicts of arrays have no truth value
class Reconstructions:
    """Output of ``latent_inversion``.

    Attributes
    ----------
    method : {"black-box", "query-free"}
        Whether the encoder was queryable or a shadow encoder stood in for it.
    images : dict of int to ndarray
        Partition -> float32 ``(n, C, H, W)`` images in [0, 1], rows in the order of
        ``view.latents[partition]``.
    settings : dict
        Everything needed to reproduce the attack.
    """

    method: str
    images: dict[int, np.ndarray]
    settings: dict[str, Any] = field(default_factory=dict)


def _shared(view: AttackerView) -> torch.Tensor:
    if not view.latents:
        raise NotApplicable(f"mode {view.cfg.mode!r}: the server received no latents to invert")
    return torch.cat([torch.from_numpy(np.asarray(z, dtype=np.float32)) for z, _ in view.latents.values()])


def _moment_loss(z: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """Scale-free distance of a batch's mean and covariance to the target ones."""
    centred = z - z.mean(dim=0)
    batch_cov = centred.T @ centred / max(len(z) - 1, 1)
    mean_term = (z.mean(dim=0) - mean).pow(2).sum() / (cov.trace() + 1e-8)
    return mean_term + (batch_cov - cov).pow(2).sum() / (cov.pow(2).sum() + 1e-8)


def shadow_encoder(
    view: AttackerView, *, epochs: int, lr: float = 1e-3, batch_size: int = 64, generator: torch.Generator
) -> Encoder:
    """A stand-in for a secret encoder, fitted to what the server holds (query-free setting).

    An autoencoder of the run's public architecture is trained on the aux images with three
    losses: reconstruction (the shadow keeps information), cross-entropy of the frozen final
    latent classifier on the released shadow latents against the aux labels (the shadow speaks
    the classifier's language), and matching of the mean and covariance of the shared latents
    (the shadow lands where the clients' latents are). With ``local`` encoders every client's
    latent space differs; one shadow is fitted to them all pooled, as the classifier was.
    """
    cfg, std = view.cfg, view.latent_noise_std()
    shared = _shared(view)
    target_mean, target_cov = shared.mean(dim=0), torch.cov(shared.T).reshape(shared.shape[1], -1)
    classifier = view.classifier()
    for p in classifier.parameters():
        p.requires_grad_(False)
    with seeding.seeded(generator):
        ae = Autoencoder(image_shape=view.image_shape, latent_dim=cfg.latent_dim, arch=cfg.ae_arch)

    def loss_fn(_: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        z = ae.encoder(xb)
        released = release(z, clip=cfg.latent_clip, std=std, generator=generator)
        return (
            nn.functional.binary_cross_entropy(ae.decoder(z), xb)
            + nn.functional.cross_entropy(classifier(released), yb)
            + _moment_loss(released, target_mean, target_cov)
        )

    loader = make_loader(
        torch.from_numpy(view.aux_x), torch.from_numpy(view.aux_y), batch_size=batch_size, generator=generator
    )
    progress = Progress("attack: shadow encoder", epochs, after=10)
    fit(ae, loader, torch.optim.Adam(ae.parameters(), lr=lr), epochs=epochs, loss_fn=loss_fn, on_epoch=progress)
    return ae.encoder.eval()


def fit_inverse(
    view: AttackerView,
    encoder: nn.Module,
    *,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 64,
    noise_draws: int = 4,
    generator: torch.Generator,
) -> tuple[nn.Module, torch.Tensor]:
    """Inverse network of ``encoder`` followed by the run's release, trained on the aux set.

    Returns the network and the released aux latents it was trained on (``noise_draws``
    releases of each aux latent under DP, so the network learns to average the noise out
    rather than to memorize one draw; one release otherwise).
    """
    aux_x = torch.from_numpy(view.aux_x)
    aux_z = encode(encoder, aux_x)
    std = view.latent_noise_std()
    draws = max(noise_draws, 1) if std > 0 else 1
    train_z = torch.cat([release(aux_z, clip=view.cfg.latent_clip, std=std, generator=generator) for _ in range(draws)])
    inverse = train_inverse(
        train_z, aux_x.repeat(draws, 1, 1, 1), epochs=epochs, lr=lr, batch_size=batch_size, generator=generator
    )
    return inverse, train_z


def latent_inversion(
    view: AttackerView,
    *,
    epochs: int = 100,
    shadow_epochs: int = 50,
    lr: float = 1e-3,
    batch_size: int = 64,
    noise_draws: int = 4,
    seed: int = 0,
) -> Reconstructions:
    """Reconstruct every shared latent's image with an inverse network (see module docstring).

    Parameters
    ----------
    view : AttackerView
        The server's view; its only source of data.
    epochs : int
        Epochs of the inverse network.
    shadow_epochs : int
        Epochs of the shadow autoencoder (query-free only).
    lr, batch_size : float, int
        Adam settings of both trainings.
    noise_draws : int
        Under DP, each aux latent is released this many times with fresh noise, so that the
        inverse network learns to average the noise out rather than to memorize one draw.
    seed : int
        Seed of every random step.

    Raises
    ------
    NotApplicable
        If the server received no latents (modes ``raw`` and ``latent-fedavg``).
    """
    _shared(view)  # fail early, before any training
    cfg, std = view.cfg, view.latent_noise_std()
    encoder = view.encoder()
    method = "black-box" if encoder is not None else "query-free"
    if encoder is None:
        gen = seeding.generator(seed, 1)
        encoder = shadow_encoder(view, epochs=shadow_epochs, lr=lr, batch_size=batch_size, generator=gen)
    gen = seeding.generator(seed, 2)
    inverse, _ = fit_inverse(
        view, encoder, epochs=epochs, lr=lr, batch_size=batch_size, noise_draws=noise_draws, generator=gen
    )
    with torch.no_grad():
        images = {
            pid: inverse(torch.from_numpy(np.asarray(z, dtype=np.float32))).numpy()
            for pid, (z, _) in sorted(view.latents.items())
        }
    settings = {
        "method": method,
        "epochs": epochs,
        "shadow_epochs": shadow_epochs if method == "query-free" else 0,
        "lr": lr,
        "batch_size": batch_size,
        "noise_draws": noise_draws if std > 0 else 1,
        "seed": seed,
        "latent_clip": cfg.latent_clip,
        "noise_std": std,
        "aux_records": len(view.aux_x),
    }
    return Reconstructions(method=method, images=images, settings=settings)
