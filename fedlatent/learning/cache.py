"""An explicit on-disk cache of trained modules, keyed on everything that determines them.

``fedlatent compare`` runs the same public autoencoder in every mode: same public records,
same seed, same settings, hence bit-for-bit the same weights. Training it once per compare
(or sweep) instead of once per run halves the wall time on Fashion-MNIST. The key holds the
training settings and a digest of the training data itself, so a changed data file or
setting can never be served stale weights; a stored entry repeats its key and is checked.
Nothing is cached unless the run names a ``cache-dir``.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


def data_digest(*arrays: np.ndarray) -> str:
    """SHA-256 of the arrays' shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def cached_training(
    root: str | Path | None, *, name: str, key: Mapping[str, Any], module: nn.Module, train: Callable[[], float]
) -> tuple[float, bool]:
    """Load ``module``'s weights for ``key`` from ``root``, or ``train()`` it and store them.

    Returns
    -------
    (loss, hit)
        The training loss (as stored on a hit) and whether the cache served the weights.
    """
    if not root:
        return train(), False
    blob = json.dumps(dict(key), sort_keys=True, default=str)
    path = Path(root) / f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:20]}.pt"
    if path.is_file():
        entry = torch.load(path, weights_only=True)
        if entry.get("key") == blob:  # a hash collision or a foreign file is never served
            module.load_state_dict(entry["state"])
            return float(entry["loss"]), True
    loss = train()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{uuid.uuid4().hex}")  # unique across processes and machines (a shared cache)
    torch.save({"key": blob, "state": module.state_dict(), "loss": loss}, tmp)
    os.replace(tmp, path)  # atomic: a concurrent run reads the old state or the whole new one
    return loss, False
