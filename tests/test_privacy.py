"""Tests for fedlatent.privacy: accountants, calibration, the ledger, mechanisms and DP-SGD."""

from __future__ import annotations

import math

import pytest
import torch
from flwr.app import ConfigRecord
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from opacus.accountants import PRVAccountant, RDPAccountant

from fedlatent import dp_sgd
from fedlatent.dp_sgd import PoissonBatches, dp_fit, dp_steps
from fedlatent.models import LatentClassifier
from fedlatent.privacy import (
    ACCOUNTANTS,
    BudgetExhausted,
    Ledger,
    calibrate_noise_multiplier,
    clip_rows,
    compose_epsilon,
    dp_sgd_epsilon,
    gaussian_release,
    latent_noise_std,
    randomized_response,
)
from fedlatent.training import classification_losses, evaluate

# Small noise multipliers push Opacus' best RDP order to the end of its grid; it warns.
pytestmark = [pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")]

DELTA = 1e-5
OPACUS = {"rdp": RDPAccountant, "prv": PRVAccountant}

# Published settings, (name, noise multiplier, sample rate, steps), δ = 1e-5, and the ε
# computed once with Opacus 1.6.0 and pasted here.
# - "mnist-256": the MNIST DP-SGD setting σ = 1.1, batch 256 of 60 000, 60 epochs
#   (Abadi et al. 2016 style, as in the TF-Privacy MNIST tutorial): ceil(60 / q) = 14 063 steps.
# - "opacus-mnist": Opacus' examples/mnist.py defaults: σ = 1.0, batch 64 of 60 000, 10 epochs;
#   make_private uses q = 1 / len(loader) = 1 / 938, so 9 380 steps.
MNIST_256 = ("mnist-256", 1.1, 256 / 60000, 14063)
OPACUS_MNIST = ("opacus-mnist", 1.0, 1 / 938, 9380)
PINNED = {
    ("mnist-256", "rdp"): 2.5966555286883684,
    ("mnist-256", "prv"): 2.3918365248926055,
    ("opacus-mnist", "rdp"): 0.8033276235960675,
    ("opacus-mnist", "prv"): 0.5033819968824601,
}


# --- accountants --------------------------------------------------------------------------


def test_mnist_256_step_count():
    assert dp_steps(epochs=60, sample_rate=256 / 60000) == 14063


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
@pytest.mark.parametrize("setting", [MNIST_256, OPACUS_MNIST], ids=lambda s: s[0])
def test_epsilon_is_opacus_epsilon_and_pinned(setting, accountant):
    name, sigma, q, steps = setting
    direct = OPACUS[accountant]()
    for _ in range(steps):  # what DPOptimizer's accounting hook does on every step
        direct.step(noise_multiplier=sigma, sample_rate=q)
    ours = dp_sgd_epsilon(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=DELTA, accountant=accountant)
    assert ours == pytest.approx(direct.get_epsilon(delta=DELTA), rel=1e-6)
    assert ours == pytest.approx(PINNED[(name, accountant)], rel=1e-6)


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
def test_epsilon_edge_cases(accountant):
    kw = {"delta": DELTA, "accountant": accountant}
    assert dp_sgd_epsilon(noise_multiplier=1.0, sample_rate=0.01, steps=0, **kw) == 0.0
    assert dp_sgd_epsilon(noise_multiplier=0.0, sample_rate=0.01, steps=10, **kw) == math.inf
    assert compose_epsilon([], **kw) == 0.0
    with pytest.raises(ValueError):
        dp_sgd_epsilon(noise_multiplier=1.0, sample_rate=0.01, steps=10, delta=1.0, accountant=accountant)
    with pytest.raises(ValueError):
        dp_sgd_epsilon(noise_multiplier=1.0, sample_rate=1.5, steps=10, **kw)
    with pytest.raises(ValueError):
        dp_sgd_epsilon(noise_multiplier=1.0, sample_rate=0.01, steps=10, delta=DELTA, accountant="gdp")


# RDP costs about 0.05 s an evaluation and PRV about 0.5 s, so PRV gets few cases.
CALIBRATION = [("rdp", t, q, n) for t in (0.5, 1, 3, 8) for q, n in ((256 / 60000, 1000), (0.05, 100), (1.0, 1))]
CALIBRATION += [("prv", 1, 0.02, 200), ("prv", 8, 1.0, 4)]


@pytest.mark.parametrize("accountant,target,q,steps", CALIBRATION)
def test_calibrated_sigma_hits_target_within_one_percent(accountant, target, q, steps):
    sigma = calibrate_noise_multiplier(
        target_epsilon=target, delta=DELTA, sample_rate=q, steps=steps, accountant=accountant
    )
    eps = dp_sgd_epsilon(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=DELTA, accountant=accountant)
    assert 0.99 * target <= eps <= target


@pytest.mark.parametrize(
    "kwargs",
    [
        {"target_epsilon": 0.0},
        {"target_epsilon": -1.0},
        {"delta": 0.0},
        {"delta": 1.0},
        {"sample_rate": 0.0},
        {"sample_rate": 1.01},
        {"steps": 0},
    ],
)
def test_calibration_rejects_bad_arguments(kwargs):
    args = {"target_epsilon": 1.0, "delta": DELTA, "sample_rate": 0.01, "steps": 10} | kwargs
    with pytest.raises(ValueError):
        calibrate_noise_multiplier(**args)


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
def test_compose_one_event_and_two_halves(accountant):
    kw = {"delta": DELTA, "accountant": accountant}
    whole = dp_sgd_epsilon(noise_multiplier=1.2, sample_rate=0.02, steps=300, **kw)
    assert compose_epsilon([(1.2, 0.02, 300)], **kw) == whole
    assert compose_epsilon([(1.2, 0.02, 150), (1.2, 0.02, 150)], **kw) == pytest.approx(whole, rel=1e-9)


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
def test_compose_heterogeneous_events_matches_opacus(accountant):
    events = [(1.0, 0.01, 60), (2.0, 0.05, 30), (1.0, 0.01, 40)]
    direct = OPACUS[accountant]()
    direct.history = [(1.0, 0.01, 100), (2.0, 0.05, 30)]
    eps = compose_epsilon(events, delta=DELTA, accountant=accountant)
    assert eps == pytest.approx(direct.get_epsilon(delta=DELTA), rel=1e-6)
    assert eps > compose_epsilon(events[:1], delta=DELTA, accountant=accountant)
    assert eps == compose_epsilon(events[::-1], delta=DELTA, accountant=accountant)


# --- the ledger ---------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@example(budget=3.0, sigma=2.0, q=0.05, rounds=[50, 2000, 50])  # records, refuses, records
@given(
    budget=st.floats(0.5, 10.0),
    sigma=st.sampled_from([2.0, 3.0, 4.0]),
    q=st.sampled_from([0.01, 0.02, 0.05]),
    rounds=st.lists(st.integers(50, 2000), min_size=1, max_size=5),
)
def test_ledger_never_overspends_and_refuses_exactly_when_over(budget, sigma, q, rounds):
    ledger = Ledger(budget=budget, delta=DELTA)
    refusals = 0
    for steps in rounds:
        dp_round = {"noise_multiplier": sigma, "sample_rate": q, "steps": steps}
        would = ledger.would_spend(**dp_round)
        if ledger.can_afford(**dp_round):
            assert would <= budget
            assert ledger.record(**dp_round) == would
        else:
            assert would > budget
            refusals += 1
            before = list(ledger.history)
            with pytest.raises(BudgetExhausted):
                ledger.record(**dp_round)
            assert ledger.history == before
    spent = ledger.spent()
    assert spent <= budget
    event("some round refused" if refusals else "no refusal")
    restored = Ledger.from_config(ConfigRecord(ledger.to_config()))
    assert restored == ledger
    assert restored.spent() == spent


def test_ledger_record_raises_with_numbers_and_keeps_state():
    ledger = Ledger(budget=1.0, delta=DELTA)
    spent = ledger.record(noise_multiplier=2.0, sample_rate=0.01, steps=100)
    assert 0 < spent <= 1.0 and ledger.spent() == spent
    with pytest.raises(BudgetExhausted, match=r"spent epsilon=.*would make it .* > budget 1"):
        ledger.record(noise_multiplier=0.8, sample_rate=0.1, steps=1000)
    assert ledger.history == [(2.0, 0.01, 100)]


def test_ledger_config_is_flat_and_round_trips():
    ledger = Ledger(budget=math.inf, delta=1e-6, accountant="prv", history=[(1.1, 0.02, 30), (0.9, 0.05, 10)])
    config = ledger.to_config()
    assert all(not isinstance(v, list) or all(isinstance(e, (int, float)) for e in v) for v in config.values())
    restored = Ledger.from_config(ConfigRecord(config))
    assert restored == ledger and isinstance(restored.history[0][2], int)
    assert Ledger.from_config(Ledger(budget=2.0, delta=DELTA).to_config()).history == []
    assert ledger.can_afford(noise_multiplier=0.0, sample_rate=0.1, steps=1)  # inf budget: never refuses


def test_ledger_rejects_bad_settings():
    with pytest.raises(ValueError):
        Ledger(budget=0.0, delta=DELTA)
    with pytest.raises(ValueError):
        Ledger(budget=1.0, delta=0.0)
    with pytest.raises(ValueError):
        Ledger(budget=1.0, delta=DELTA, accountant="moments")


# --- mechanisms ---------------------------------------------------------------------------


def test_clip_rows_bounds_norms_keeps_short_rows_and_directions():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 16, generator=g) * torch.rand(500, 1, generator=g) * 3
    clipped = clip_rows(x, max_norm=1.5)
    norms, new_norms = x.norm(dim=1), clipped.norm(dim=1)
    assert (new_norms <= 1.5 + 1e-6).all()
    short = norms <= 1.5
    assert short.any() and (~short).any()
    assert torch.equal(clipped[short], x[short])
    assert torch.allclose(new_norms[~short], torch.full_like(new_norms[~short], 1.5))
    cosine = torch.nn.functional.cosine_similarity(clipped, x, dim=1)
    assert torch.allclose(cosine, torch.ones_like(cosine), atol=1e-6)
    assert torch.equal(clip_rows(torch.zeros(3, 4), max_norm=1.0), torch.zeros(3, 4))
    with pytest.raises(ValueError):
        clip_rows(x, max_norm=0.0)


# Calibrated σ for clip C = 1, δ = 1e-5, one release, against the classic
# sqrt(2 ln(1.25/δ)) · 2C / ε (valid only for ε < 1):
#   ε = 1: RDP 8.129, PRV 7.565, classic 9.690
#   ε = 3: RDP 3.009, PRV 2.811, classic 3.230
#   ε = 8: RDP 1.281, PRV 1.207, classic 1.211 (RDP is looser than the invalid classic value)
@pytest.mark.parametrize("accountant,epsilon", [("rdp", 1.0), ("rdp", 3.0), ("rdp", 8.0), ("prv", 3.0)])
def test_latent_noise_std_is_calibrated_for_replacement(accountant, epsilon):
    clip = 2.5
    std = latent_noise_std(epsilon=epsilon, delta=DELTA, clip=clip, accountant=accountant)
    z = std / (2 * clip)  # noise in units of the sensitivity 2C
    eps = dp_sgd_epsilon(noise_multiplier=z, sample_rate=1.0, steps=1, delta=DELTA, accountant=accountant)
    assert 0.99 * epsilon <= eps <= epsilon


def test_latent_noise_std_monotone_and_composes():
    std = {e: latent_noise_std(epsilon=e, delta=DELTA, clip=1.0) for e in (0.5, 1.0, 3.0, 8.0)}
    assert std[0.5] > std[1.0] > std[3.0] > std[8.0]
    four = latent_noise_std(epsilon=3.0, delta=DELTA, clip=1.0, releases=4)
    assert four > std[3.0]
    eps = dp_sgd_epsilon(noise_multiplier=four / 2, sample_rate=1.0, steps=4, delta=DELTA)
    assert 2.97 <= eps <= 3.0
    assert latent_noise_std(epsilon=3.0, delta=DELTA, clip=2.0) == pytest.approx(2 * std[3.0])


def test_gaussian_release_noise_has_the_requested_std():
    n, d, std = 5000, 40, 0.7
    g = torch.Generator().manual_seed(1)
    noise = gaussian_release(torch.zeros(n, d, dtype=torch.float64), clip=1.0, std=std, generator=g)
    # The sample variance over N = 200 000 draws has relative sd sqrt(2/N) = 0.0032: a 3%
    # bound on the std (6% on the variance) is ~19 sd; the mean bound is 6 sd.
    assert noise.std().item() == pytest.approx(std, rel=0.03)
    assert abs(noise.mean().item()) < 6 * std / math.sqrt(n * d)


def test_gaussian_release_clips_before_noise_and_is_reproducible():
    x = torch.randn(1000, 8, generator=torch.Generator().manual_seed(2)) * 10
    released = gaussian_release(x, clip=1.0, std=0.0, generator=torch.Generator())
    assert torch.equal(released, clip_rows(x, max_norm=1.0))
    a = gaussian_release(x, clip=1.0, std=0.5, generator=torch.Generator().manual_seed(3))
    b = gaussian_release(x, clip=1.0, std=0.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert (a - clip_rows(x, max_norm=1.0)).std().item() == pytest.approx(0.5, rel=0.05)


@pytest.mark.parametrize("epsilon,k", [(1.0, 10), (0.0, 4), (3.0, 2)])
def test_randomized_response_keep_rate_and_uniform_flips(epsilon, k):
    n, true = 200_000, 1
    labels = torch.full((n,), true, dtype=torch.long)
    out = randomized_response(labels, epsilon=epsilon, num_classes=k, generator=torch.Generator().manual_seed(4))
    p_keep = math.exp(epsilon) / (math.exp(epsilon) + k - 1)
    keep_rate = (out == true).double().mean().item()
    assert abs(keep_rate - p_keep) < 6 * math.sqrt(p_keep * (1 - p_keep) / n)
    flipped = out[out != true]
    assert ((flipped >= 0) & (flipped < k)).all()
    counts = torch.bincount(flipped, minlength=k).double()
    assert counts[true] == 0
    others = counts[torch.arange(k) != true]
    expected = len(flipped) / (k - 1)
    assert (others - expected).abs().max() < 6 * math.sqrt(expected)


def test_randomized_response_edge_cases():
    labels = torch.arange(10) % 3
    g = torch.Generator().manual_seed(5)
    assert torch.equal(randomized_response(labels, epsilon=math.inf, num_classes=3, generator=g), labels)
    mixed = torch.randint(0, 5, (50_000,), generator=g)
    out = randomized_response(mixed, epsilon=2.0, num_classes=5, generator=g)
    assert abs((out == mixed).double().mean().item() - math.exp(2) / (math.exp(2) + 4)) < 0.015
    with pytest.raises(ValueError):
        randomized_response(labels, epsilon=-1.0, num_classes=3, generator=g)
    with pytest.raises(ValueError):
        randomized_response(labels, epsilon=1.0, num_classes=2, generator=g)  # label 2 out of range


# --- Poisson sampling and DP-SGD ----------------------------------------------------------


def test_poisson_batches_sizes_and_reproducibility():
    n, q, steps = 1000, 0.05, 400
    x, y = torch.arange(n).float().unsqueeze(1), torch.arange(n)
    batches = list(PoissonBatches(x, y, sample_rate=q, steps=steps, generator=torch.Generator().manual_seed(6)))
    assert len(batches) == steps
    sizes = torch.tensor([len(b[1]) for b in batches]).double()
    # sd of the mean size is sqrt(n q (1 - q) / steps) = 0.34; allow 7 sd.
    assert abs(sizes.mean().item() - q * n) < 2.5
    assert all(torch.equal(bx.squeeze(1).long(), by) and len(by.unique()) == len(by) for bx, by in batches)
    again = list(PoissonBatches(x, y, sample_rate=q, steps=steps, generator=torch.Generator().manual_seed(6)))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(batches, again, strict=True))
    tiny = PoissonBatches(x[:10], y[:10], sample_rate=0.01, steps=50, generator=torch.Generator().manual_seed(7))
    assert len(tiny) == 50 and any(len(by) == 0 for _, by in tiny)


def test_dp_steps():
    assert dp_steps(epochs=1, sample_rate=0.1) == 10
    assert dp_steps(epochs=0.5, sample_rate=0.3) == 2
    assert dp_steps(epochs=3, sample_rate=1.0) == 3
    assert dp_steps(epochs=0, sample_rate=0.5) == 0


D, K = 8, 3


def blobs(n_per_class: int = 100, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """K well separated Gaussian clusters in R^D."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(K).repeat_interleave(n_per_class)
    x = (torch.eye(D)[:K] * 4.0)[y] + 0.5 * torch.randn(len(y), D, generator=g)
    return x, y


def classifier(seed: int = 0) -> LatentClassifier:
    torch.manual_seed(seed)
    return LatentClassifier(latent_dim=D, num_classes=K, hidden=(32,))


def fit(model, x, y, **overrides):
    kw = {
        "record_loss_fn": classification_losses,
        "epochs": 4.0,
        "batch_size": 50,
        "lr": 0.01,
        "noise_multiplier": 1.0,
        "max_grad_norm": 1.0,
        "generator": torch.Generator().manual_seed(8),
    } | overrides
    return dp_fit(model, x, y, **kw)


def test_dp_fit_learns_and_leaves_a_plain_model():
    x, y = blobs()
    model = classifier()
    keys = list(model.state_dict())
    loss, steps, q = fit(model, x, y)
    assert q == pytest.approx(50 / 300) and steps == dp_steps(epochs=4.0, sample_rate=q) == 24
    assert math.isfinite(loss) and loss < math.log(K)
    assert evaluate(model, x, y)[1] > 0.9  # chance is 1/3
    assert list(model.state_dict()) == keys
    for module in model.modules():
        assert not module._forward_hooks and not module._backward_hooks
    for p in model.parameters():
        assert not hasattr(p, "grad_sample") and not hasattr(p, "summed_grad") and p.grad is None
    again = classifier()
    fit(again, x, y)
    assert all(torch.equal(model.state_dict()[k], again.state_dict()[k]) for k in keys)


def test_dp_fit_clips_per_sample_gradients():
    # Without noise, the averaged gradient is a sum of per-sample gradients clipped to norm
    # 1e-12 over the expected batch size, so each coordinate is at most (n / 50) * 1e-12, and an
    # Adam step (at most lr * |g| / eps, eps = 1e-8) moves a weight by at most lr * (n / 50) * 1e-4.
    # Unclipped gradients move weights by about lr a step.
    x, y = blobs(50)
    before = classifier().state_dict()
    moved = {}
    for clip in (1e-12, 1e6):
        model = classifier()
        _, steps, _ = fit(model, x, y, noise_multiplier=0.0, max_grad_norm=clip, epochs=1.0)
        moved[clip] = max((model.state_dict()[k] - before[k]).abs().max().item() for k in before)
    assert moved[1e-12] < steps * 0.01 * (len(x) / 50) * 1e-4
    assert moved[1e6] > 0.02


class _EmptyBatches(PoissonBatches):
    def __iter__(self):
        for _ in range(self.steps):
            yield self.x[:0], self.y[:0]


def test_dp_fit_empty_batches_take_noise_only_steps(monkeypatch):
    monkeypatch.setattr(dp_sgd, "PoissonBatches", _EmptyBatches)
    x, y = blobs(15)
    before = classifier().state_dict()
    quiet = classifier()
    loss, steps, _ = fit(quiet, x, y, noise_multiplier=0.0, epochs=1.0)
    assert math.isnan(loss) and steps == 1
    assert all(torch.equal(quiet.state_dict()[k], before[k]) for k in before)
    noisy = classifier()
    fit(noisy, x, y, noise_multiplier=1.0, epochs=1.0)
    assert all(not torch.equal(noisy.state_dict()[k], before[k]) for k in before)
