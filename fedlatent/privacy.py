"""Differential-privacy math and bookkeeping of fedlatent: accountants, budgets, mechanisms.

What: the ε of DP-SGD runs (Opacus' RDP or PRV accountant), noise calibration for a target
ε, a per-client ``Ledger`` that persists across Flower rounds and refuses to overspend, the
Gaussian mechanism for releasing clipped latents and k-ary randomized response for labels.
The DP-SGD training loop itself is in ``dp_sgd.py``.

Why here: every privacy claim in a result file is computed by this module and nowhere else,
with library accountants rather than hand formulas, so what ε means can be audited in one
place (see "What ε means" in ARCHITECTURE.md). Nothing here knows about Flower; state lives
in plain values (``Ledger.to_config``) that the apps persist.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from opacus.accountants import create_accountant

ACCOUNTANTS = ("rdp", "prv")
_MAX_SIGMA = 1e6
_SEARCH_STEPS = 100


class BudgetExhausted(RuntimeError):
    """A step would make a client's ε exceed its budget; the step was not taken."""


def _check_accounting(*, delta: float, accountant: str) -> None:
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")


def compose_epsilon(history: Sequence[tuple[float, float, int]], *, delta: float, accountant: str = "rdp") -> float:
    """ε of Poisson-subsampled Gaussian events composed by an Opacus accountant.

    Parameters
    ----------
    history : sequence of (noise_multiplier, sample_rate, steps)
        Events, possibly all different. Those sharing noise multiplier and sample rate are
        merged (composition commutes): no change for RDP, self-convolution for PRV.
    delta : float
        Target δ in (0, 1).
    accountant : {"rdp", "prv"}
        Opacus' ``RDPAccountant`` or ``PRVAccountant`` (whose ε is an upper bound).

    Returns
    -------
    float
        ε: 0.0 if no event touches data, ``inf`` if such an event has no noise.
    """
    _check_accounting(delta=delta, accountant=accountant)
    merged: dict[tuple[float, float], int] = {}
    for sigma, q, steps in history:
        sigma, q, steps = float(sigma), float(q), int(steps)
        if sigma < 0 or not 0.0 <= q <= 1.0 or steps < 0:
            raise ValueError(f"invalid event (noise_multiplier={sigma}, sample_rate={q}, steps={steps})")
        if q == 0.0 or steps == 0:
            continue  # no record can be touched: no privacy cost
        if sigma == 0.0:
            return math.inf
        merged[(sigma, q)] = merged.get((sigma, q), 0) + steps
    if not merged:
        return 0.0
    acc = create_accountant(mechanism=accountant)
    acc.history = [(sigma, q, steps) for (sigma, q), steps in merged.items()]
    # PRV evaluates log(1 - q), which is -inf (harmlessly) for full-batch events (q = 1).
    with np.errstate(divide="ignore"):
        return float(acc.get_epsilon(delta=delta))


def dp_sgd_epsilon(
    *, noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str = "rdp"
) -> float:
    """ε after ``steps`` DP-SGD steps with Poisson sampling rate ``sample_rate``.

    Neighbours differ by adding or removing one record (Opacus' relation). ``steps=0`` gives
    0.0, ``noise_multiplier=0`` gives ``inf``.
    """
    return compose_epsilon([(noise_multiplier, sample_rate, steps)], delta=delta, accountant=accountant)


def calibrate_noise_multiplier(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "rdp",
    tolerance: float = 0.01,
) -> float:
    """Noise multiplier whose ε is at most ``target_epsilon`` and at least ``(1 - tolerance)`` of it.

    A bracketing search on the accountant's ε, which falls as σ grows. Opacus'
    ``get_noise_multiplier`` stops at an *absolute* ε tolerance, too coarse for small targets,
    and bisects linearly (many slow accountant calls), hence this loop. The σ returned always
    has ε(σ) ≤ target; were ε too jumpy to land in the window, the last such σ is returned.
    Raises ``ValueError`` for invalid arguments or a target needing σ > 1e6.
    """
    if not (target_epsilon > 0 and 0 < sample_rate <= 1 and steps >= 1 and 0 < tolerance < 1):
        raise ValueError(
            "need target_epsilon > 0, sample_rate in (0, 1], steps >= 1 and tolerance in (0, 1); got "
            f"{target_epsilon}, {sample_rate}, {steps}, {tolerance}"
        )
    _check_accounting(delta=delta, accountant=accountant)

    def eps(sigma: float) -> float:
        return dp_sgd_epsilon(
            noise_multiplier=sigma, sample_rate=sample_rate, steps=steps, delta=delta, accountant=accountant
        )

    # Bracket: eps(low) > target >= eps(high), by doubling or halving from sigma = 1.
    low = high = 1.0
    eps_low = eps_high = eps(1.0)
    while eps_high > target_epsilon:
        low, eps_low, high = high, eps_high, 2 * high
        if high > _MAX_SIGMA:
            raise ValueError(f"epsilon {target_epsilon} is unreachable with noise multiplier <= {_MAX_SIGMA:g}")
        eps_high = eps(high)
    while eps_low <= target_epsilon and low > 1 / _MAX_SIGMA:
        high, eps_high, low = low, eps_low, low / 2
        eps_low = eps(low)
    # Shrink it: ε is close to a power law in σ, so interpolate in log-log space, aiming at the
    # middle of the window; clamping the step to the inner 80% guarantees progress.
    aim = math.log((1 - tolerance / 2) * target_epsilon)
    for _ in range(_SEARCH_STEPS):
        if eps_high >= (1 - tolerance) * target_epsilon or eps_low <= target_epsilon:
            break
        log_low, log_high = math.log(eps_low), math.log(max(eps_high, 1e-300))
        t = 0.5 if math.isinf(log_low) else (log_low - aim) / (log_low - log_high)
        mid = math.exp(math.log(low) + min(max(t, 0.1), 0.9) * (math.log(high) - math.log(low)))
        eps_mid = eps(mid)
        if eps_mid <= target_epsilon:
            high, eps_high = mid, eps_mid
        else:
            low, eps_low = mid, eps_mid
    return high


@dataclass
class Ledger:
    """One client's accountant state, kept across Flower rounds; it never overspends.

    Attributes
    ----------
    budget : float
        Target ε for the whole run (``inf``: account, never refuse).
    delta, accountant : float, {"rdp", "prv"}
        Target δ and the accountant composing the history.
    history : list of (noise_multiplier, sample_rate, steps)
        Every DP-SGD event recorded so far (one per round taken part in).
    """

    budget: float
    delta: float
    accountant: str = "rdp"
    history: list[tuple[float, float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.budget > 0:
            raise ValueError(f"budget must be > 0, got {self.budget}")
        _check_accounting(delta=self.delta, accountant=self.accountant)
        self.history = [(float(s), float(q), int(n)) for s, q, n in self.history]

    def spent(self) -> float:
        """ε of everything recorded so far."""
        return compose_epsilon(self.history, delta=self.delta, accountant=self.accountant)

    def would_spend(self, *, noise_multiplier: float, sample_rate: float, steps: int) -> float:
        """ε after also recording the given event (nothing is recorded)."""
        event = (float(noise_multiplier), float(sample_rate), int(steps))
        return compose_epsilon([*self.history, event], delta=self.delta, accountant=self.accountant)

    def can_afford(self, *, noise_multiplier: float, sample_rate: float, steps: int) -> bool:
        """Whether the event keeps ε within the budget."""
        would = self.would_spend(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
        return would <= self.budget

    def record(self, *, noise_multiplier: float, sample_rate: float, steps: int) -> float:
        """Record an event and return the new ε spent; ``BudgetExhausted`` (nothing recorded) if over."""
        would = self.would_spend(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
        if not would <= self.budget:
            raise BudgetExhausted(
                f"privacy budget exhausted: spent epsilon={self.spent():.4g}, this step "
                f"(noise_multiplier={noise_multiplier:g}, sample_rate={sample_rate:g}, steps={steps}) "
                f"would make it {would:.4g} > budget {self.budget:.4g} (delta={self.delta:g})"
            )
        self.history.append((float(noise_multiplier), float(sample_rate), int(steps)))
        return would

    def to_config(self) -> dict[str, float | str | list[float] | list[int]]:
        """Flat values storable in a Flower ``ConfigRecord`` (no nesting)."""
        return {
            "budget": float(self.budget),
            "delta": float(self.delta),
            "accountant": self.accountant,
            "noise_multipliers": [s for s, _, _ in self.history],
            "sample_rates": [q for _, q, _ in self.history],
            "steps": [n for _, _, n in self.history],
        }

    @classmethod
    def from_config(cls, record: Mapping) -> Ledger:
        """Inverse of ``to_config``."""
        events = zip(record["noise_multipliers"], record["sample_rates"], record["steps"], strict=True)
        return cls(
            budget=float(record["budget"]),
            delta=float(record["delta"]),
            accountant=str(record["accountant"]),
            history=[(float(s), float(q), int(n)) for s, q, n in events],
        )


def clip_rows(x: torch.Tensor, *, max_norm: float) -> torch.Tensor:
    """Scale each row (first dimension) to L2 norm at most ``max_norm``; shorter rows are unchanged."""
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")
    norms = x.reshape(len(x), -1).norm(dim=1)
    factor = torch.where(norms > max_norm, max_norm / norms.clamp_min(torch.finfo(x.dtype).tiny), 1.0)
    return x * factor.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)


def latent_noise_std(*, epsilon: float, delta: float, clip: float, releases: int = 1, accountant: str = "rdp") -> float:
    """Std σ of the Gaussian noise, per coordinate, for releasing clipped latents ``releases`` times.

    Neighbours differ by the replacement of one record; old and new latent are clipped to
    L2 norm ``clip``, so the released matrix moves by at most ``2 * clip`` (L2 sensitivity).
    With ``sample_rate=1`` an Opacus accountant treats a step as the plain (not subsampled)
    Gaussian mechanism with sensitivity 1 and std ``z``; ``z`` is calibrated for ``releases``
    compositions (ε ≤ target within 1%) and scaled: ``σ = z · 2 · clip``. Unlike the classic
    ``sqrt(2 ln(1.25/δ)) / ε`` bound, valid only for ε < 1, this holds for any ε.
    """
    if not (clip > 0 and releases >= 1):
        raise ValueError(f"need clip > 0 and releases >= 1, got {clip}, {releases}")
    z = calibrate_noise_multiplier(
        target_epsilon=epsilon, delta=delta, sample_rate=1.0, steps=releases, accountant=accountant
    )
    return z * 2.0 * clip


def gaussian_release(latents: torch.Tensor, *, clip: float, std: float, generator: torch.Generator) -> torch.Tensor:
    """Clip each latent to L2 norm ``clip`` and add N(0, std²) noise to every coordinate."""
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std}")
    clipped = clip_rows(latents, max_norm=clip)
    noise = torch.randn(clipped.shape, generator=generator, dtype=clipped.dtype, device=clipped.device)
    return clipped + std * noise


def randomized_response(
    labels: torch.Tensor, *, epsilon: float, num_classes: int, generator: torch.Generator
) -> torch.Tensor:
    """k-ary randomized response: ε-DP (label only) for each record's label.

    The true label is kept with probability ``e^ε / (e^ε + k - 1)``; otherwise one of the
    ``k - 1`` other labels is drawn uniformly. ``epsilon=inf`` keeps every label.
    """
    if not (epsilon >= 0 and num_classes >= 2):
        raise ValueError(f"need epsilon >= 0 and num_classes >= 2, got {epsilon}, {num_classes}")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    if math.isinf(epsilon):
        return labels.clone()
    keep_prob = 1.0 / (1.0 + (num_classes - 1) * math.exp(-epsilon))
    keep = torch.rand(labels.shape, generator=generator) < keep_prob
    offset = torch.randint(1, num_classes, labels.shape, generator=generator)
    return torch.where(keep, labels, (labels + offset) % num_classes)
