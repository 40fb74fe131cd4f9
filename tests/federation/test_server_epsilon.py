"""The server's own ε (issue 25): recomputed from the plan, equal to an honest client's, never a reply's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from flwr.app import MetricRecord, RecordDict

from fedlatent.config import RunConfig
from fedlatent.federation import payloads as P
from fedlatent.federation.privacy_log import PrivacyLog
from fedlatent.federation.report import privacy_summary
from fedlatent.federation.server_epsilon import ServerAccountant
from fedlatent.plan import dp_round_plan, new_ledger, release_noise_std
from fedlatent.privacy.client import release_latents
from tests.federation.replies import SHAPES, contract, reply_from, update

SIZES = (10, 30, 20, 20, 20, 20)  # as tests.federation.replies
GOOD = np.ones((2, 3), np.float32)
CFG = RunConfig.from_run_config({"mode": "raw", "num-clients": 6, "epsilon": 3.0, "rounds": 4, "batch-size": 5})


def honest_epsilon(cfg: RunConfig, n: int, rounds: int) -> float:
    """What a client's own ledger says after ``rounds`` DP-SGD rounds of the plan."""
    ledger, plan = new_ledger(cfg), dp_round_plan(cfg, n)
    for _ in range(rounds):
        ledger.record(noise_multiplier=plan.noise_multiplier, sample_rate=plan.sample_rate, steps=plan.steps)
    return ledger.spent()


def dp_reply(pid: int, spent: float, z: float) -> RecordDict:
    content = update(GOOD, pid=pid)
    metrics = dict(content.metric_records[P.METRICS])
    metrics.pop("train-loss")
    content[P.METRICS] = MetricRecord({**metrics, "epsilon-spent": spent, "noise-multiplier": z})
    return content


def checked_contract(privacy: PrivacyLog):
    accountant = ServerAccountant(CFG, SIZES)
    c = contract(epsilon=3.0, dp_phases=frozenset({"classifier"}))
    c.claims = lambda pid, phase, values: accountant.check(pid, phase, values, privacy)
    return c


def test_the_servers_epsilon_is_the_honest_clients_own() -> None:
    accountant, privacy = ServerAccountant(CFG, SIZES), PrivacyLog(known={1: ["classifier"] * 3})
    assert accountant.published(privacy)[1] == honest_epsilon(CFG, SIZES[1], 3)
    assert accountant.published(privacy)[0] == 0.0  # took part in nothing
    assert 2.9 < accountant.published(PrivacyLog(known={1: ["classifier"] * 4}))[1] <= 3.0  # the planned rounds


@pytest.mark.parametrize(
    ("spent", "z_factor", "match"),
    [
        (0.0, 1.0, "epsilon-spent"),  # 0 after a trained round
        ("down", 1.0, "epsilon-spent"),  # less than the round before
        ("honest", 0.5, "noise-multiplier"),  # half the noise claimed
        ("honest", 0.0, "noise-multiplier"),
    ],
)
def test_a_reply_whose_privacy_figures_disagree_is_refused_as_dishonest(spent, z_factor, match) -> None:
    privacy = PrivacyLog(known={1: ["classifier"]})
    z = dp_round_plan(CFG, SIZES[1]).noise_multiplier
    honest = honest_epsilon(CFG, SIZES[1], 2)
    claim = {"honest": honest, "down": honest_epsilon(CFG, SIZES[1], 1) * 0.5}.get(spent, spent)
    with pytest.raises(P.PayloadError, match=f"dishonest: {match}"):
        checked_contract(privacy).check(
            reply_from(7, dp_reply(1, claim, z * z_factor)), phase="classifier", rnd=2, weights=SHAPES
        )
    pid, _ = checked_contract(privacy).check(
        reply_from(7, dp_reply(1, honest, z)), phase="classifier", rnd=2, weights=SHAPES
    )
    assert pid == 1


def test_a_round_without_an_answer_may_have_been_trained_and_is_published() -> None:
    z = dp_round_plan(CFG, SIZES[1]).noise_multiplier
    privacy = PrivacyLog(known={1: ["classifier"]}, possible={1: ["classifier"]})
    # Round 2's reply was lost; in round 3 the client may have trained 2 or 3 times: both honest.
    for rounds in (2, 3):
        checked_contract(privacy).check(
            reply_from(7, dp_reply(1, honest_epsilon(CFG, SIZES[1], rounds), z)),
            phase="classifier",
            rnd=3,
            weights=SHAPES,
        )
    with pytest.raises(P.PayloadError, match="dishonest"):
        checked_contract(privacy).check(
            reply_from(7, dp_reply(1, honest_epsilon(CFG, SIZES[1], 4), z)), phase="classifier", rnd=3, weights=SHAPES
        )
    # The published figure counts the unanswered round: never below what the client spent.
    assert ServerAccountant(CFG, SIZES).published(privacy)[1] == honest_epsilon(CFG, SIZES[1], 2)


def test_the_latent_release_and_the_summary_are_the_servers() -> None:
    cfg = RunConfig.from_run_config({"mode": "latent-share", "num-clients": 2, "epsilon": 3.0, "label-epsilon": 1.0})
    ledger = new_ledger(cfg)
    out = release_latents(
        torch.randn(20, cfg.feature_dim), torch.zeros(20, dtype=torch.int64), clip=cfg.latent_clip,
        noise_std=release_noise_std(cfg), label_epsilon=1.0, num_classes=10, ledger=ledger,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert out is not None
    sizes = (20, 20)
    privacy = PrivacyLog(known={0: ["share-latents"]})
    summary = privacy_summary(cfg, privacy, sizes)
    assert summary["epsilon_per_client"]["0"] == pytest.approx(out[2]["epsilon-spent"], rel=1e-9)
    assert summary["epsilon_per_client"]["1"] == 0.0  # it released nothing
    assert summary["noise_multiplier_per_client"] == {"0": pytest.approx(out[2]["noise-multiplier"])}
    assert math.isclose(summary["epsilon"], out[2]["epsilon-spent"], rel_tol=1e-9)
