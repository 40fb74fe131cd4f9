"""Tests for fedlatent.plan: every party derives the same plan and models from the config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedlatent.config import ConfigError, RunConfig
from fedlatent.learning.models import Autoencoder, ImageClassifier, LatentClassifier
from fedlatent.plan import build_autoencoder, build_classifier, make_plan
from fedlatent.preflight import preflight

SMALL = {"dataset": "digits", "num-clients": 4, "latent-dim": 8, "seed": 3, "max-train": 400}


def cfg_of(**over) -> RunConfig:
    return RunConfig.from_run_config(SMALL | {k.replace("_", "-"): v for k, v in over.items()})


@pytest.fixture(scope="module")
def plan():
    return make_plan(cfg_of())


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_make_plan_is_deterministic(plan):
    again = make_plan(cfg_of())
    np.testing.assert_array_equal(plan.public_idx, again.public_idx)
    assert len(plan.client_idx) == len(again.client_idx) == 4
    for a, b in zip(plan.client_idx, again.client_idx, strict=True):
        np.testing.assert_array_equal(a, b)


def test_seed_changes_plan(plan):
    other = make_plan(cfg_of(seed=4))
    assert not np.array_equal(plan.public_idx, other.public_idx)


def test_partitions_disjoint_and_cover_private(plan):
    n = len(plan.dataset.y_train)
    assert n == 400
    public = set(plan.public_idx.tolist())
    assert len(public) == len(plan.public_idx) == round(0.2 * n)
    seen: set[int] = set()
    for part in plan.client_idx:
        assert len(part) > 0
        part_set = set(part.tolist())
        assert len(part_set) == len(part)
        assert not part_set & public
        assert not part_set & seen
        seen |= part_set
    assert seen | public == set(range(n))


def test_plan_accessors(plan):
    x, y = plan.client(1)
    np.testing.assert_array_equal(x.numpy(), plan.dataset.x_train[plan.client_idx[1]])
    np.testing.assert_array_equal(y.numpy(), plan.dataset.y_train[plan.client_idx[1]])
    px, py = plan.public()
    assert px.shape == (len(plan.public_idx), 1, 8, 8) and py.dtype == torch.int64
    tx, ty = plan.test()
    assert tx.shape[1:] == (1, 8, 8) and len(tx) == len(ty) == len(plan.dataset.y_test)


def test_build_models_reproducible_and_rng_neutral(plan):
    ds = plan.dataset
    cfg = cfg_of()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    ae1 = build_autoencoder(cfg, ds)
    clf1 = build_classifier(cfg, ds)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(456)  # a different global state must not matter
    ae2 = build_autoencoder(cfg, ds)
    clf2 = build_classifier(cfg, ds)
    assert isinstance(ae1, Autoencoder) and isinstance(clf1, LatentClassifier)
    assert same_weights(ae1, ae2)
    assert same_weights(clf1, clf2)
    other = cfg_of(seed=4)
    assert not same_weights(ae1, build_autoencoder(other, ds))
    assert not same_weights(clf1, build_classifier(other, ds))


def test_build_classifier_by_mode(plan):
    ds = plan.dataset
    raw = build_classifier(cfg_of(mode="raw", classifier_arch="cnn"), ds)
    assert isinstance(raw, ImageClassifier)
    assert raw(torch.from_numpy(ds.x_test[:2])).shape == (2, 10)
    latent = build_classifier(cfg_of(mode="latent-share"), ds)
    assert latent(torch.zeros(2, 8)).shape == (2, 10)
    ae = build_autoencoder(cfg_of(ae_arch="conv"), ds)
    assert ae.encoder(torch.from_numpy(ds.x_test[:2])).shape == (2, 8)


@pytest.mark.parametrize(
    ("kw", "learner"),
    [
        ({"epsilon": 3.0}, "lda"),  # auto under DP
        ({"epsilon": 3.0, "server-learner": "mlp"}, "mlp"),
        ({"epsilon": 3.0, "server-learner": "class-mean"}, "class-mean"),
        ({"server-learner": "lda"}, "lda"),  # no DP: nothing is clipped
        ({}, "mlp"),  # auto without DP: the plain latent MLP
    ],
)
def test_latent_share_model_is_the_server_learners_structure(plan, kw: dict[str, object], learner: str) -> None:
    from fedlatent.plan import share_clip
    from fedlatent.privacy.learners import ClippedClassifier, fit_server_learner

    cfg = RunConfig.from_run_config({"mode": "latent-share", "latent-dim": 8, "server-epochs": 1, **kw})
    assert cfg.learner == learner
    model = build_classifier(cfg, plan.dataset)
    if not kw:
        assert isinstance(model, LatentClassifier)
        return
    assert isinstance(model, ClippedClassifier)
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(200, 8, generator=g), torch.arange(200) % 10
    noise = 0.5 if cfg.dp else 0.0
    fitted = fit_server_learner(
        z, y, kind=learner, num_classes=10, clip=share_clip(cfg), noise_std=noise, epochs=1, generator=g
    )
    model.load_state_dict(fitted.state_dict())  # strict: same keys and shapes, so it travels as weights
    torch.testing.assert_close(model(z), fitted(z))
    big = 1e6 * z[:3]
    if cfg.dp:  # inputs are clipped to latent-clip, as the release was
        torch.testing.assert_close(model(big), model(big / 10))


def test_public_autoencoder_is_cached_on_its_settings(tmp_path) -> None:
    from fedlatent.plan import public_autoencoder

    cfg = RunConfig.from_run_config({"ae-epochs": 2, "latent-dim": 4, "num-clients": 2, "cache-dir": str(tmp_path)})
    plan = make_plan(cfg)
    ae, loss, hit = public_autoencoder(cfg, plan)
    again, loss2, hit2 = public_autoencoder(cfg, plan)
    assert (hit, hit2) == (False, True) and loss == loss2
    for a, b in zip(ae.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    hybrid = RunConfig.from_run_config({**cfg.to_run_config(), "ae-labels": 1.0})
    _, _, hit3 = public_autoencoder(hybrid, plan)  # another objective: another entry
    assert hit3 is False and len(list(tmp_path.glob("public-autoencoder-*.pt"))) == 2


def test_a_client_message_neither_decodes_nor_partitions_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """What every ClientApp message does (make_plan) costs one decode per process and one split per config."""
    from fedlatent import plan as plan_module
    from fedlatent.data import store

    decodes: list[str] = []
    real = store.load_dataset
    monkeypatch.setattr(store, "DECODED", store.Memo(capacity=2))
    monkeypatch.setattr(plan_module, "PLANS", store.Memo(capacity=2))
    monkeypatch.setattr(store, "load_dataset", lambda name, **kw: decodes.append(name) or real(name, **kw))
    first = make_plan(cfg_of())
    assert all(make_plan(cfg_of()) is first for _ in range(5))  # five more messages: looked up
    other = make_plan(cfg_of(seed=4))  # another split of the same data: no decode
    assert decodes == ["digits"] and other.dataset is first.dataset
    assert not np.array_equal(other.public_idx, first.public_idx)
    assert (plan_module.PLANS.hits, plan_module.PLANS.misses) == (5, 2)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"mode": "latent-share", "epsilon": 3.0, "delta": 0.5}, "'delta' = 0.5: must be below 1/records"),
        ({"mode": "raw", "epsilon": 3.0, "delta": 0.01}, "smallest client"),
        ({"mode": "raw", "epsilon": 1e-4}, "'epsilon' = 0.0001 cannot be met"),
    ],
)
def test_preflight_refuses_settings_every_client_would_fail_on(keys: dict, message: str) -> None:
    cfg = RunConfig.from_run_config({"dataset": "digits", "num-clients": 10, **keys})
    with pytest.raises(ConfigError, match=message):
        preflight(cfg)


def test_preflight_passes_sound_settings() -> None:
    for mode in ("raw", "latent-fedavg", "latent-share", "public-only"):
        preflight(RunConfig.from_run_config({"dataset": "digits", "num-clients": 10, "mode": mode}))
    preflight(RunConfig.from_run_config({"dataset": "digits", "num-clients": 10, "mode": "raw", "epsilon": 3.0}))


def test_the_cli_reports_preflight_and_data_errors_in_one_line(tmp_path, capsys) -> None:
    from fedlatent.cli import main

    assert (
        main(["run", "--mode", "latent-share", "--epsilon", "3", "--delta", "0.5", "--out", str(tmp_path / "a")]) == 2
    )
    assert main(["run", "--dataset", "mnist-5k", "--data-dir", str(tmp_path), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "must be below 1/records" in err and "mnist_5k.csv.gz" in err and "Traceback" not in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
