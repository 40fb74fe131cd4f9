"""Distributed record-level DP-SGD: each client's share of one centralized DP-SGD step.

One round is one DP-SGD step over the union of the clients' records:

1. each client Poisson-samples its records at rate q (the same q everywhere: the expected
   batch of the union over its size),
2. sums the per-record gradients, each clipped to L2 norm C (per record: record-level DP),
3. scales the sum by s and rounds it stochastically to integers, ⌊s·g + U⌋,
4. adds its share of Skellam noise, variance μ / K_min,
5. the integers go through secure aggregation (``federation/secagg.py``): the server learns
   only the sum, whose noise is Skellam with variance μ·survivors / K_min ≥ μ — the noise of
   one centralized step with noise multiplier z = √μ / Δ₂ (Agarwal, Kairouz & Liu 2021).

The server divides the sum by s times the expected batch and steps its optimizer.

Why one step per round (DP-FedSGD) rather than several local steps (DP-FedAvg): the sum of
K clients' noisy clipped sums *is* a centralized DP-SGD step, so the centralized accounting
holds exactly; noise shares added inside several local steps interact with the local models
in a way no known accountant tracks tightly.

Why the client's sum is rounded once (not each record): for a fixed U, ⌊s·S + U⌋ moves by at
most s·C + √d in L2 (each coordinate by less than 1 beyond s·g) when one record is added or
removed; the mechanism is a mixture over U with the same weights on both neighbours, and Rényi
divergence is jointly quasi-convex, so the Skellam bound with Δ₂ = s·C + √d and
Δ₁ = min(Δ₂², √d·Δ₂) (an integer vector's L1 is at most its squared L2) holds for the mixture.
The scale s makes √d ≤ 1% of s·C, so rounding costs at most 1% more noise.

Nothing here knows Flower; ``skellam.py`` has the accounting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedlatent.privacy.skellam import SkellamRound, calibrate_skellam, skellam_epsilon

MODULUS_BITS = 32  # Flower's SecAgg+ masks live in [0, 2**32)
_ROUNDING_SHARE = 0.01  # √d at most this share of s·C
_TAIL = 8.0  # noise tails kept inside the range, in standard deviations


@dataclass(frozen=True)
class DistributedPlan:
    """The public settings of distributed DP-SGD: the server and the attacker recompute them.

    ``variance`` is the Skellam noise the sum of ``min_survivors`` shares carries (integer
    units); ``bound`` is the largest |value| a client's vector may hold, so that the sum of
    ``clients`` vectors shifted to [0, 2·bound] stays below the modulus.
    """

    clip: float
    scale: float
    dim: int
    sample_rate: float
    rounds: int
    clients: int
    min_survivors: int
    variance: float
    bound: int

    @property
    def l2(self) -> float:
        """L2 sensitivity of a client's integer vector to one record (rounding included)."""
        return self.scale * self.clip + math.sqrt(self.dim)

    @property
    def l1(self) -> float:
        """L1 sensitivity of the same vector: min(Δ₂², √d·Δ₂)."""
        return min(self.l2**2, math.sqrt(self.dim) * self.l2)

    @property
    def share_variance(self) -> float:
        """Variance of the Skellam noise one client adds."""
        return self.variance / self.min_survivors

    @property
    def noise_multiplier(self) -> float:
        """z of the centralized DP-SGD step that the sum of ``min_survivors`` shares equals."""
        return math.sqrt(self.variance) / self.l2

    def round_of(self, survivors: int) -> SkellamRound:
        """One round whose sum holds ``survivors`` noise shares."""
        return SkellamRound(self.l2, self.l1, self.share_variance * survivors, self.sample_rate, 1)

    def epsilon(self, survivors: Sequence[int], *, delta: float) -> float:
        """ε against the server after rounds with these survivor counts (SecAgg holding)."""
        return skellam_epsilon([self.round_of(n) for n in survivors if n > 0], delta=delta)

    def epsilon_local(self, rounds: int, *, delta: float) -> float:
        """ε of ``rounds`` of one client's vector seen alone (SecAgg broken): its own share only."""
        return skellam_epsilon([SkellamRound(self.l2, self.l1, self.share_variance, self.sample_rate, rounds)],
                               delta=delta)  # fmt: skip


def plan_distributed(
    *,
    epsilon: float,
    delta: float,
    clip: float,
    dim: int,
    sample_rate: float,
    rounds: int,
    clients: int,
    min_survivors: int,
    max_records: int,
) -> DistributedPlan:
    """Scale, noise and range for ``rounds`` rounds costing at most ``epsilon`` with ``min_survivors`` shares.

    ``max_records`` is the largest client's record count; its Poisson batch is bounded at six
    standard deviations above the mean, and the range must hold that batch's largest possible
    clipped sum plus eight noise standard deviations.

    Raises
    ------
    ValueError
        If the target is unreachable, or the 32-bit modulus cannot hold the clients' sums at a
        scale where rounding costs at most 10% more noise.
    """
    if not (0 < min_survivors <= clients and 0 < sample_rate <= 1 and dim >= 1 and clip > 0):
        raise ValueError(f"need 0 < min_survivors <= clients, sample_rate in (0, 1], dim >= 1, clip > 0; got "
                         f"{min_survivors}, {clients}, {sample_rate}, {dim}, {clip}")  # fmt: skip
    bound = (2**MODULUS_BITS - 1) // (2 * clients)
    mean = sample_rate * max_records
    batch = math.ceil(mean + 6 * math.sqrt(mean * (1 - sample_rate)) + 1)

    def calibrated(scale: float) -> DistributedPlan:
        l2 = scale * clip + math.sqrt(dim)
        l1 = min(l2**2, math.sqrt(dim) * l2)
        variance = calibrate_skellam(
            target_epsilon=epsilon, delta=delta, l2=l2, l1=l1, sample_rate=sample_rate, steps=rounds
        )
        return DistributedPlan(clip, scale, dim, sample_rate, rounds, clients, min_survivors, variance, bound)

    plan = calibrated(math.sqrt(dim) / (_ROUNDING_SHARE * clip))
    z_share = plan.noise_multiplier / math.sqrt(min_survivors)  # share std per unit of l2
    # Largest value: batch · (s·C + 1) + tail · z_share · (s·C + √d) <= bound, solved for s·C.
    room = bound - batch - _TAIL * z_share * math.sqrt(dim)
    fit = room / (batch + _TAIL * z_share)
    if fit < plan.scale * clip:
        if fit < 10 * math.sqrt(dim):
            raise ValueError(
                f"a 32-bit secure sum of {clients} clients cannot hold batches of ~{batch} records at a useful "
                f"scale (s*C would be {fit:.0f} < 10*sqrt(d) = {10 * math.sqrt(dim):.0f}); use fewer records per "
                "client per round (smaller batch-size) or more clients"
            )
        plan = calibrated(fit / clip)
    return plan


def clipped_gradient_sum(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, clip: float,
                         chunk: int = 256) -> torch.Tensor:  # fmt: skip
    """Σ of each record's cross-entropy gradient clipped to L2 norm ``clip``, flat, float64.

    Per-record gradients by ``torch.func`` (vmap over grad), in chunks to bound memory; the
    layout is ``model.named_parameters()`` order, as ``flat_parameters`` / ``set_flat_gradient``.
    """
    linear = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    if len(linear) == 1 and type(linear[0]) is nn.Linear and model(x[:1]).shape[-1] == linear[0].out_features:
        return _linear_clipped_sum(linear[0], model, x, y, clip=clip)
    params = {k: p.detach() for k, p in model.named_parameters()}
    total = torch.zeros(sum(p.numel() for p in params.values()), dtype=torch.float64)

    def loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = torch.func.functional_call(model, p, (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    per_record = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))
    for start in range(0, len(x), chunk):
        grads = per_record(params, x[start : start + chunk], y[start : start + chunk])
        flat = torch.cat([g.reshape(len(g), -1) for g in grads.values()], dim=1)
        factor = (clip / flat.norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
        total += (flat * factor[:, None]).sum(dim=0, dtype=torch.float64)
    return total


def _linear_clipped_sum(layer: nn.Linear, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                        clip: float) -> torch.Tensor:  # fmt: skip
    """The same sum for a model whose only parameters are one ``nn.Linear`` producing the logits.

    A record's gradient is the outer product of (softmax − one-hot) and its input (with a 1 for
    the bias), so its norm is the product of their norms and the clipped sum is one matrix
    product: exact, without materializing a gradient per record (the vmap path does, 10x slower).
    """
    with torch.no_grad():
        inputs = _layer_input(layer, model, x)
        err = torch.softmax(model(x), dim=1) - F.one_hot(y, layer.out_features).to(x.dtype)
        norms = err.norm(dim=1) * (inputs.pow(2).sum(dim=1) + (1.0 if layer.bias is not None else 0.0)).sqrt()
        factor = (clip / norms.clamp_min(1e-12)).clamp(max=1.0)
        weighted = (err * factor[:, None]).double()
        parts = [(weighted.T @ inputs.double()).reshape(-1)]
        if layer.bias is not None:
            parts.append(weighted.sum(dim=0))
    return torch.cat(parts)


def _layer_input(layer: nn.Linear, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What ``layer`` receives when ``model`` runs on ``x`` (a forward hook records it)."""
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    try:
        model(x)
    finally:
        handle.remove()
    return seen[0].reshape(len(x), -1)


def stochastic_round(v: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """⌊v + U⌋ with U uniform in [0, 1) per coordinate: an unbiased integer rounding, int64."""
    u = torch.rand(v.shape, generator=generator, dtype=torch.float64)
    return torch.floor(v.double() + u).to(torch.int64)


def skellam_noise(size: int, variance: float, generator: torch.Generator) -> torch.Tensor:
    """Symmetric Skellam noise, Poisson(μ/2) − Poisson(μ/2) per coordinate (variance μ), int64."""
    if variance < 0:
        raise ValueError(f"variance must be >= 0, got {variance}")
    rate = torch.full((size,), variance / 2, dtype=torch.float64)
    return (torch.poisson(rate, generator=generator) - torch.poisson(rate, generator=generator)).to(torch.int64)


def client_share(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, plan: DistributedPlan, generator: torch.Generator
) -> tuple[np.ndarray, int]:
    """One client's integer vector for a round, and how many of its coordinates had to be clamped.

    Poisson sample at ``plan.sample_rate``, clipped sum, ⌊s·g + U⌋, plus a Skellam share, clamped
    to ±``plan.bound`` (the plan makes a clamp a > 8σ event; the count stays with the client).
    ``generator`` draws the sample, the rounding and the noise: it must be secret.
    """
    mask = torch.rand(len(x), generator=generator) < plan.sample_rate
    dim = sum(p.numel() for p in model.parameters())
    if dim != plan.dim:
        raise ValueError(f"model has {dim} parameters, the plan {plan.dim}")
    total = clipped_gradient_sum(model, x[mask], y[mask], clip=plan.clip) if mask.any() else torch.zeros(dim)
    return integer_share(total, plan=plan, generator=generator)


def integer_share(vector: torch.Tensor, *, plan: DistributedPlan, generator: torch.Generator) -> tuple[np.ndarray, int]:
    """⌊s·v + U⌋ plus the client's Skellam share, clamped to ±``plan.bound``; and how many coordinates were clamped.

    ``vector`` must move by at most ``plan.clip`` in L2 when one record is added or removed.
    """
    if len(vector) != plan.dim:
        raise ValueError(f"vector has {len(vector)} entries, the plan {plan.dim}")
    v = stochastic_round(vector * plan.scale, generator) + skellam_noise(plan.dim, plan.share_variance, generator)
    clamped = int((v.abs() > plan.bound).sum())
    return v.clamp(-plan.bound, plan.bound).numpy(), clamped


def server_gradient(total: np.ndarray, *, plan: DistributedPlan, expected_batch: float) -> torch.Tensor:
    """The DP-SGD gradient from the secure sum: sum / (s · expected batch of the union), float32."""
    return torch.from_numpy(np.asarray(total, dtype=np.float64) / (plan.scale * expected_batch)).float()


def set_flat_gradient(model: nn.Module, flat: torch.Tensor) -> None:
    """Write a flat gradient (``named_parameters`` order) into every parameter's ``.grad``."""
    params = list(model.parameters())
    if (size := sum(p.numel() for p in params)) != len(flat):
        raise ValueError(f"gradient has {len(flat)} entries, the model {size}")
    offset = 0
    for p in params:
        p.grad = flat[offset : offset + p.numel()].reshape(p.shape).to(p.dtype).clone()
        offset += p.numel()
