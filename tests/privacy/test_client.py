"""Client-side DP: calibrated rounds fit the budget, the next one is refused, state persists."""

from __future__ import annotations

import math

import pytest
import torch
from flwr.app import ConfigRecord, RecordDict

from fedlatent.config import RunConfig
from fedlatent.federation.privacy_log import PrivacyLog
from fedlatent.federation.report import privacy_summary
from fedlatent.learning.models import Autoencoder, LatentClassifier
from fedlatent.plan import dp_round_plan, dp_train_round, new_ledger, release_noise_std
from fedlatent.privacy import client as dp
from fedlatent.privacy.accounting import compose_epsilon, dp_sgd_epsilon
from fedlatent.privacy.ledger import Ledger


def cfg_of(**kw: object) -> RunConfig:
    base = {"epsilon": 3.0, "rounds": 3, "local-epochs": 1, "batch-size": 16, "mode": "latent-fedavg"}
    return RunConfig.from_run_config({**base, **kw})


def blobs(n: int = 120) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 3
    return torch.eye(32)[y] * 4 + 0.3 * torch.randn(n, 32, generator=g), y


def train(model, x, y, cfg, ledger, seed, *, encoder=False):
    """One client round as the ClientApp runs it (``plan.dp_train_round``)."""
    return dp_train_round(
        cfg, model, x, y, ledger=ledger, generator=torch.Generator().manual_seed(seed), encoder=encoder
    )


def load(state: RecordDict, cfg: RunConfig) -> Ledger:
    """The ledger as a fresh ClientApp process finds it in its state (or a new one)."""
    return Ledger.from_config(state.config_records["dp"]) if "dp" in state.config_records else new_ledger(cfg)


def test_plan_spends_the_budget_over_the_planned_rounds() -> None:
    cfg = cfg_of()
    plan = dp_round_plan(cfg, 120)
    assert plan.sample_rate == pytest.approx(16 / 120)
    eps = dp_sgd_epsilon(
        noise_multiplier=plan.noise_multiplier, sample_rate=plan.sample_rate, steps=plan.steps * cfg.rounds, delta=1e-5
    )
    assert 0.99 * 3.0 <= eps <= 3.0


def test_delta_must_be_below_one_over_n() -> None:
    with pytest.raises(ValueError, match="delta"):
        dp_round_plan(cfg_of(delta=0.05), 100)


def test_rounds_until_the_budget_is_spent_then_refusal_and_state_survives() -> None:
    cfg = cfg_of()
    x, y = blobs()
    state = RecordDict()
    spent = []
    for rnd in range(cfg.rounds + 1):
        ledger = load(state, cfg)  # a fresh process each round: state is all that persists
        model = LatentClassifier(latent_dim=32, num_classes=3)
        before = [p.clone() for p in model.parameters()]
        metrics, trained = train(model, x, y, cfg, ledger, rnd)
        state["dp"] = ConfigRecord(ledger.to_config())
        if rnd < cfg.rounds:
            assert trained and "train-loss" not in metrics
            spent.append(metrics["epsilon-spent"])
        else:
            assert not trained and metrics["refused"] == 1
            assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert spent == sorted(spent) and spent[-1] <= cfg.epsilon
    assert load(state, cfg).spent() == pytest.approx(spent[-1])


def test_latent_release_clips_adds_noise_and_releases_once() -> None:
    cfg = cfg_of(mode="latent-share", epsilon=8.0, **{"latent-clip": 1.0, "label-epsilon": 2.0})
    z, y = blobs(2000)
    ledger = new_ledger(cfg)
    assert ledger.budget == 10.0  # the labels' ε adds to the latents' budget

    def release(gen: torch.Generator):
        return dp.release_latents(
            z, y, clip=cfg.latent_clip, noise_std=release_noise_std(cfg), label_epsilon=cfg.label_epsilon,
            num_classes=3, ledger=ledger, generator=gen,
        )  # fmt: skip

    released = release(torch.Generator().manual_seed(1))
    assert released is not None
    noisy, labels, metrics = released
    # The ledger is the one source of the ε reported: latents (calibrated to 8) plus the labels' 2.
    latent_eps = compose_epsilon([(metrics["noise-multiplier"], 1.0, 1)], delta=cfg.delta)
    assert 0.99 * 8.0 <= latent_eps <= 8.0
    assert metrics["epsilon-spent"] == ledger.spent() == pytest.approx(latent_eps + 2.0, rel=1e-12)
    assert ledger.pure == [2.0]
    assert (noisy - z / z.norm(dim=1, keepdim=True)).std().item() == pytest.approx(metrics["noise-std"], rel=0.05)
    keep = math.exp(2.0) / (math.exp(2.0) + 2)
    assert (labels == y).float().mean().item() == pytest.approx(keep, abs=0.04)
    assert release(torch.Generator()) is None


@pytest.mark.parametrize(
    ("kw", "end_to_end"),
    [
        ({"mode": "raw"}, True),
        ({"encoder": "public"}, True),
        ({"encoder": "federated"}, False),
        ({"encoder": "federated", "encoder-epsilon": 1.0}, True),
        ({"mode": "latent-share", "encoder": "federated", "encoder-epsilon": 1.0, "label-epsilon": 1.0}, True),
        ({"encoder": "local"}, False),
        ({"mode": "latent-share"}, False),  # labels in clear
        ({"mode": "latent-share", "label-epsilon": 1.0}, True),
        ({"epsilon": math.inf}, False),
    ],
)
def test_end_to_end_dp_only_when_every_step_is_private(kw: dict[str, object], end_to_end: bool) -> None:
    cfg = cfg_of(**{"num-clients": 2, **kw})
    phase = "share-latents" if cfg.mode == "latent-share" else "classifier"
    log = PrivacyLog(known={0: [phase], 1: [phase, phase]})  # the server's record: 1 and 2 releases
    summary = privacy_summary(cfg, log, [200, 200])
    assert summary["end_to_end_dp"] is end_to_end
    if cfg.dp:
        per_client = summary["epsilon_per_client"]
        assert 0 < per_client["0"] < per_client["1"] and summary["epsilon"] == per_client["1"]
        encoder_not_dp = not end_to_end and kw.get("mode") != "latent-share"
        assert ("NOT differential privacy" in summary["privacy_note"]) == encoder_not_dp
    else:
        assert summary["epsilon"] is None


def test_dp_encoder_rounds_spend_encoder_epsilon_and_leave_the_rest() -> None:
    cfg = cfg_of(**{"encoder": "federated", "encoder-epsilon": 1.0, "encoder-rounds": 2, "ae-epochs": 1})
    assert cfg.encoder_dp and cfg.classifier_epsilon == pytest.approx(2.0)
    ledger = new_ledger(cfg)
    x = torch.rand(120, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.zeros(120, dtype=torch.long)
    ae = Autoencoder(image_shape=(1, 8, 8), latent_dim=4)
    before = [p.clone() for p in ae.parameters()]
    for rnd in range(cfg.encoder_rounds):
        metrics, trained = train(ae, x, y, cfg, ledger, rnd, encoder=True)
        assert trained and metrics["epsilon-spent"] <= 1.0
    assert 0.99 <= ledger.spent() <= 1.0  # the encoder's share, calibrated, never above
    assert any(not torch.equal(a, b) for a, b in zip(before, ae.parameters(), strict=True))
    xs, ys = blobs()
    model = LatentClassifier(latent_dim=32, num_classes=3)
    for rnd in range(cfg.rounds):  # the classifier's rounds fit what is left
        _, trained = train(model, xs, ys, cfg, ledger, rnd)
        assert trained
    assert ledger.spent() <= 3.0
    # Unplanned extra encoder rounds fit while the composed total does (RDP composes below the
    # sum of the shares); book them without training, then the next real one is refused.
    plan = dp_round_plan(cfg, len(x), encoder=True)
    event = {"noise_multiplier": plan.noise_multiplier, "sample_rate": plan.sample_rate, "steps": plan.steps}
    while ledger.can_afford(**event):
        ledger.record(**event)
    spent = ledger.spent()
    assert spent <= 3.0
    metrics, trained = train(ae, x, y, cfg, ledger, 9, encoder=True)
    assert not trained and metrics["refused"] == 1 and ledger.spent() == spent


def test_encoder_epsilon_rules() -> None:
    from fedlatent.config import ConfigError

    with pytest.raises(ConfigError, match="encoder-epsilon"):
        cfg_of(**{"encoder": "public", "encoder-epsilon": 1.0})
    with pytest.raises(ConfigError, match="below 'epsilon'"):
        cfg_of(**{"encoder": "federated", "encoder-epsilon": 3.0})
    with pytest.raises(ConfigError, match="client-dp-noise"):
        cfg_of(**{"mode": "latent-share", "client-dp-noise": 1.0})
