"""Tests for fedlatent.privacy.skellam: the Skellam RDP bound, Poisson amplification, ε, calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
from opacus.accountants.analysis.rdp import compute_rdp
from scipy.special import logsumexp
from scipy.stats import skellam

from fedlatent.privacy.accounting import dp_sgd_epsilon
from fedlatent.privacy.skellam import (
    ORDERS,
    SkellamRound,
    calibrate_skellam,
    skellam_epsilon,
    skellam_rdp,
    subsampled_rdp,
)

pytestmark = [pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")]


def test_skellam_rdp_is_the_papers_bound_pinned():
    # Agarwal et al. 2021, Thm 3.5 with Δ2 = Δ1 = 1, μ = 4, α = 2: 2/8 + min(9/64, 3/8).
    assert skellam_rdp(2, l2=1.0, l1=1.0, variance=4.0) == 0.25 + 9 / 64
    # The other branch of the min: small variance, 3Δ1/(2μ) is the smaller.
    assert skellam_rdp(3, l2=1.0, l1=1.0, variance=0.5) == 3 / 1.0 + 3 / 1.0


def test_skellam_rdp_tends_to_the_gaussians_at_large_scale():
    l2, z = 20_000.0, 2.0
    for alpha in (2, 10, 64):
        gaussian = alpha / (2 * z**2)
        got = skellam_rdp(alpha, l2=l2, l1=math.sqrt(40_000) * l2, variance=(z * l2) ** 2)
        assert gaussian <= got <= gaussian * 1.001


def test_skellam_rdp_refuses_bad_arguments():
    with pytest.raises(ValueError):
        skellam_rdp(1, l2=1, l1=1, variance=1)
    with pytest.raises(ValueError):
        skellam_rdp(2, l2=1, l1=1, variance=0)


def test_on_a_gaussian_base_the_bound_is_opacus_exact_rdp_where_adding_dominates():
    q, z = 0.1, 1.0
    exact = compute_rdp(q=q, noise_multiplier=z, steps=1, orders=list(ORDERS[:30]))

    def gaussian(a: int) -> float:
        return a / (2 * z**2)

    bound = np.array([subsampled_rdp(a, q, gaussian) for a in ORDERS[:30]])
    assert (bound >= exact - 1e-12).all()  # never below the true RDP
    np.testing.assert_allclose(bound[1:], exact[1:], rtol=1e-9)  # the adding direction is exact
    assert bound[0] == pytest.approx(exact[0] * 1.11006671, rel=1e-6)  # alpha = 2: the removing bound
    assert (bound <= np.array([gaussian(a) for a in ORDERS[:30]]) + 1e-12).all()  # amplification helps


def _log_divergence(a: int, log_p: np.ndarray, log_q: np.ndarray) -> float:
    return float(logsumexp(a * log_p + (1 - a) * log_q)) / (a - 1)


@pytest.mark.parametrize(
    ("mu", "shift", "rate"), [(8.0, 2, 0.3), (30.0, 3, 0.1), (3.0, 1, 0.5), (50.0, 5, 0.14), (400.0, 2, 0.14)]
)
def test_the_bound_covers_both_directions_of_an_exactly_computed_subsampled_skellam(mu, shift, rate):
    k = np.arange(-400, 401)
    log_q = skellam.logpmf(k, mu / 2, mu / 2)  # Q = M(S), Q' = M(S + x): the noise shifted by the record
    log_q1 = skellam.logpmf(k - shift, mu / 2, mu / 2)
    keep = np.isfinite(log_q) & np.isfinite(log_q1)  # the far tails underflow; their mass is < 1e-300
    log_q, log_q1 = log_q[keep], log_q1[keep]
    log_p = np.logaddexp(np.log1p(-rate) + log_q, np.log(rate) + log_q1)
    for a in (2, 3, 5, 8, 12, 20, 40, 64):
        adding, removing = _log_divergence(a, log_p, log_q), _log_divergence(a, log_q, log_p)
        bound = subsampled_rdp(a, rate, lambda j: skellam_rdp(j, l2=shift, l1=shift, variance=mu))
        assert max(adding, removing) <= bound + 1e-12


def test_subsampling_at_rate_one_is_the_mechanism_itself():
    assert subsampled_rdp(7, 1.0, lambda a: 0.3 * a) == 0.3 * 7


def test_skellam_epsilon_is_slightly_above_the_gaussians_at_the_same_noise():
    # Claims setting: expected batch 8,192 of 59,400, 290 steps, z = 4, d = 39,700, s·C = 100·√d.
    q, steps, z, d = 8192 / 59400, 290, 4.0, 39_700
    l2 = 100 * math.sqrt(d) + math.sqrt(d)
    skellam = skellam_epsilon([SkellamRound(l2, math.sqrt(d) * l2, (z * l2) ** 2, q, steps)], delta=1e-5)
    gaussian = dp_sgd_epsilon(noise_multiplier=z, sample_rate=q, steps=steps, delta=1e-5)
    assert gaussian < skellam < 1.25 * gaussian
    assert skellam == pytest.approx(3.2776786467, rel=1e-9)  # computed once with this module; pins it


def test_composition_adds_rounds():
    r = SkellamRound(100.0, 1000.0, 4e4, 0.2, 1)
    one = skellam_epsilon([r], delta=1e-5)
    assert skellam_epsilon([r, r, r], delta=1e-5) == skellam_epsilon([SkellamRound(100.0, 1000.0, 4e4, 0.2, 3)],
                                                                     delta=1e-5)  # fmt: skip
    assert skellam_epsilon([r, r, r], delta=1e-5) > one
    assert skellam_epsilon([], delta=1e-5) == 0.0
    assert skellam_epsilon([SkellamRound(1.0, 1.0, 0.0, 0.5, 1)], delta=1e-5) == math.inf


@pytest.mark.parametrize("target", [1.0, 3.0])
def test_calibration_lands_in_the_window_and_never_above(target):
    l2 = 2000.0
    l1 = math.sqrt(4000) * l2
    variance = calibrate_skellam(target_epsilon=target, delta=1e-5, l2=l2, l1=l1, sample_rate=0.1, steps=100)
    eps = skellam_epsilon([SkellamRound(l2, l1, variance, 0.1, 100)], delta=1e-5)
    assert 0.99 * target <= eps <= target


def test_calibration_refuses_an_unreachable_target():
    with pytest.raises(ValueError, match="unreachable"):
        calibrate_skellam(target_epsilon=1e-6, delta=1e-5, l2=1.0, l1=1.0, sample_rate=1.0, steps=10_000)
