"""Tests for fedlatent.privacy.accounting: Opacus accountants, pinned ε, calibration."""

from __future__ import annotations

import math

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from fedlatent.privacy.accounting import ACCOUNTANTS, calibrate_noise_multiplier, compose_epsilon, dp_sgd_epsilon
from fedlatent.privacy.dp_sgd import dp_steps

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
