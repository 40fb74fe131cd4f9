"""DP-SGD local training: Poisson-sampled minibatches, per-record clipping, Gaussian noise.

What: ``dp_fit`` trains a model in place with DP-SGD and returns the step count and sampling
rate for the client's ``privacy.Ledger``. The privacy math (accountants, calibration) is in
``accounting.py``; this module only carries out the mechanism those numbers describe.

Each step takes the clipped sum of the sampled records' gradients from ``clipping.METHODS``
(exact, three ways; the fastest for the model by default), adds N(0, (sigma C)^2) per coordinate
from the step's secret generator, divides by the expected batch size and hands the result to
the base optimizer (Adam, or SGD with momentum: either only post-processes the privatized
gradient). One noise path for every clipping method keeps the mechanism in one place.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from fedlatent.learning.training import make_optimizer
from fedlatent.privacy.clipping import METHODS, RecordLossFn, method_for

__all__ = ["PoissonBatches", "RecordLossFn", "dp_fit", "dp_steps", "set_noisy_grads"]


class PoissonBatches:
    """``steps`` minibatches, each holding every record independently with probability ``sample_rate``.

    This is the sampling the accountants assume; batch sizes vary and may be zero.
    """

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, *, sample_rate: float, steps: int, generator: torch.Generator
    ) -> None:
        if not (0 < sample_rate <= 1 and steps >= 0 and len(x) == len(y)):
            raise ValueError(f"need sample_rate in (0, 1], steps >= 0, len(x) == len(y); got {sample_rate}, {steps}")
        self.x, self.y, self.sample_rate, self.steps, self.generator = x, y, sample_rate, steps, generator

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(self.steps):
            mask = torch.rand(len(self.x), generator=self.generator) < self.sample_rate
            yield self.x[mask], self.y[mask]

    def __len__(self) -> int:
        return self.steps


def dp_steps(*, epochs: float, sample_rate: float) -> int:
    """Number of DP-SGD steps ``dp_fit`` takes: ``ceil(epochs / sample_rate)``."""
    if epochs < 0 or not 0.0 < sample_rate <= 1.0:
        raise ValueError(f"need epochs >= 0 and sample_rate in (0, 1], got {epochs}, {sample_rate}")
    return math.ceil(epochs / sample_rate - 1e-9)


def set_noisy_grads(
    params: Sequence[torch.Tensor],
    sums: Sequence[torch.Tensor],
    *,
    std: float,
    expected: float,
    buffer: torch.Tensor,
    generator: torch.Generator | None,
) -> None:
    """``p.grad = (clipped sum + N(0, std²)) / expected`` for every parameter: one Gaussian draw into ``buffer``.

    ``buffer`` holds one float per coordinate of ``params`` (reused across steps); one draw for all
    of them is a fifth cheaper than one per tensor, and a step's noise costs as much as a plain
    step of a small model at batch 32 (``fedlatent bench --parts dp-step``).
    """
    if std:
        buffer.normal_(0.0, std, generator=generator)
    for p, total, z in zip(params, sums, buffer.split([p.numel() for p in params]), strict=True):
        p.grad = (total + z.view_as(p)) / expected


def dp_fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    record_loss_fn: RecordLossFn,
    epochs: float,
    batch_size: int,
    lr: float,
    noise_multiplier: float,
    max_grad_norm: float,
    generator: torch.Generator,
    optimizer: str = "adam",
    momentum: float = 0.0,
    method: str | None = None,
) -> tuple[float, int, float]:
    """Train ``model`` in place with DP-SGD; return ``(mean loss, steps, sample_rate)``.

    Each step sums the gradients of the sampled records' losses (``record_loss_fn``), each
    clipped to L2 norm ``max_grad_norm``, adds N(0, (noise_multiplier · max_grad_norm)²) noise
    from a generator seeded by ``generator`` (which also draws the batches: for a guarantee it
    must be secret, ``plan.noise_generator``; not Opacus' ``secure_mode``) and
    divides by the expected batch size. ``optimizer`` (``adam``, or ``sgd`` with ``momentum``)
    then steps on it; ``method`` names the clipping of ``clipping.METHODS`` (default: the
    fastest for ``model`` at ``batch_size``, ``clipping.method_for``). Batches are Poisson samples at
    ``sample_rate = min(1, batch_size / len(x))``, ``dp_steps(...)`` of them: give both to
    ``Ledger.record``. The mean loss is record-weighted over the last epoch's steps.

    An empty batch takes a step of pure noise: the accountant counts every step, and a
    skipped one would reveal that nobody was sampled. ``model`` holds the trained weights
    afterwards and carries no hook or gradient.

    Raises
    ------
    FloatingPointError
        If the loss becomes NaN or infinite.
    """
    if len(x) == 0:
        raise ValueError("dp_fit needs at least one record")
    sample_rate = min(1.0, batch_size / len(x))
    steps = dp_steps(epochs=epochs, sample_rate=sample_rate)
    noise_gen = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
    loader = PoissonBatches(x, y, sample_rate=sample_rate, steps=steps, generator=generator)
    params = [p for p in model.parameters() if p.requires_grad]
    step = make_optimizer(params, kind=optimizer, lr=lr, momentum=momentum)
    std, expected = noise_multiplier * max_grad_norm, min(batch_size, len(x))
    last_epoch = min(steps, math.ceil(1 / sample_rate - 1e-9))
    noise = torch.zeros(sum(p.numel() for p in params))
    totals: list[tuple[float, int]] = []
    model.train()
    try:
        with METHODS[method or method_for(model, batch_size)](model, record_loss_fn, max_grad_norm) as clip:
            for xb, yb in loader:
                if len(xb):
                    sums, losses = clip(xb, yb)
                    if not torch.isfinite(losses).all():
                        raise FloatingPointError(f"training loss became {losses.mean().item()}")
                    totals.append((losses.sum().item(), len(xb)))
                else:
                    sums = [torch.zeros_like(p) for p in params]
                    totals.append((0.0, 0))
                set_noisy_grads(params, sums, std=std, expected=expected, buffer=noise, generator=noise_gen)
                step.step()
    finally:
        for p in model.parameters():
            p.grad = None
    count = sum(n for _, n in totals[len(totals) - last_epoch :])
    mean = sum(s for s, _ in totals[len(totals) - last_epoch :]) / count if count else float("nan")
    return mean, steps, sample_rate
