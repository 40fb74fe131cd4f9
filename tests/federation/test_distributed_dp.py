"""Distributed DP through Flower's SecAgg+ in a real simulation: only sums reach the server, dropouts accounted.

Four digits clients, ScatterNet features and a linear classifier, six distributed DP-SGD rounds at
ε = 3, one client allowed to drop per round (``secagg-max-dropouts``), and fault injection that
crashes one client in every round: each round's sum must hold exactly the three survivors, the
server's ε of each client must compose the rounds it was in, and the server view must hold the
sums and no client's vector.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedlatent.config import RunConfig
from fedlatent.launch.superlink import LocalSuperLink
from fedlatent.plan import make_plan
from fedlatent.runs import app_dir
from fedlatent.secure_plan import distributed_plan

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Optimal order is the")]

KEYS = {
    "dataset": "digits", "num-clients": 4, "rounds": 6, "mode": "latent-fedavg", "encoder": "scatternet",
    "latent-classifier": "linear", "epsilon": 3.0, "dp-mode": "distributed", "secagg": True,
    "secagg-max-dropouts": 1, "fail-fraction": 0.25, "batch-size": 400, "optimizer": "sgd", "lr": 2.0,
    "round-timeout": 120.0,
}  # fmt: skip


def test_secure_rounds_hold_the_survivors_only_and_the_server_accounts_them(link: LocalSuperLink, tmp_path: Path):
    out = tmp_path / "distributed"
    cfg = {**KEYS, "out-dir": str(out), "cache-dir": str(tmp_path / "cache")}
    link.run(app_dir(), run_config=cfg, num_supernodes=4, timeout=900)
    results = json.loads((out / "results.json").read_text())
    assert results["dp_mode"] == "distributed" and results["end_to_end_dp"] is True
    assert results["secagg"]["survivors_per_round"] == [3] * 6  # one crash per round, by fault injection
    assert results["accuracy"] > 0.5, results["accuracy"]  # digits: chance is 0.1
    view = out / "server_view"
    assert not (view / "received").exists()  # no client's vector ever reached the server
    sums = sorted((view / "secure").glob("r*.npz"))
    assert len(sums) == 6
    run_cfg = RunConfig.from_run_config({k: v for k, v in cfg.items() if k != "fail-fraction"})
    dplan = distributed_plan(run_cfg, make_plan(run_cfg))
    took_part = {str(p): 0 for p in range(4)}
    for path in sums:
        with np.load(path) as npz:
            assert npz["sum"].shape == (dplan.dim,) and npz["sum"].dtype == np.int64
            assert len(npz["partitions"]) == 3
            for p in npz["partitions"]:
                took_part[str(p)] += 1
    for pid, rounds in took_part.items():
        assert results["epsilon_per_client"][pid] == pytest.approx(dplan.epsilon([3] * rounds, delta=1e-5))
    assert 0 < results["epsilon"] <= 3.0 < results["epsilon_local"]


def test_statistics_release_gives_an_end_to_end_dp_lda_without_labels_in_clear(link: LocalSuperLink, tmp_path: Path):
    out = tmp_path / "statistics"
    keys = {"dataset": "digits", "num-clients": 3, "mode": "latent-share", "encoder": "scatternet", "epsilon": 3.0,
            "dp-mode": "distributed", "secagg": True, "stat-dim": 64, "out-dir": str(out),
            "cache-dir": str(tmp_path / "cache")}  # fmt: skip
    link.run(app_dir(), run_config=keys, num_supernodes=3, timeout=900)
    results = json.loads((out / "results.json").read_text())
    assert results["end_to_end_dp"] is True and results["labels_in_clear"] is False
    assert results["history"] == [{"round": 1, "survivors": 3, "learner": "lda-statistics"}]
    assert results["accuracy"] > 0.7, results["accuracy"]
    assert 0 < results["epsilon"] <= 3.0
    view = out / "server_view"
    assert not (view / "latents").exists() and [p.name for p in (view / "secure").iterdir()] == ["r001.npz"]
