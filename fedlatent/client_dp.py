"""What a client does under record-level DP: plan the noise, refuse or train, and account.

The noise multiplier is calibrated up front, for every round the run plans (``rounds`` rounds
of ``local-epochs`` each at the client's own Poisson sampling rate), so that a client taking
part in all of them spends at most its budget. Each client's ``Ledger`` lives in its
``context.state`` and composes every round it actually trained; before a round it checks
that the round fits the remaining budget and otherwise refuses, so it never overspends
(e.g. when a server asks for more rounds than were planned).

``latent-share`` uses the same ledger for its one release: a Gaussian mechanism on clipped
latents (noise multiplier ``std / (2 C)`` at sampling rate 1, one step).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from flwr.app import ConfigRecord, RecordDict
from torch import nn

from .config import RunConfig
from .dp_sgd import dp_fit, dp_steps
from .payloads import PHASE_CLASSIFIER, PHASE_ENCODER
from .privacy import (
    Ledger,
    calibrate_noise_multiplier,
    gaussian_release,
    latent_noise_std,
    randomized_response,
)
from .training import classification_losses, reconstruction_record_losses

LEDGER_STATE = "dp-ledger"


@dataclass(frozen=True)
class DPPlan:
    """The noise and step count of one client's DP-SGD round."""

    noise_multiplier: float
    sample_rate: float
    steps: int


def load_ledger(state: RecordDict, cfg: RunConfig) -> Ledger:
    """The client's ledger from its persistent state (a fresh one on first use)."""
    if LEDGER_STATE in state.config_records:
        return Ledger.from_config(state.config_records[LEDGER_STATE])
    return Ledger(budget=cfg.epsilon, delta=cfg.delta, accountant=cfg.accountant)


def save_ledger(state: RecordDict, ledger: Ledger) -> None:
    """Persist the ledger in the client's state (survives process restarts)."""
    state[LEDGER_STATE] = ConfigRecord(ledger.to_config())  # type: ignore[arg-type]


def plan_round(cfg: RunConfig, num_records: int, *, phase: str = PHASE_CLASSIFIER) -> DPPlan:
    """Noise calibrated so that all planned rounds of ``phase`` together cost its share of ``epsilon``.

    The encoder phase (a DP federated encoder) gets ``encoder-epsilon`` over ``encoder-rounds``
    rounds of ``ae-epochs``; the classifier gets the rest of ``epsilon`` over ``rounds`` rounds
    of ``local-epochs``. The ledger composes both with the accountant, which is never more
    than the sum of the parts, so the split cannot overspend.
    """
    if cfg.delta >= 1.0 / num_records:
        raise ValueError(f"delta={cfg.delta} is not below 1/n = {1 / num_records:.2e} for this client's data")
    encoder = phase == PHASE_ENCODER
    rate = min(1.0, cfg.batch_size / num_records)
    steps = dp_steps(epochs=cfg.ae_epochs if encoder else cfg.local_epochs, sample_rate=rate)
    z = calibrate_noise_multiplier(
        target_epsilon=cfg.encoder_epsilon if encoder else cfg.classifier_epsilon,
        delta=cfg.delta,
        sample_rate=rate,
        steps=steps * (cfg.encoder_rounds if encoder else cfg.rounds),
        accountant=cfg.accountant,
    )
    return DPPlan(noise_multiplier=z, sample_rate=rate, steps=steps)


def train_round(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    cfg: RunConfig,
    ledger: Ledger,
    generator: torch.Generator,
    phase: str = PHASE_CLASSIFIER,
) -> tuple[dict[str, float], bool]:
    """One DP-SGD round of ``phase`` if the budget allows; return ``(metrics, trained)``.

    ``phase`` is the classifier (``model`` a classifier, cross-entropy on ``y``) or the
    encoder (``model`` the autoencoder, reconstruction of ``x``). The metrics carry no
    training loss: it is computed on private records without noise.
    """
    plan = plan_round(cfg, len(x), phase=phase)
    if not ledger.can_afford(noise_multiplier=plan.noise_multiplier, sample_rate=plan.sample_rate, steps=plan.steps):
        return {"refused": 1, "epsilon-spent": ledger.spent()}, False
    _, steps, rate = dp_fit(
        model,
        x,
        y,
        record_loss_fn=reconstruction_record_losses if phase == PHASE_ENCODER else classification_losses,
        epochs=cfg.ae_epochs if phase == PHASE_ENCODER else cfg.local_epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=cfg.max_grad_norm,
        generator=generator,
    )
    spent = ledger.record(noise_multiplier=plan.noise_multiplier, sample_rate=rate, steps=steps)
    return {"epsilon-spent": spent, "noise-multiplier": plan.noise_multiplier}, True


def release_noise_std(cfg: RunConfig) -> float:
    """Per-coordinate std of the latent release: a public setting, the server's learner uses it."""
    return latent_noise_std(
        epsilon=cfg.classifier_epsilon, delta=cfg.delta, clip=cfg.latent_clip, accountant=cfg.accountant
    )


def release_latents(
    latents: torch.Tensor,
    labels: torch.Tensor,
    *,
    cfg: RunConfig,
    num_classes: int,
    ledger: Ledger,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]] | None:
    """Clip + Gaussian noise on latents, randomized response on labels; None if over budget."""
    std = release_noise_std(cfg)
    z = std / (2 * cfg.latent_clip)  # noise in units of the replacement sensitivity 2C
    if not ledger.can_afford(noise_multiplier=z, sample_rate=1.0, steps=1):
        return None
    noisy = gaussian_release(latents, clip=cfg.latent_clip, std=std, generator=generator)
    if cfg.label_epsilon != float("inf"):
        labels = randomized_response(labels, epsilon=cfg.label_epsilon, num_classes=num_classes, generator=generator)
    spent = ledger.record(noise_multiplier=z, sample_rate=1.0, steps=1)
    label_eps = cfg.label_epsilon if cfg.label_epsilon != float("inf") else 0.0
    return (
        noisy,
        labels,
        {"epsilon-spent": spent + label_eps, "noise-std": std, "noise-multiplier": z},
    )
