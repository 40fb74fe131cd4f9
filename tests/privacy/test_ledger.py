"""Tests for fedlatent.privacy.ledger: never overspends, pure ε included, state round-trips or fails clearly."""

from __future__ import annotations

import math

import pytest
from flwr.app import ConfigRecord
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from fedlatent.privacy.accounting import compose_epsilon
from fedlatent.privacy.ledger import BudgetExhausted, Ledger, LedgerStateError

# Small noise multipliers push Opacus' best RDP order to the end of its grid; it warns.
pytestmark = [pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")]

DELTA = 1e-5


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


def test_pure_epsilon_adds_to_the_accountant_and_is_pinned():
    """Randomized response's ε lives in the ledger too: spent() is the one source of a client's ε."""
    ledger = Ledger(budget=5.0, delta=DELTA)
    gaussian = compose_epsilon([(1.5, 1.0, 1)], delta=DELTA)
    assert gaussian == pytest.approx(2.98480004524568, rel=1e-9)  # Opacus 1.6 RDP, pinned
    spent = ledger.record(noise_multiplier=1.5, sample_rate=1.0, steps=1, pure_epsilon=2.0)
    assert spent == ledger.spent() == pytest.approx(4.98480004524568, rel=1e-9)
    assert ledger.pure == [2.0] and ledger.history == [(1.5, 1.0, 1)]
    # The same Gaussian event without the label ε would fit; with it the budget is exceeded.
    assert ledger.can_afford(noise_multiplier=100.0, sample_rate=1.0, steps=1)
    assert not ledger.can_afford(noise_multiplier=100.0, sample_rate=1.0, steps=1, pure_epsilon=0.1)
    with pytest.raises(BudgetExhausted, match="pure epsilon=0.1"):
        ledger.record(noise_multiplier=100.0, sample_rate=1.0, steps=1, pure_epsilon=0.1)
    assert ledger.pure == [2.0]
    restored = Ledger.from_config(ConfigRecord(ledger.to_config()))
    assert restored == ledger and restored.spent() == spent
    with pytest.raises(ValueError, match="pure_epsilon"):
        ledger.record(noise_multiplier=1.0, sample_rate=1.0, steps=1, pure_epsilon=-1.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.pop("budget"), "lacks budget"),
        (lambda c: c.pop("pure_epsilons"), "lacks pure_epsilons"),
        (lambda c: c.update(steps=[1, 2]), "malformed"),
        (lambda c: c.update(budget="lots"), "malformed"),
        (lambda c: c.update(noise_multipliers=None), "malformed"),
    ],
)
def test_a_bad_ledger_state_is_a_clear_error(change, message):
    config = Ledger(budget=3.0, delta=DELTA, history=[(1.0, 0.1, 10)]).to_config()
    change(config)
    with pytest.raises(LedgerStateError, match=message):
        Ledger.from_config(config)


def test_skellam_rounds_compose_with_gaussian_events_refuse_and_round_trip():
    from fedlatent.privacy.skellam import SkellamRound, skellam_epsilon

    step = SkellamRound(2000.0, 2000.0 * 60, (4.0 * 2000.0) ** 2, 0.1, 50)
    ledger = Ledger(budget=2.0, delta=DELTA)
    alone = ledger.record_skellam(step)
    assert alone == pytest.approx(skellam_epsilon([step], delta=DELTA))
    ledger.record(noise_multiplier=3.0, sample_rate=0.05, steps=100)
    both = ledger.spent()
    assert both > alone  # the Gaussian rounds compose with the Skellam ones
    assert both < alone + compose_epsilon([(3.0, 0.05, 100)], delta=DELTA)  # in RDP, tighter than adding
    again = Ledger.from_config(ConfigRecord(ledger.to_config()))
    assert again.skellam == ledger.skellam and again.spent() == both
    while ledger.can_afford_skellam(step):
        ledger.record_skellam(step)
    with pytest.raises(BudgetExhausted, match="distributed round"):
        ledger.record_skellam(step)
    assert ledger.spent() <= 2.0
    with pytest.raises(ValueError, match="rdp"):
        Ledger(budget=2.0, delta=DELTA, accountant="prv", skellam=[step])


def test_ledgers_written_before_distributed_dp_still_load():
    state = Ledger(budget=1.0, delta=DELTA).to_config()
    old = {k: v for k, v in state.items() if not k.startswith("skellam")}
    assert Ledger.from_config(old).skellam == []
