"""What every attack shares: ``NotApplicable``, inverse networks, the attacker's release, image priors.

- ``NotApplicable``: an attack that has nothing to work on in a run says so, with the reason.
- ``InverseNetwork`` / ``train_inverse``: latent -> image networks trained on aux pairs (latent
  inversion, gradient inversion of latent classifiers, model inversion all map latents back).
- ``release``: the run's public latent release (clip + noise), differentiable, as the attacker
  mimics it; ``total_variation``: the smoothness prior of image reconstructions.

Seeding comes from ``fedlatent.learning.seeding`` like everywhere else in fedlatent.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedlatent.learning.progress import Progress
from fedlatent.learning.seeding import seeded
from fedlatent.learning.training import fit, make_loader
from fedlatent.privacy.mechanisms import gaussian_release


class NotApplicable(ValueError):
    """The attack does not apply to this run (e.g. no shared latents, no classifier to invert)."""


class InverseNetwork(nn.Module):
    """Latent -> image: standardized input, a linear path plus an MLP, sigmoid output.

    The linear path lets the network invert (near-)linear encoders exactly from few aux
    records; the MLP carries the non-linear rest. Inputs are standardized with the training
    latents' statistics (kept as buffers) because latent scales differ wildly between runs.
    """

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(
        self, *, latent_dim: int, image_shape: tuple[int, int, int], shift: torch.Tensor, scale: torch.Tensor
    ) -> None:
        super().__init__()
        self.image_shape = image_shape
        pixels = int(np.prod(image_shape))
        self.register_buffer("shift", shift.reshape(1, latent_dim).float())
        self.register_buffer("scale", scale.reshape(1, latent_dim).float())
        self.linear = nn.Linear(latent_dim, pixels)
        self.mlp = nn.Sequential(nn.Linear(latent_dim, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU())
        self.head = nn.Linear(512, pixels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # noqa: D102
        z = (z - self.shift) / self.scale
        return torch.sigmoid(self.linear(z) + self.head(self.mlp(z))).reshape(-1, *self.image_shape)


def _mse(model: nn.Module, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(model(z), x)


def train_inverse(
    latents: torch.Tensor,
    images: torch.Tensor,
    *,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 64,
    generator: torch.Generator,
) -> nn.Module:
    """Train an inverse network ``latent -> image`` with MSE; return it in eval mode.

    Parameters
    ----------
    latents : Tensor
        ``(n, d)`` training latents (already passed through the run's release, if any).
    images : Tensor
        ``(n, C, H, W)`` matching images in [0, 1]; the output shape is taken from them.
    epochs, lr, batch_size : int, float, int
        Adam training settings.
    generator : torch.Generator
        Fixes the initial weights and the batch order.
    """
    if len(latents) != len(images) or len(latents) == 0:
        raise ValueError(f"need as many latents as images (> 0), got {len(latents)} and {len(images)}")
    latents, images = latents.detach().float(), images.detach().float()
    scale = latents.std(dim=0).clamp_min(1e-6) if len(latents) > 1 else torch.ones(latents.shape[1])
    with seeded(generator):
        net = InverseNetwork(
            latent_dim=latents.shape[1],
            image_shape=(int(images.shape[1]), int(images.shape[2]), int(images.shape[3])),
            shift=latents.mean(dim=0),
            scale=scale,
        )
    loader = make_loader(latents, images, batch_size=batch_size, generator=generator)
    progress = Progress("attack: inverse network", epochs, after=10)
    fit(net, loader, torch.optim.Adam(net.parameters(), lr=lr), epochs=epochs, loss_fn=_mse, on_epoch=progress)
    return net.eval()


def release(z: torch.Tensor, *, clip: float, std: float, generator: torch.Generator) -> torch.Tensor:
    """The run's public latent release, differentiable in ``z``: identity when no DP.

    Clients clip and add noise only under DP (``privacy.client.release_latents``), i.e. exactly
    when the noise std is > 0, so the attacker does the same, with the clients' own mechanism.
    """
    return gaussian_release(z, clip=clip, std=std, generator=generator) if std > 0 else z


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels of each image ``(n, C, H, W)`` -> ``(n,)``.

    The image prior of Geiping et al. 2020 (gradient inversion) and of model inversion.
    """
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return dh + dw
