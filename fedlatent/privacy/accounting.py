"""Privacy accounting: the ε of Gaussian events, composed by Opacus' accountants, and noise calibration.

What: ``compose_epsilon`` gives the ε of any history of (Poisson-subsampled) Gaussian events
with Opacus' RDP or PRV accountant; ``calibrate_noise_multiplier`` finds the noise multiplier
that makes a planned run cost a target ε. The per-client ``Ledger`` (``ledger.py``) keeps the
history; the mechanisms themselves are in ``mechanisms.py`` and ``dp_sgd.py``.

Why here: every ε in a result file is computed from these functions and nowhere else, with
library accountants rather than hand formulas, so what ε means can be audited in one place
(see "What ε means" in ARCHITECTURE.md). Nothing in ``privacy/`` knows about Flower.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from opacus.accountants import create_accountant
from opacus.accountants.analysis.rdp import compute_rdp

from fedlatent.privacy.skellam import ORDERS, SkellamRound, curve_epsilon, rdp_curve

ACCOUNTANTS = ("rdp", "prv")
_MAX_SIGMA = 1e6
_SEARCH_STEPS = 100


def check_accounting(*, delta: float, accountant: str) -> None:
    """Raise ValueError unless δ is in (0, 1) and ``accountant`` is one Opacus provides here."""
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
    check_accounting(delta=delta, accountant=accountant)
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


def combined_epsilon(history: Sequence[tuple[float, float, int]], skellam: Sequence[SkellamRound], *,
                     delta: float) -> float:  # fmt: skip
    """ε of Gaussian events (Opacus' RDP of the sampled Gaussian) and Skellam rounds composed in RDP.

    RDP adds up under composition, order by order, whatever the mechanisms; the curve is
    converted once (Opacus' ``get_privacy_spent``). Used when a ledger holds distributed-DP rounds.
    """
    curve = rdp_curve(skellam, ORDERS)
    for sigma, q, steps in history:
        if q and steps:
            if sigma == 0.0:
                return math.inf
            curve = curve + compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=list(ORDERS))
    return curve_epsilon(curve, ORDERS, delta=delta)


def dp_sgd_epsilon(
    *, noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str = "rdp"
) -> float:
    """ε after ``steps`` DP-SGD steps with Poisson sampling rate ``sample_rate``.

    Neighbours differ by adding or removing one record (Opacus' relation). ``steps=0`` gives
    0.0, ``noise_multiplier=0`` gives ``inf``.
    """
    return compose_epsilon([(noise_multiplier, sample_rate, steps)], delta=delta, accountant=accountant)


@functools.lru_cache(maxsize=1024)  # keyed by every argument: a pure search, asked again on every DP message
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
    Raises ``ValueError`` for invalid arguments or a target needing σ > 1e6. Memoized: a
    search costs 0.2-2.5 s of accountant calls, and a client (whose process Ray or a warm
    SuperNode reuses) plans the same round again for every DP message.
    """
    if not (target_epsilon > 0 and 0 < sample_rate <= 1 and steps >= 1 and 0 < tolerance < 1):
        raise ValueError(
            "need target_epsilon > 0, sample_rate in (0, 1], steps >= 1 and tolerance in (0, 1); got "
            f"{target_epsilon}, {sample_rate}, {steps}, {tolerance}"
        )
    check_accounting(delta=delta, accountant=accountant)

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
