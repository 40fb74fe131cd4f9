"""Latent inversion (He, Zhang & Lee 2019): images back from the latents the server received.

What: an inverse network latent -> image is trained on public (aux) images and their latents,
then applied to every shared latent. Two settings of the paper:

- black-box: the server can query the encoder (``public``/``federated``), so the training pairs
  are ``(release(encoder(aux)), aux)``;
- query-free: the encoder is secret (``local``), so a *shadow* encoder is first fitted to what
  the server does hold — aux images and labels, the final latent classifier, and the moments
  of the shared latents — and its inverse network is applied to the shared latents.

Label-aware: the shared latents arrive with their labels (latent-share), so the attacker feeds
the label to the inverse network too (a one-hot beside the latent) and, on a held-out fifth of
the aux set, keeps whichever of the network and the aux class-mean image of the label scores the
higher SSIM. It therefore never does worse than the class-mean baseline it could have output
for free, and its leakage is what the latent adds beyond the label.

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
from fedlatent.attacks.metrics import aux_class_means, ssim
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
        ae = Autoencoder(
            image_shape=view.image_shape, latent_dim=cfg.latent_dim, arch=cfg.ae_arch, seed_bugs=cfg.seed_bugs
        )

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


def with_labels(z: torch.Tensor, labels: np.ndarray | torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """The inverse network's input: the latent, and with ``labels`` their one-hot beside it."""
    if labels is None:
        return z
    onehot = nn.functional.one_hot(torch.as_tensor(np.asarray(labels), dtype=torch.long), num_classes)
    return torch.cat([z, onehot.float()], dim=1)


def fit_inverse(
    view: AttackerView,
    encoder: nn.Module,
    *,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 64,
    noise_draws: int = 4,
    label_aware: bool = False,
    rows: np.ndarray | None = None,
    generator: torch.Generator,
) -> tuple[nn.Module, torch.Tensor]:
    """Inverse network of ``encoder`` followed by the run's release, trained on the aux set.

    Returns the network and the released aux latents it was trained on (``noise_draws``
    releases of each aux latent under DP, so the network learns to average the noise out
    rather than to memorize one draw; one release otherwise). ``label_aware`` adds the aux
    labels to its input (``with_labels``); ``rows`` restricts training to those aux records.
    """
    rows = np.arange(len(view.aux_x)) if rows is None else rows
    aux_x = torch.from_numpy(view.aux_x[rows])
    aux_z = encode(encoder, aux_x)
    std = view.latent_noise_std()
    draws = max(noise_draws, 1) if std > 0 else 1
    train_z = torch.cat([release(aux_z, clip=view.cfg.latent_clip, std=std, generator=generator) for _ in range(draws)])
    labels = np.tile(view.aux_y[rows], draws) if label_aware else None
    inputs = with_labels(train_z, labels, view.num_classes)
    inverse = train_inverse(
        inputs, aux_x.repeat(draws, 1, 1, 1), epochs=epochs, lr=lr, batch_size=batch_size, generator=generator
    )
    return inverse, train_z


def _choose(
    view: AttackerView,
    encoder: nn.Module,
    inverse: nn.Module,
    held_out: np.ndarray,
    train: np.ndarray,
    gen: torch.Generator,
) -> tuple[str, dict[str, float]]:
    """Network or class-mean guess, whichever scores the higher SSIM on the held-out aux records."""
    x, y = view.aux_x[held_out], view.aux_y[held_out]
    z = release(
        encode(encoder, torch.from_numpy(x)), clip=view.cfg.latent_clip, std=view.latent_noise_std(), generator=gen
    )
    with torch.no_grad():
        net = inverse(with_labels(z, y, view.num_classes)).numpy()
    means = aux_class_means(view.aux_x[train], view.aux_y[train], view.num_classes)[y]
    scores = {"network": float(ssim(net, x).mean()), "class-mean": float(ssim(means, x).mean())}
    return max(scores, key=lambda k: scores[k]), scores


def latent_inversion(
    view: AttackerView,
    *,
    epochs: int = 100,
    shadow_epochs: int = 50,
    lr: float = 1e-3,
    batch_size: int = 64,
    noise_draws: int = 4,
    label_aware: bool = True,
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
    label_aware : bool
        Feed the shared labels to the inverse network and fall back to the class-mean guess
        where that scores better on held-out aux records (see module docstring).
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
    # Label-aware when the latents came with labels and the aux set is big enough to hold a fifth out.
    label_aware = label_aware and len(view.aux_x) >= 10
    order = torch.randperm(len(view.aux_x), generator=seeding.generator(seed, 6)).numpy()
    held_out, train = (order[: len(order) // 5], order[len(order) // 5 :]) if label_aware else (order[:0], order)
    inverse, _ = fit_inverse(
        view, encoder, epochs=epochs, lr=lr, batch_size=batch_size, noise_draws=noise_draws,
        label_aware=label_aware, rows=train, generator=gen,
    )  # fmt: skip
    chosen, validation = "network", dict[str, float]()
    if label_aware:
        chosen, validation = _choose(view, encoder, inverse, held_out, train, gen)
    means = aux_class_means(view.aux_x, view.aux_y, view.num_classes)
    images = {}
    with torch.no_grad():
        for pid, (z, y) in sorted(view.latents.items()):
            labels = np.asarray(y, dtype=np.int64)
            if chosen == "class-mean":
                images[pid] = means[labels].astype(np.float32)
            else:
                z_in = with_labels(
                    torch.from_numpy(np.asarray(z, dtype=np.float32)), labels if label_aware else None, view.num_classes
                )
                images[pid] = inverse(z_in).numpy()
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
        "label_aware": label_aware,
        "output": chosen,
        "validation_ssim": validation,
    }
    return Reconstructions(method=method, images=images, settings=settings)
