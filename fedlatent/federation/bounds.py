"""Ranges the server checks before it uses a number a client sent: updates and latents.

What: ``update_bounds`` gives, for one partition and phase, the largest update (weights received
minus weights sent) an honest client can send: per coordinate (L∞) under DP, from what the server
knows of the round; in L2 without DP (``max-update-norm``). ``latent_bound`` gives the largest
coordinate of a released latent: under DP the clip plus 12 noise standard deviations; without
DP, ``LATENT_MARGIN`` times the largest coordinate the server's encoder gives on the public
split; none for a ``local`` encoder the server never sees (the server's learner then drops a
client whose latents make its fit diverge, ``phases.share_phase``).

Why these bounds (issue 25: finite but absurd replies, latents at float32's maximum, aborted
the run): an honest DP-SGD round moves each weight by a bounded amount whatever the data.

- Adam: the step of a coordinate is ``lr * m_hat / (sqrt(v_hat) + eps)``. By Cauchy–Schwarz,
  ``|m| <= (1 - b1) / sqrt(1 - b2) * sqrt(sum (b1^2 / b2)^j) * sqrt(v)``, which with (0.9, 0.999)
  is ``<= 7.27 sqrt(v)``; the bias corrections multiply it by ``sqrt(1 - b2^t) / (1 - b1^t) <= 1``.
  So a round of ``steps`` steps moves a coordinate by at most ``ADAM_STEP * lr * steps``.
- SGD with momentum m: a noisy gradient coordinate is ``(clipped sum + N(0, (zC)^2)) / (qn)``,
  at most ``C (B_max + 12 z) / (qn)`` with ``B_max = qn + 12 sqrt(qn) + 12`` records in a Poisson
  batch (a Chernoff tail below 1e-20); momentum multiplies by at most ``1 / (1 - m)``.

The 12σ tails are where an honest reply could in principle fail: with probability below 1e-30
per coordinate, never seen in practice, and the reply would only be left out of one round.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fedlatent.config import RunConfig
from fedlatent.learning.models import Encoder
from fedlatent.learning.training import encode
from fedlatent.plan import dp_round_plan, release_noise_std, share_clip

ADAM_STEP = 7.3  # largest |m_hat / sqrt(v_hat)| of Adam (0.9, 0.999), see the module docstring
TAIL = 12.0  # standard deviations of Gaussian noise (and of a Poisson batch) an honest value stays within
LATENT_MARGIN = 10.0  # non-DP latents: this many times the largest public coordinate


def update_bounds(cfg: RunConfig, num_records: int, *, encoder: bool) -> tuple[float, float]:
    """``(L∞, L2)`` bounds of one honest round's update of a partition of ``num_records``.

    Under DP the L∞ bound follows from the round's plan (module docstring) and L2 is not bounded
    beyond it; without DP only ``max-update-norm`` (L2) applies.
    """
    dp = cfg.encoder_dp if encoder else cfg.dp and cfg.mode != "latent-share"
    if not dp or cfg.dp_mode != "local":
        return math.inf, cfg.max_update_norm
    plan = dp_round_plan(cfg, num_records, encoder=encoder)
    if encoder or cfg.optimizer == "adam":
        return ADAM_STEP * cfg.lr * plan.steps, math.inf
    expected = plan.sample_rate * num_records
    largest = expected + TAIL * math.sqrt(expected) + TAIL
    grad = cfg.max_grad_norm * (largest + TAIL * plan.noise_multiplier) / expected
    return plan.steps * cfg.lr * grad / (1.0 - cfg.momentum), math.inf


def latent_bound(cfg: RunConfig, encoder: Encoder | None, public_x: torch.Tensor) -> float:
    """The largest |coordinate| of an honest released latent (inf when nothing bounds it)."""
    if cfg.dp and cfg.dp_mode == "local":
        return share_clip(cfg) + TAIL * release_noise_std(cfg)
    if encoder is None:
        return math.inf
    largest = float(np.abs(encode(encoder, public_x).numpy()).max())
    return LATENT_MARGIN * max(largest, 1e-6)
