"""Every mode x encoder through the real Flower simulation (``flwr run``) on digits.

One private SuperLink serves the whole session; each combination runs once (the ``runs``
fixture of conftest.py) and several tests, here and in test_attacks_run.py, read its run
directory.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import COMBOS, FAST, Runs
from contract import RESULT_FIELDS

from fedlatent.config import RunConfig
from fedlatent.data.loading import FASHION_MNIST_DEBIAN_DIR
from fedlatent.federation.server_view import load_server_view
from fedlatent.launch.superlink import FederationError, LocalSuperLink
from fedlatent.plan import make_plan
from fedlatent.runs import app_dir

pytestmark = pytest.mark.slow


def _results(run: Path) -> dict[str, Any]:
    return json.loads((run / "results.json").read_text())


@pytest.mark.parametrize(("mode", "encoder"), COMBOS)
def test_every_mode_and_encoder_learns(runs: Runs, mode: str, encoder: str) -> None:
    res = _results(runs[mode, encoder])
    assert RESULT_FIELDS <= set(res)
    assert res["mode"] == mode and res["num_clients"] == 2 and res["rounds"] == 2
    assert res["accuracy"] > 0.5, res  # chance is 0.1
    assert res["epsilon"] is None and res["end_to_end_dp"] is False
    assert res["bytes_uploaded"] > 0 and res["bytes_downloaded"] > 0
    if encoder == "local" and mode != "raw":
        assert set(res["accuracy_per_client"]) == {"0", "1"}
        assert res["accuracy"] == pytest.approx(np.mean(list(res["accuracy_per_client"].values())))
    run = runs[mode, encoder]
    view = load_server_view(run / "server_view")
    assert "final_model.npz" in view
    assert ("encoder.npz" in view) == (mode != "raw" and encoder != "local")  # the server never holds a local one
    assert not view["manifest"]["rejected"]
    index = [np.load(p) for p in sorted((run / "private_index").glob("client_*.npy"))]
    assert len(index) == 2 and not set(index[0]) & set(index[1])
    assert not set(np.concatenate(index)) & set(view["public_index"])


def _contains_rows(array: np.ndarray, rows: set[bytes], width: int) -> bool:
    if array.size % width:
        return False
    flat = np.ascontiguousarray(array.reshape(-1, width), dtype=np.float32)
    return any(r.tobytes() in rows for r in flat)


def test_row_detector_finds_a_planted_image() -> None:
    image = np.arange(64, dtype=np.float32) / 64
    assert _contains_rows(np.stack([np.zeros(64, np.float32), image]), {image.tobytes()}, 64)
    assert not _contains_rows(np.zeros((3, 64), np.float32), {image.tobytes()}, 64)


@pytest.mark.parametrize(("mode", "encoder"), [c for c in COMBOS if c[0] != "raw"])
def test_no_raw_image_reaches_the_server(runs: Runs, mode: str, encoder: str) -> None:
    run = runs[mode, encoder]
    cfg = RunConfig.from_run_config({**FAST, "mode": mode, "encoder": encoder})
    plan = make_plan(cfg)
    private = np.concatenate(plan.client_idx)
    images = plan.dataset.x_train[private].reshape(len(private), -1).astype(np.float32)
    rows = {r.tobytes() for r in images}
    view = load_server_view(run / "server_view")
    received = {k: v for k, v in view.items() if k.startswith(("received/", "latents/"))}
    assert received, "the server view records what was received"
    for name, arrays in received.items():
        for key, array in arrays.items():
            assert array.shape[-2:] != (8, 8), f"{name}:{key} is image-shaped"
            assert not _contains_rows(array, rows, images.shape[1]), f"{name}:{key} holds a private image"
    if mode == "latent-share":
        shared = np.concatenate([v["latents"] for k, v in received.items() if k.startswith("latents/")])
        assert shared.shape == (len(private), cfg.feature_dim)


@pytest.mark.skipif(not Path(FASHION_MNIST_DEBIAN_DIR).is_dir(), reason="Debian's dataset-fashion-mnist not installed")
def test_fashion_mnist_slice(link: LocalSuperLink, tmp_path: Path) -> None:
    cfg = {
        "dataset": "fashion-mnist",
        "max-train": 3000,
        "num-clients": 2,
        "rounds": 2,
        "ae-epochs": 30,
        "mode": "latent-fedavg",
        "encoder": "public",
        "out-dir": str(tmp_path),
    }
    link.run(app_dir(), run_config=cfg, num_supernodes=2, timeout=900)
    res = _results(tmp_path)
    assert res["dataset"] == "fashion-mnist" and res["records"]["test"] == 10000
    assert res["accuracy"] > 0.6, res


def test_bad_config_value_fails_the_run_naming_the_key(link: LocalSuperLink, tmp_path: Path) -> None:
    with pytest.raises(FederationError, match="alpha"):
        link.run(app_dir(), run_config={**FAST, "alpha": -1.0, "out-dir": str(tmp_path)}, num_supernodes=2, timeout=300)
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize(
    ("mode", "encoder", "extra", "end_to_end"),
    [
        # Client-level DP (Flower's server-side clipping) on top, reported apart; its noise is
        # tiny because with 2 clients any useful multiplier drowns the model.
        ("raw", "public", {"client-dp-noise": 1e-4, "client-dp-clip": 10.0}, True),
        # A DP-trained federated encoder composes with the classifier's DP-SGD in one ledger
        # (DP-SGD through the autoencoder is costly: few epochs, it needs only to be tested).
        ("latent-fedavg", "federated", {"encoder-epsilon": 1.0, "ae-epochs": 2}, True),
        ("latent-share", "public", {"label-epsilon": 2.0}, True),
        ("latent-fedavg", "local", {}, False),  # a private encoder trained without DP breaks the guarantee
    ],
)
def test_dp_run_stays_within_budget(
    link: LocalSuperLink, tmp_path: Path, mode: str, encoder: str, extra: dict[str, float], end_to_end: bool
) -> None:
    cfg = {**FAST, "mode": mode, "encoder": encoder, "epsilon": 3.0, "out-dir": str(tmp_path), **extra}
    link.run(app_dir(), run_config=cfg, num_supernodes=2, timeout=900)
    res = _results(tmp_path)
    assert res["delta"] == 1e-5 and res["accountant"] == "rdp" and res["noise_multiplier"] > 0
    assert set(res["epsilon_per_client"]) == {"0", "1"}
    budget = 3.0 + extra.get("label-epsilon", 0.0)
    assert all(0 < e <= budget for e in res["epsilon_per_client"].values()), res["epsilon_per_client"]
    assert res["epsilon"] == max(res["epsilon_per_client"].values())
    assert res["end_to_end_dp"] is end_to_end and not res["refusals"]
    # The published ε is the server's own, and an honest client's ledger says the same: no reply refused.
    assert res["rejected_replies"]["total"] == 0, res["rejected_replies"]
    lines = (tmp_path / "server_view" / "metrics.jsonl").read_text().splitlines()
    claimed = {int(m["metrics"]["partition-id"]): m["metrics"]["epsilon-spent"] for line in lines
               if "epsilon-spent" in (m := json.loads(line))["metrics"]}  # fmt: skip
    assert claimed.keys() == {0, 1}
    assert all(math.isclose(res["epsilon_per_client"][str(p)], e, rel_tol=1e-9) for p, e in claimed.items())
    # DP-SGD at this size costs accuracy; it must still learn something. Not asserted: a 2-epoch DP
    # encoder (only its accounting is tested), and latent-share at epsilon 3 + label-epsilon 2 on
    # 1,150 digits records, which sits at chance (0.117 mean over 11 draws of its secret noise;
    # this test passed at 0.195 only while the noise came from the public seed).
    if "encoder-epsilon" not in extra and mode != "latent-share":
        assert res["accuracy"] > 0.15, res
    client_level = res["client_level_dp"]
    if "client-dp-noise" in extra:
        assert client_level["releases"] == FAST["rounds"] and client_level["epsilon"] > 0
        assert client_level["effective_noise_multipliers"] == [extra["client-dp-noise"]] * FAST["rounds"]
    else:
        assert client_level is None
    if "encoder-epsilon" in extra:
        assert "encoder-epsilon=1.0" in res["privacy_note"]
        metrics = [json.loads(line) for line in (tmp_path / "server_view" / "metrics.jsonl").read_text().splitlines()]
        encoder_eps = [m["metrics"]["epsilon-spent"] for m in metrics if m["phase"] == "encoder"]
        assert len(encoder_eps) == 2 * FAST["encoder-rounds"] and 0 < max(encoder_eps) <= 1.0


def test_public_only_is_a_run_that_asks_no_client(link: LocalSuperLink, tmp_path: Path) -> None:
    from fedlatent.baselines import public_only

    cfg = {**FAST, "mode": "public-only", "encoder": "public", "out-dir": str(tmp_path)}
    link.run(app_dir(), run_config=cfg, num_supernodes=FAST["num-clients"], timeout=600)
    res = _results(tmp_path)
    assert res["bytes_uploaded"] == 0 and res["bytes_downloaded"] == 0  # no message to any client
    assert res["epsilon"] == 0.0 and res["end_to_end_dp"] is True and set(res["epsilon_per_client"]) == {"0", "1"}
    bar = res["public_only"]
    assert res["accuracy"] == max(bar["image_classifier"], bar["latent_classifier"], bar["scatter_classifier"]) > 0.5
    local = public_only(RunConfig.from_run_config({k: v for k, v in cfg.items() if k != "out-dir"}))
    assert local["image_classifier"] == pytest.approx(bar["image_classifier"], abs=0.02)  # same bar in-process
    view = load_server_view(tmp_path / "server_view")
    assert "final_model.npz" in view and not any(k.startswith(("received/", "latents/")) for k in view)
