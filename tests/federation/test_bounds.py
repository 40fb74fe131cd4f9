"""Bounded payloads (issue 25): honest rounds stay inside the bounds, absurd finite values do not."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord

from fedlatent.config import RunConfig
from fedlatent.data.loading import load_dataset
from fedlatent.federation import payloads as P
from fedlatent.federation.bounds import ADAM_STEP, LATENT_MARGIN, TAIL, latent_bound, update_bounds
from fedlatent.learning.models import Encoder
from fedlatent.learning.seeding import generator
from fedlatent.learning.training import encode
from fedlatent.plan import build_classifier, dp_round_plan, dp_train_round, new_ledger, release_noise_std
from tests.federation.replies import SHAPES, contract, latents, reply_from, update


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_an_honest_dp_round_stays_inside_its_bound(optimizer: str) -> None:
    ds = load_dataset("digits")
    cfg = RunConfig.from_run_config({"mode": "raw", "epsilon": 3.0, "optimizer": optimizer, "lr": 0.5 if optimizer ==
                                     "sgd" else 0.01, "local-epochs": 2, "batch-size": 16})  # fmt: skip
    x, y = torch.from_numpy(ds.x_train[:300]), torch.from_numpy(ds.y_train[:300])
    linf, l2 = update_bounds(cfg, len(x), encoder=False)
    plan = dp_round_plan(cfg, len(x))
    if optimizer == "adam":
        assert linf == pytest.approx(ADAM_STEP * cfg.lr * plan.steps) and math.isinf(l2)
    model = build_classifier(cfg, ds)
    before = [p.detach().clone() for p in model.parameters()]
    _, trained = dp_train_round(cfg, model, x, y, ledger=new_ledger(cfg), generator=generator(0, 1))
    assert trained
    moved = max(float((p.detach() - b).abs().max()) for p, b in zip(model.parameters(), before, strict=True))
    assert 0 < moved <= linf, (moved, linf)
    assert moved > linf / 1e4  # a bound that is not absurdly loose either


def test_without_dp_the_update_norm_is_bounded_by_the_setting() -> None:
    assert update_bounds(RunConfig(), 100, encoder=False) == (math.inf, 1000.0)
    c = contract(update_bounds=lambda pid, phase: (math.inf, 10.0))
    sent = {k: np.zeros(s, np.float32) for k, s in SHAPES.items()}
    assert c.check(reply_from(1, update(np.ones((2, 3), np.float32), pid=0)), phase="classifier", rnd=1,
                   weights=SHAPES, sent=sent)[0] == 0  # fmt: skip
    for absurd in (np.finfo(np.float32).max, 1e3):
        w = np.ones((2, 3), np.float32)
        w[0, 0] = absurd
        with pytest.raises(P.PayloadError, match="max-update-norm"):
            c.check(reply_from(2, update(w, pid=1)), phase="classifier", rnd=1, weights=SHAPES, sent=sent)


def test_a_dp_update_moving_a_weight_beyond_an_honest_round_is_refused() -> None:
    c = contract(update_bounds=lambda pid, phase: (0.5, math.inf))
    sent = {k: np.zeros(s, np.float32) for k, s in SHAPES.items()}
    w = np.full((2, 3), 0.4, np.float32)
    assert c.check(reply_from(1, update(w, pid=0)), phase="classifier", rnd=1, weights=SHAPES, sent=sent)[0] == 0
    w[1, 2] = 3.0e38
    with pytest.raises(P.PayloadError, match="beyond the 0.5 an honest round can"):
        c.check(reply_from(2, update(w, pid=1)), phase="classifier", rnd=1, weights=SHAPES, sent=sent)


def test_latent_bounds_come_from_the_clip_and_noise_or_the_public_split() -> None:
    ds = load_dataset("digits")
    dp = RunConfig.from_run_config({"mode": "latent-share", "epsilon": 3.0})
    public = torch.from_numpy(ds.x_train[:100])
    assert latent_bound(dp, None, public) == pytest.approx(dp.latent_clip + TAIL * release_noise_std(dp))
    plain = RunConfig.from_run_config({"mode": "latent-share"})
    assert math.isinf(latent_bound(plain, None, public))  # a local encoder: the server's fit guards instead
    enc = Encoder(image_shape=(1, 8, 8), latent_dim=plain.feature_dim).eval()
    bound = latent_bound(plain, enc, public)
    assert bound == pytest.approx(LATENT_MARGIN * float(encode(enc, public).abs().max()))
    honest = encode(enc, torch.from_numpy(ds.x_train[100:120])).numpy()
    assert np.abs(honest).max() < bound  # private records of the same data stay far inside
    c = contract(sizes=(20, 20), latent_bound=bound)
    labels = np.zeros(20, np.int64)
    z = np.zeros((20, 4), np.float32)
    assert c.check(reply_from(1, latents(z, labels, pid=0, n=20)), phase="share-latents", rnd=0)[0] == 0
    z[0, :2] = np.finfo(np.float32).max  # finite, the right shape and dtype: refused by range
    with pytest.raises(P.PayloadError, match="bound"):
        c.check(reply_from(2, latents(z, labels, pid=1, n=20)), phase="share-latents", rnd=0)
    assert isinstance(P.pack_latents(z, labels), ArrayRecord)
