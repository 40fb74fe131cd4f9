"""ScatterNet features (Tramèr & Boneh 2021): a data-free public encoder that costs no privacy.

What: ``ScatterFeatures`` maps images ``(B, 1, H, W)`` to the scattering transform of kymatio
(Morlet wavelets, L = 8 angles; J = 2 on 28×28 -> 81 channels of 7×7, J = 1 on digits' 8×8 ->
9 channels of 4×4), normalised per image with a group norm without learned parameters (27
groups of 3 channels on 28×28, as the paper's data-independent normalisation; 3 groups on 8×8),
then flattened: 3,969 (28×28) or 144 (8×8) features. Nothing is learned from data, so the encoder
is known to every party and touches no private record.

Why a cache: the transform costs ~2.5 s per 1,024 Fashion-MNIST images on one thread, and a
client encodes the same records every round. Features are memoised per process on a digest of
the input batch and, with a ``cache_dir``, stored once per machine (memory-mapped). Inputs that
require gradients (an attacker optimising an image) bypass the cache.

Why kymatio's front-end class directly: ``import kymatio.torch`` fails with current SciPy
(its 3-D part needs ``sph_harm``), while the 2-D torch front end imports and runs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedlatent.data.store import Memo

ANGLES = 8
# This process's features, keyed on the image shape and a SHA-256 of the input batch.
FEATURES: Memo[torch.Tensor] = Memo(capacity=4)


def scales(image_shape: tuple[int, int, int]) -> int:
    """J of the transform: 2 for 28×28 images, 1 for small ones (digits' 8×8)."""
    return 2 if min(image_shape[1:]) >= 16 else 1


def feature_shape(image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """``(channels, height, width)`` of the features of one image."""
    c, h, w = image_shape
    j = scales(image_shape)
    paths = 1 + ANGLES * j + ANGLES**2 * j * (j - 1) // 2
    return c * paths, h // 2**j, w // 2**j


def feature_dim(image_shape: tuple[int, int, int]) -> int:
    """Length of the flattened features of one image (3,969 on 28×28, 144 on 8×8)."""
    k, h, w = feature_shape(image_shape)
    return k * h * w


class ScatterFeatures(nn.Module):
    """Image -> normalised, flattened scattering coefficients (see module docstring)."""

    def __init__(self, image_shape: tuple[int, int, int], *, cache_dir: str = "", batch: int = 1024) -> None:
        super().__init__()
        from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D

        self.image_shape, self.cache_dir, self.batch = image_shape, cache_dir, batch
        self.scattering = ScatteringTorch2D(J=scales(image_shape), shape=image_shape[1:], L=ANGLES)
        channels = feature_shape(image_shape)[0]
        self.groups = 27 if channels % 27 == 0 else 3

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The features of ``x``, uncached and differentiable."""
        k, h, w = feature_shape(self.image_shape)
        s = self.scattering(x.float()).reshape(len(x), k, h, w)
        return nn.functional.group_norm(s, self.groups).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if x.requires_grad:
            return self.transform(x)
        data = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        key = hashlib.sha256(f"{self.image_shape}{data.shape}".encode() + data.tobytes()).hexdigest()
        return FEATURES.get(key, lambda: self._stored(key, x))

    def _stored(self, key: str, x: torch.Tensor) -> torch.Tensor:
        path = Path(self.cache_dir) / f"scatter-{key[:24]}.npy" if self.cache_dir else None
        if path is not None and path.is_file():
            try:
                stored = np.load(path, mmap_mode="r")
                if stored.shape == (len(x), feature_dim(self.image_shape)):
                    return torch.from_numpy(np.array(stored))
            except (OSError, ValueError):
                pass  # a damaged entry is recomputed and rewritten
        with torch.no_grad():
            out = torch.cat([self.transform(x[i : i + self.batch]) for i in range(0, len(x), self.batch)])
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.npy")
            np.save(tmp, out.numpy())
            os.replace(tmp, path)
        return out
