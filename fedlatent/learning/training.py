"""Pure training and evaluation functions: (model, data, settings, generator) -> numbers.

Nothing here knows about Flower, clients or privacy. The apps call these functions; DP-SGD
(``dp_sgd.dp_fit``) has its own loop and takes the per-record losses defined here.
Randomness comes only from the ``torch.Generator`` passed in, so runs are reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from fedlatent.learning.models import Autoencoder

OPTIMIZERS = ("adam", "sgd")

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
OnEpoch = Callable[..., None]
"""Called as ``on_epoch(epoch, loss=mean_loss)`` after each epoch (e.g. a ``progress.Progress``)."""


def classification_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``model(x)`` against integer labels ``y``."""
    return nn.functional.cross_entropy(model(x), y)


def reconstruction_loss(model: nn.Module, x: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the reconstruction against the input (images in [0, 1])."""
    return nn.functional.binary_cross_entropy(model(x), x)


def classification_losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each record, shape ``(len(x),)``: what DP-SGD clips record by record."""
    return nn.functional.cross_entropy(model(x), y, reduction="none")


def reconstruction_record_losses(model: nn.Module, x: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy summed over each record's pixels, shape ``(len(x),)``.

    Same minimum as ``reconstruction_loss``, but a record's gradient is not divided by the
    pixel count: under DP-SGD that division would shrink the signal far below the clipping
    norm, and so below the noise.
    """
    per_pixel = nn.functional.binary_cross_entropy(model(x), x, reduction="none")
    return per_pixel.flatten(1).sum(1)


class Batches:
    """Shuffled minibatches of in-memory tensors, reshuffled on every pass.

    A DataLoader over a TensorDataset indexes and collates one record at a time, which
    dominates the run time of the small models here; slicing by a permutation does not.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, batch_size: int, generator: torch.Generator) -> None:
        self.x, self.y, self.batch_size, self.generator = x, y, batch_size, generator

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.x), generator=self.generator)
        for idx in order.split(self.batch_size):
            yield self.x[idx], self.y[idx]

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)


def make_loader(x: torch.Tensor, y: torch.Tensor, *, batch_size: int, generator: torch.Generator) -> Batches:
    """Shuffled minibatches of ``(x, y)`` whose order is fixed by ``generator``."""
    return Batches(x, y, batch_size=batch_size, generator=generator)


def fit(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    loss_fn: LossFn,
    on_epoch: OnEpoch | None = None,
) -> float:
    """Train in place for ``epochs``; return the mean loss of the last epoch.

    ``on_epoch(epoch, loss=...)`` is called after every epoch when given.

    Raises
    ------
    FloatingPointError
        If the loss becomes NaN or infinite (diverged training must not be sent on).
    """
    model.train()
    mean = float("nan")
    for epoch in range(epochs):
        total, count = 0.0, 0
        for x, y in loader:
            if len(x) == 0:  # Poisson sampling can draw an empty batch
                continue
            optimizer.zero_grad()
            loss = loss_fn(model, x, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()}")
            loss.backward()
            optimizer.step()
            total += loss.item() * len(x)
            count += len(x)
        mean = total / max(count, 1)
        if on_epoch is not None:
            on_epoch(epoch + 1, loss=mean)
    return mean


def make_optimizer(params: list[nn.Parameter], *, kind: str, lr: float, momentum: float) -> torch.optim.Optimizer:
    """Adam, or SGD with ``momentum`` (the DP-SGD literature's choice, e.g. Tramèr & Boneh 2021)."""
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    raise ValueError(f"unknown optimizer {kind!r}; choose one of {OPTIMIZERS}")


def train_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    on_epoch: OnEpoch | None = None,
    optimizer: str = "adam",
    momentum: float = 0.0,
) -> float:
    """Train a classifier (image or latent) with cross-entropy and Adam (or SGD with ``momentum``)."""
    loader = make_loader(x, y, batch_size=batch_size, generator=generator)
    step = make_optimizer(list(model.parameters()), kind=optimizer, lr=lr, momentum=momentum)
    return fit(model, loader, step, epochs=epochs, loss_fn=classification_loss, on_epoch=on_epoch)


def train_autoencoder(
    model: Autoencoder,
    x: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    on_epoch: OnEpoch | None = None,
) -> float:
    """Train an autoencoder on reconstruction; labels are never used."""
    loader = make_loader(x, torch.zeros(len(x), dtype=torch.long), batch_size=batch_size, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    return fit(model, loader, optimizer, epochs=epochs, loss_fn=reconstruction_loss, on_epoch=on_epoch)


class _WithHead(nn.Module):
    """An autoencoder plus a linear head on its latent, for ``train_hybrid_autoencoder``."""

    def __init__(self, ae: Autoencoder, num_classes: int, label_weight: float) -> None:
        super().__init__()
        self.ae, self.label_weight = ae, label_weight
        latent_dim = ae.encoder(torch.zeros(1, *ae.image_shape)).shape[1]
        self.head = nn.Linear(latent_dim, num_classes)

    def loss(self, _: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = self.ae.encoder(x)
        recon = nn.functional.binary_cross_entropy(self.ae.decoder(z), x)
        return recon + self.label_weight * nn.functional.cross_entropy(self.head(z), y)


def train_hybrid_autoencoder(
    model: Autoencoder,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int,
    label_weight: float,
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    on_epoch: OnEpoch | None = None,
) -> float:
    """Train an autoencoder on reconstruction plus ``label_weight`` x cross-entropy of a linear head.

    For the *public* split only, whose labels cost no privacy: the latent then keeps what
    separates the classes, not just what redraws the pixels. The head is discarded with the
    decoder; the mean combined loss of the last epoch is returned.
    """
    hybrid = _WithHead(model, num_classes, label_weight)
    loader = make_loader(x, y, batch_size=batch_size, generator=generator)
    optimizer = torch.optim.Adam(hybrid.parameters(), lr=lr)
    return fit(hybrid, loader, optimizer, epochs=epochs, loss_fn=hybrid.loss, on_epoch=on_epoch)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 2048) -> tuple[float, float]:
    """Return ``(mean cross-entropy, accuracy)`` of a classifier on ``(x, y)``."""
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size])
        target = y[i : i + batch_size]
        loss += nn.functional.cross_entropy(logits, target, reduction="sum").item()
        correct += int((logits.argmax(1) == target).sum())
    n = max(len(x), 1)
    return loss / n, correct / n


@torch.no_grad()
def encode(encoder: nn.Module, x: torch.Tensor, *, batch_size: int = 2048) -> torch.Tensor:
    """Latents of ``x`` under a frozen encoder (no gradients, eval mode)."""
    encoder.eval()
    if len(x) == 0:
        return torch.empty(0)
    return torch.cat([encoder(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
