"""Tests for fedlatent.baselines: the public-only bar trains on the public split alone."""

from __future__ import annotations

import pytest

from fedlatent.baselines import public_only
from fedlatent.config import RunConfig

SMALL = {"dataset": "digits", "num-clients": 4, "rounds": 2, "local-epochs": 5, "ae-epochs": 20}


def test_the_bar_is_the_better_public_classifier() -> None:
    out = public_only(RunConfig.from_run_config(SMALL))
    assert out["public_records"] == 288 and out["epochs"] == 30  # rounds x local-epochs = 10, the floor is 30
    assert out["image_classifier"] > 0.5 and out["latent_classifier"] is not None  # 287 labelled digits suffice
    assert out["scatter_classifier"] > 0.5  # ScatterNet features of the public images: free, data-free
    assert out["accuracy"] == max(out["image_classifier"], out["latent_classifier"], out["scatter_classifier"])
    raw_only = public_only(RunConfig.from_run_config({**SMALL, "encoder": "local"}))
    assert raw_only["latent_classifier"] is None
    assert raw_only["accuracy"] == max(raw_only["image_classifier"], raw_only["scatter_classifier"])
    long = public_only(RunConfig.from_run_config({**SMALL, "rounds": 8}))
    assert long["epochs"] == 40  # a longer federation trains its bar as long
    with pytest.raises(ValueError, match="no public split"):
        public_only(RunConfig.from_run_config({**SMALL, "public-fraction": 0.0}))


def test_without_public_labels_the_bar_is_chance_and_nothing_is_trained() -> None:
    out = public_only(RunConfig.from_run_config({**SMALL, "public-labels": False}))
    assert out["accuracy"] == 0.1 and out["chance"] is True and out["epochs"] == 0
    assert out["image_classifier"] is None and out["latent_classifier"] is None and out["scatter_classifier"] is None


def test_without_public_labels_the_encoder_learns_from_images_only() -> None:
    cfg = RunConfig.from_run_config({**SMALL, "ae-labels": 1.0, "public-labels": False})
    assert cfg.ae_labels == 1.0 and cfg.public_label_weight == 0.0
    assert RunConfig.from_run_config({**SMALL, "ae-labels": 1.0}).public_label_weight == 1.0
