"""What a client does under record-level DP: plan the noise, refuse or train, and account.

The noise multiplier is calibrated up front, for every round the run plans (``rounds`` rounds
of ``epochs`` each at the client's own Poisson sampling rate), so that a client taking part
in all of them spends at most its share of the budget. The client's ``Ledger`` composes every
round it actually trained; before a round it checks that the round fits the remaining budget
and otherwise refuses, so it never overspends (e.g. when a server asks for more rounds than
were planned).

``latent-share`` uses the same ledger for its one release: a Gaussian mechanism on clipped
latents (noise multiplier ``std / (2 C)`` at sampling rate 1, one step) and, with a finite
label ε, randomized response on the labels, recorded in the same event.

Nothing here knows the run config or Flower: the privacy settings come as keyword arguments
(``fedlatent.plan`` derives them from a ``RunConfig``) and the apps persist the ledger.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from fedlatent.privacy.accounting import calibrate_noise_multiplier
from fedlatent.privacy.dp_sgd import RecordLossFn, dp_fit, dp_steps
from fedlatent.privacy.ledger import Ledger
from fedlatent.privacy.mechanisms import gaussian_release, randomized_response


@dataclass(frozen=True)
class DPPlan:
    """The noise and length of one client's DP-SGD round."""

    noise_multiplier: float
    sample_rate: float
    steps: int
    epochs: int


def plan_round(
    num_records: int, *, epsilon: float, delta: float, accountant: str, batch_size: int, epochs: int, rounds: int
) -> DPPlan:
    """Noise calibrated so that ``rounds`` rounds of ``epochs`` epochs together cost ``epsilon``.

    Raises
    ------
    ValueError
        If ``delta`` is not below ``1 / num_records`` (a δ that large is no guarantee), or the
        target is unreachable.
    """
    if delta >= 1.0 / num_records:
        raise ValueError(f"delta={delta} is not below 1/n = {1 / num_records:.2e} for this client's data")
    rate = min(1.0, batch_size / num_records)
    steps = dp_steps(epochs=epochs, sample_rate=rate)
    z = calibrate_noise_multiplier(
        target_epsilon=epsilon, delta=delta, sample_rate=rate, steps=steps * rounds, accountant=accountant
    )
    return DPPlan(noise_multiplier=z, sample_rate=rate, steps=steps, epochs=epochs)


def train_round(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    plan: DPPlan,
    ledger: Ledger,
    record_loss_fn: RecordLossFn,
    batch_size: int,
    lr: float,
    max_grad_norm: float,
    generator: torch.Generator,
    optimizer: str = "adam",
    momentum: float = 0.0,
) -> tuple[dict[str, float], bool]:
    """One DP-SGD round as ``plan`` says if the budget allows; return ``(metrics, trained)``.

    ``optimizer`` and ``momentum`` choose ``dp_fit``'s base optimizer.

    The metrics carry no training loss: it is computed on private records without noise.
    """
    if not ledger.can_afford(noise_multiplier=plan.noise_multiplier, sample_rate=plan.sample_rate, steps=plan.steps):
        return {"refused": 1, "epsilon-spent": ledger.spent()}, False
    _, steps, rate = dp_fit(
        model,
        x,
        y,
        record_loss_fn=record_loss_fn,
        epochs=plan.epochs,
        batch_size=batch_size,
        lr=lr,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=max_grad_norm,
        generator=generator,
        optimizer=optimizer,
        momentum=momentum,
    )
    spent = ledger.record(noise_multiplier=plan.noise_multiplier, sample_rate=rate, steps=steps)
    return {"epsilon-spent": spent, "noise-multiplier": plan.noise_multiplier}, True


def release_latents(
    latents: torch.Tensor,
    labels: torch.Tensor,
    *,
    clip: float,
    noise_std: float,
    label_epsilon: float,
    num_classes: int,
    ledger: Ledger,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]] | None:
    """Clip + Gaussian noise on latents, randomized response on labels; None if over budget.

    Both are one ledger event: the Gaussian release (noise multiplier ``noise_std / (2 clip)``)
    with the labels' pure ε (0 when ``label_epsilon`` is inf: labels in clear).
    """
    z = noise_std / (2 * clip)  # noise in units of the replacement sensitivity 2C
    label_eps = 0.0 if math.isinf(label_epsilon) else label_epsilon
    if not ledger.can_afford(noise_multiplier=z, sample_rate=1.0, steps=1, pure_epsilon=label_eps):
        return None
    noisy = gaussian_release(latents, clip=clip, std=noise_std, generator=generator)
    if label_eps:
        labels = randomized_response(labels, epsilon=label_epsilon, num_classes=num_classes, generator=generator)
    spent = ledger.record(noise_multiplier=z, sample_rate=1.0, steps=1, pure_epsilon=label_eps)
    return noisy, labels, {"epsilon-spent": spent, "noise-std": noise_std, "noise-multiplier": z}
