"""The three networks of fedlatent, as plain ``nn.Module``s.

- ``Autoencoder``: an ``Encoder`` (image -> latent) and a ``Decoder`` (latent -> image). Only
  the encoder is ever kept after training; the decoder is discarded (the seed's rule). Two
  shapes: the seed's MLP (input-700-500-300-d) and a small convolutional variant.
- ``LatentClassifier``: latent -> class logits.
- ``ImageClassifier``: image -> class logits, for the raw baseline (MLP or small CNN).

Two bugs of the seed's reference code are absent by default: the bottleneck is linear (a
ReLU there kills latent dimensions) and logits are linear (a ReLU there clips negative
logits and cripples the softmax). ``seed_bugs=True`` puts both ReLUs back, only so that the
seed's own experiment can be reproduced beside the fixed one (config key ``seed-bugs``); a
ReLU has no weights, so the state_dict keys are the same either way.

Only layers Opacus can compute per-sample gradients for are used (Linear, Conv2d, GroupNorm;
no BatchNorm), so every model can be trained with DP-SGD.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

MLP_AE_HIDDEN = (700, 500, 300)


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers with ReLU between them and none after the last."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _check_conv_shape(image_shape: tuple[int, int, int]) -> None:
    _, h, w = image_shape
    if h != w or h % 4:
        raise ValueError(f"conv autoencoder needs square images with side divisible by 4, got {image_shape}")


class Encoder(nn.Module):
    """Image ``(B, C, H, W)`` -> latent ``(B, d)``; the last layer is linear (``scatternet``: fixed features)."""

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        latent_dim: int,
        arch: str = "mlp",
        cache_dir: str = "",
        seed_bugs: bool = False,
    ) -> None:
        super().__init__()
        c, h, w = image_shape
        if arch == "scatternet":  # data-free ScatterNet features (learning/scatter.py); nothing to train
            from fedlatent.learning.scatter import ScatterFeatures, feature_dim

            if latent_dim != feature_dim(image_shape):
                dim = feature_dim(image_shape)
                raise ValueError(f"scatternet on {image_shape} gives {dim} features, not {latent_dim}")
            self.net: nn.Module = ScatterFeatures(image_shape, cache_dir=cache_dir)
        elif arch == "mlp":
            self.net = nn.Sequential(nn.Flatten(), _mlp((c * h * w, *MLP_AE_HIDDEN, latent_dim)))
        elif arch == "conv":
            _check_conv_shape(image_shape)
            self.net = nn.Sequential(
                nn.Conv2d(c, 16, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(16, 32, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Flatten(),
                nn.Linear(32 * (h // 4) * (w // 4), latent_dim),
            )
        else:
            raise ValueError(f"unknown autoencoder arch {arch!r}")
        if seed_bugs and isinstance(self.net, nn.Sequential):  # not scatternet: nothing to train there
            self.net.append(nn.ReLU())  # the seed's bug 1: a ReLU on the bottleneck

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.net(x)


class Decoder(nn.Module):
    """Latent ``(B, d)`` -> image ``(B, C, H, W)`` in [0, 1] (sigmoid output)."""

    def __init__(self, *, image_shape: tuple[int, int, int], latent_dim: int, arch: str = "mlp") -> None:
        super().__init__()
        c, h, w = image_shape
        self.image_shape = image_shape
        if arch == "mlp":
            self.net: nn.Module = _mlp((latent_dim, *reversed(MLP_AE_HIDDEN), c * h * w))
        elif arch == "conv":
            _check_conv_shape(image_shape)
            self.net = nn.Sequential(
                nn.Linear(latent_dim, 32 * (h // 4) * (w // 4)),
                nn.ReLU(),
                nn.Unflatten(1, (32, h // 4, w // 4)),
                nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1),
                nn.ReLU(),
                nn.ConvTranspose2d(16, c, 3, stride=2, padding=1, output_padding=1),
            )
        else:
            raise ValueError(f"unknown autoencoder arch {arch!r}")

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.sigmoid(self.net(z)).reshape(-1, *self.image_shape)


class Autoencoder(nn.Module):
    """Encoder + decoder trained on reconstruction; keep ``.encoder``, drop the rest."""

    def __init__(
        self, *, image_shape: tuple[int, int, int], latent_dim: int, arch: str = "mlp", seed_bugs: bool = False
    ) -> None:
        super().__init__()
        self.image_shape = image_shape
        self.encoder = Encoder(image_shape=image_shape, latent_dim=latent_dim, arch=arch, seed_bugs=seed_bugs)
        self.decoder = Decoder(image_shape=image_shape, latent_dim=latent_dim, arch=arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.decoder(self.encoder(x))


class LatentClassifier(nn.Module):
    """Latent ``(B, d)`` -> logits ``(B, K)``: an MLP with linear output."""

    def __init__(
        self, *, latent_dim: int, num_classes: int, hidden: Sequence[int] = (256, 128), seed_bugs: bool = False
    ) -> None:
        super().__init__()
        self.net = _mlp((latent_dim, *hidden, num_classes))
        if seed_bugs:  # the seed's bug 2: a ReLU on the logits
            self.net.append(nn.ReLU())

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.net(z)


def _tanh_cnn(image_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """The end-to-end DP-SGD CNN of Papernot et al. 2021 that Tramèr & Boneh 2021 use on (Fashion-)MNIST.

    conv 16 8x8/2 (pad 2), max-pool 2/1, conv 32 4x4/2, max-pool 2/1, dense 32, dense K; tanh
    between (bounded activations keep clipped gradients informative); ~26k weights on 28x28.
    """
    c, h, w = image_shape
    features = nn.Sequential(
        nn.Conv2d(c, 16, 8, stride=2, padding=2),
        nn.Tanh(),
        nn.MaxPool2d(2, stride=1),
        nn.Conv2d(16, 32, 4, stride=2),
        nn.Tanh(),
        nn.MaxPool2d(2, stride=1),
        nn.Flatten(),
    )
    try:
        width = features(torch.zeros(1, c, h, w)).shape[1]
    except RuntimeError:
        raise ValueError(f"tanh-cnn needs images of at least 16x16, got {image_shape}") from None
    return nn.Sequential(*features, nn.Linear(width, 32), nn.Tanh(), nn.Linear(32, num_classes))


class ImageClassifier(nn.Module):
    """Image -> logits for the raw baseline: ``mlp`` (256-128), a small 2-conv ``cnn``, or ``tanh-cnn``."""

    def __init__(self, *, image_shape: tuple[int, int, int], num_classes: int, arch: str = "mlp") -> None:
        super().__init__()
        c, h, w = image_shape
        if arch == "mlp":
            self.net: nn.Module = nn.Sequential(nn.Flatten(), _mlp((c * h * w, 256, 128, num_classes)))
        elif arch == "cnn":
            # GroupNorm rather than BatchNorm: per-sample gradients stay well defined for DP-SGD.
            self.net = nn.Sequential(
                nn.Conv2d(c, 16, 3, padding=1),
                nn.GroupNorm(4, 16),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1),
                nn.GroupNorm(4, 32),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(32 * (h // 4) * (w // 4), 64),
                nn.ReLU(),
                nn.Linear(64, num_classes),
            )
        elif arch == "tanh-cnn":
            self.net = _tanh_cnn(image_shape, num_classes)
        else:
            raise ValueError(f"unknown classifier arch {arch!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.net(x)
