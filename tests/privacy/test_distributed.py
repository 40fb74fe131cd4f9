"""Tests for fedlatent.privacy.distributed: the client's share of a distributed DP-SGD step."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from fedlatent.privacy.distributed import (
    MODULUS_BITS,
    DistributedPlan,
    client_share,
    clipped_gradient_sum,
    plan_distributed,
    server_gradient,
    set_flat_gradient,
    skellam_noise,
    stochastic_round,
)

pytestmark = [pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")]


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))


def _data(n: int = 40, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 12, generator=g) * 3, torch.randint(0, 3, (n,), generator=g)


def _claims_plan(**kw) -> DistributedPlan:
    args = dict(epsilon=3.0, delta=1e-5, clip=0.1, dim=39_700, sample_rate=8192 / 59400, rounds=290, clients=10,
                min_survivors=10, max_records=5940)  # fmt: skip
    return plan_distributed(**(args | kw))


def _one_by_one(model: nn.Module, x: torch.Tensor, y: torch.Tensor, clip: float) -> torch.Tensor:
    total = torch.zeros(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    for xi, yi in zip(x, y, strict=True):
        model.zero_grad()
        nn.functional.cross_entropy(model(xi[None]), yi[None]).backward()
        g = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double()
        total += g * min(1.0, clip / g.norm().item())
    return total


@pytest.mark.parametrize("make", [lambda: nn.Linear(12, 3), lambda: nn.Sequential(nn.Identity(), nn.Linear(12, 3))])
def test_linear_models_take_the_closed_form_with_the_same_clipped_sum(make):
    torch.manual_seed(0)
    model, (x, y) = make(), _data()
    assert torch.allclose(clipped_gradient_sum(model, x, y, clip=0.5), _one_by_one(model, x, y, 0.5), atol=1e-5)


def test_clipped_sum_equals_clipping_each_record_one_by_one():
    model, (x, y) = _model(), _data()
    expected = torch.zeros(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    for xi, yi in zip(x, y, strict=True):
        model.zero_grad()
        nn.functional.cross_entropy(model(xi[None]), yi[None]).backward()
        g = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double()
        expected += g * min(1.0, 0.5 / g.norm().item())
    got = clipped_gradient_sum(model, x, y, clip=0.5, chunk=7)
    assert torch.allclose(got, expected, atol=1e-5)


def test_stochastic_rounding_is_unbiased_and_within_one():
    v = torch.full((200_000,), 2.3, dtype=torch.float64)
    r = stochastic_round(v, torch.Generator().manual_seed(0))
    assert set(r.unique().tolist()) == {2, 3}
    assert r.double().mean().item() == pytest.approx(2.3, abs=0.005)


def test_rounding_sensitivity_holds_for_neighbours_under_the_same_draw():
    # The coupling behind Δ2 = s·C + √d: same U, one record more, moves by at most s·C + √d.
    d, s, c = 500, 1000.0, 0.1
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        base = torch.randn(d, generator=g, dtype=torch.float64) * 5
        record = torch.randn(d, generator=g, dtype=torch.float64)
        record *= c / record.norm()
        state = g.get_state()
        a = stochastic_round((base) * s, g)
        g.set_state(state)
        b = stochastic_round((base + record) * s, g)
        assert (b - a).double().norm() <= s * c + math.sqrt(d)
        assert (b - a).abs().sum() <= min((s * c + math.sqrt(d)) ** 2, math.sqrt(d) * (s * c + math.sqrt(d)))


def test_sum_of_shares_is_skellam_with_the_planned_variance():
    g = torch.Generator().manual_seed(5)
    shares = torch.stack([skellam_noise(100_000, 250.0, g) for _ in range(4)]).sum(0).double()
    assert shares.mean().item() == pytest.approx(0.0, abs=0.4)
    assert shares.var().item() == pytest.approx(1000.0, rel=0.02)
    assert shares.dtype == torch.float64 and (shares == shares.round()).all()


def test_plan_meets_the_budget_and_fits_the_modulus():
    plan = _claims_plan()
    assert 0.99 * 3.0 <= plan.epsilon([10] * 290, delta=1e-5) <= 3.0
    assert 2 * plan.bound * plan.clients < 2**MODULUS_BITS
    assert math.sqrt(plan.dim) <= 0.0101 * plan.scale * plan.clip  # rounding costs at most 1% more noise
    # A dropout leaves less noise: the round costs more than planned, and the server's ε says so.
    assert plan.epsilon([10] * 289 + [9], delta=1e-5) > plan.epsilon([10] * 290, delta=1e-5)
    # Alone, one client's share is far weaker: that is what SecAgg buys.
    assert plan.epsilon_local(290, delta=1e-5) > 3 * plan.epsilon([10] * 290, delta=1e-5)


def test_plan_for_dropouts_gives_each_share_more_noise():
    strict, tolerant = _claims_plan(), _claims_plan(min_survivors=8)
    assert tolerant.share_variance == pytest.approx(strict.share_variance * 10 / 8, rel=0.02)
    assert tolerant.epsilon([8] * 290, delta=1e-5) <= 3.0


def test_plan_shrinks_the_scale_when_the_sums_would_not_fit():
    roomy, tight = _claims_plan(), _claims_plan(clients=100, max_records=50_000)
    assert tight.scale < roomy.scale
    with pytest.raises(ValueError, match="32-bit secure sum"):
        _claims_plan(clients=1000, max_records=600_000)


def test_shares_sum_to_the_central_clipped_gradient_without_noise():
    model, (x, y) = _model(), _data(60)
    dim = sum(p.numel() for p in model.parameters())
    plan = DistributedPlan(clip=0.5, scale=1e5, dim=dim, sample_rate=1.0, rounds=1, clients=3, min_survivors=3,
                           variance=0.0, bound=2**28)  # fmt: skip
    total = sum(client_share(model, xs, ys, plan=plan, generator=torch.Generator().manual_seed(i))[0]
                for i, (xs, ys) in enumerate(zip(x.chunk(3), y.chunk(3), strict=True)))  # fmt: skip
    central = clipped_gradient_sum(model, x, y, clip=0.5) / 60
    got = server_gradient(total, plan=plan, expected_batch=60)
    assert torch.allclose(got.double(), central, atol=3 * 3 / (1e5 * 60))


def test_client_share_refuses_a_model_of_another_size():
    model, (x, y) = _model(), _data()
    plan = dataclasses.replace(_claims_plan(), dim=5)
    with pytest.raises(ValueError, match="parameters"):
        client_share(model, x, y, plan=plan, generator=torch.Generator())


def test_set_flat_gradient_round_trips():
    model = _model()
    flat = torch.arange(sum(p.numel() for p in model.parameters()), dtype=torch.float32)
    set_flat_gradient(model, flat)
    assert torch.equal(torch.cat([p.grad.reshape(-1) for p in model.parameters()]), flat)
    with pytest.raises(ValueError):
        set_flat_gradient(model, torch.zeros(3))
    assert np.isfinite(flat.numpy()).all()
