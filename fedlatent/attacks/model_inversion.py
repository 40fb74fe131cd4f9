"""Model inversion of the final classifier (Fredrikson, Jha & Ristenpart 2015).

What: for every class, an input that the final classifier assigns to that class with high
confidence, as a class representative. In ``raw`` mode the input is an image, optimized
directly (sigmoid-parametrized so it stays in [0, 1]) under a small total-variation and L2
prior. In the latent modes the input is a latent, kept in the plausible region by a Gaussian
prior fitted to the aux latents, then mapped to an image by an inverse network trained on
``(release(encoder(aux)), aux)`` (``inversion.fit_inverse``). Without a server-side encoder
(``local``), a shadow encoder fitted as in query-free latent inversion stands in for it; that
needs shared latents, so ``local`` + ``latent-fedavg`` raises ``NotApplicable``.

Why scored against class means: a representative says what the model learned of a class, not
one record, so it is compared with the class mean of the private records. The aux class mean
(public) already scores high against it; only what goes beyond that baseline is leakage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from fedlatent.attacks.common import NotApplicable, total_variation
from fedlatent.attacks.inversion import fit_inverse, shadow_encoder
from fedlatent.attacks.view import AttackerView
from fedlatent.learning import seeding


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no truth value
class ModelInversion:
    """Output of ``model_inversion``: float32 ``(num_classes, C, H, W)`` images in [0, 1]."""

    images: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)


def _class_nll(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """-log p(class k | input k) for input k of a batch holding one input per class."""
    logp = nn.functional.log_softmax(model(inputs), dim=1)
    return -logp[torch.arange(len(inputs)), torch.arange(len(inputs))]


def _invert_images(
    model: nn.Module, view: AttackerView, *, steps: int, lr: float, tv: float, l2: float
) -> torch.Tensor:
    # Start from uniform grey (logit 0), not from an aux image: the representative must come
    # from the model, or it would merely restate the aux baseline it is compared with.
    logits = torch.zeros(view.num_classes, *view.image_shape, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        x = torch.sigmoid(logits)
        loss = (_class_nll(model, x) + tv * total_variation(x) + l2 * x.pow(2).flatten(1).mean(1)).sum()
        loss.backward()
        optimizer.step()
    return torch.sigmoid(logits).detach()


def _invert_latents(
    model: nn.Module, aux_z: torch.Tensor, num_classes: int, *, steps: int, lr: float, prior: float
) -> torch.Tensor:
    # A Gaussian fitted to the (released) aux latents: the Mahalanobis penalty keeps the latent
    # where the inverse network was trained, instead of in an adversarial corner of the space.
    mean = aux_z.mean(dim=0)
    cov = torch.cov(aux_z.T).reshape(len(mean), -1) + 1e-4 * torch.eye(len(mean))
    precision = torch.linalg.inv(cov)
    z = mean.repeat(num_classes, 1).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        d = z - mean
        mahalanobis = ((d @ precision) * d).sum(1) / len(mean)
        loss = (_class_nll(model, z) + prior * mahalanobis).sum()
        loss.backward()
        optimizer.step()
    return z.detach()


def model_inversion(
    view: AttackerView,
    *,
    steps: int = 300,
    lr: float = 0.1,
    tv: float = 0.05,
    l2: float = 0.01,
    prior: float = 0.1,
    inverse_epochs: int = 100,
    shadow_epochs: int = 50,
    seed: int = 0,
) -> ModelInversion:
    """One representative image per class from the final classifier (see module docstring).

    Parameters
    ----------
    view : AttackerView
        The server's view; its only source of data.
    steps, lr : int, float
        Adam steps and learning rate of the input optimization.
    tv, l2 : float
        Weights of the total-variation and L2 priors on the image (``raw`` mode).
    prior : float
        Weight of the Mahalanobis prior on the latent (latent modes).
    inverse_epochs, shadow_epochs : int
        Epochs of the inverse network and, without a server-side encoder, of the shadow
        autoencoder (latent modes).
    seed : int
        Seed of every random step.

    Raises
    ------
    NotApplicable
        A ``local`` encoder with no shared latents to fit a shadow encoder to.
    """
    model = view.classifier()
    for p in model.parameters():
        p.requires_grad_(False)  # only the input is optimized
    settings: dict[str, Any] = {"steps": steps, "lr": lr, "seed": seed}
    if not view.cfg.is_latent:
        images = _invert_images(model, view, steps=steps, lr=lr, tv=tv, l2=l2)
        settings.update(method="image", tv=tv, l2=l2)
    else:
        encoder = view.encoder()
        source = "server"
        if encoder is None:
            if not view.latents:
                raise NotApplicable("local encoder and no shared latents: nothing to map latents back to images")
            gen = seeding.generator(seed, 1)
            encoder, source = shadow_encoder(view, epochs=shadow_epochs, generator=gen), "shadow"
        inverse, aux_z = fit_inverse(view, encoder, epochs=inverse_epochs, generator=seeding.generator(seed, 2))
        z = _invert_latents(model, aux_z, view.num_classes, steps=steps, lr=lr, prior=prior)
        with torch.no_grad():
            images = inverse(z)
        settings.update(
            method="latent",
            prior=prior,
            encoder=source,
            inverse_epochs=inverse_epochs,
            shadow_epochs=shadow_epochs if source == "shadow" else 0,
            noise_std=view.latent_noise_std(),
        )
    return ModelInversion(images=images.numpy().astype(np.float32), settings=settings)
