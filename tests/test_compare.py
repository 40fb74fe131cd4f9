"""compare: DP runs sit beside their non-private twins; the public autoencoder cache."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fedlatent.cache import cached_training, data_digest
from fedlatent.cli import compare_configs
from fedlatent.compare import pairs, rows_of, summarize


def result(mode: str, acc: float, target: float | None, eps: float | None) -> dict[str, object]:
    return {
        "mode": mode,
        "encoder": None if mode == "raw" else "public",
        "dataset": "digits",
        "accuracy": acc,
        "epsilon": eps,
        "end_to_end_dp": eps is not None,
        "bytes_uploaded": 1000,
        "bytes_downloaded": 2000,
        "wall_seconds": 1.5,
        "config": {"epsilon": "inf" if target is None else target},
    }


def test_compare_with_epsilon_makes_a_non_private_twin_for_every_dp_run(tmp_path: Path) -> None:
    cfgs = compare_configs({"epsilon": 3.0, "num-clients": 2}, ["raw", "latent-share"], tmp_path)
    assert [(c.mode, c.epsilon) for c in cfgs] == [
        ("raw", math.inf),
        ("raw", 3.0),
        ("latent-share", math.inf),
        ("latent-share", 3.0),
    ]
    assert len({c.out_dir for c in cfgs}) == 4
    assert {c.cache_dir for c in cfgs} == {str(tmp_path / ".cache")}  # one public autoencoder for all
    assert [c.mode for c in compare_configs({"num-clients": 2}, ["raw"], tmp_path)] == ["raw"]


def test_summary_pairs_dp_with_non_private_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = [
        result("raw", 0.93, None, None),
        result("raw", 0.71, 3.0, 2.98),
        result("latent-share", 0.90, None, None),
        result("latent-share", 0.55, 3.0, 2.99),
    ]
    rows = summarize(results, tmp_path)
    assert [r["target_epsilon"] for r in rows] == [None, 3.0, None, 3.0]
    grouped = pairs(rows)
    assert [(a["accuracy"], b["accuracy"]) for a, b in grouped if a and b] == [(0.93, 0.71), (0.90, 0.55)]
    out = capsys.readouterr().out
    assert "accuracy ε=3" in out and "0.7100" in out and "2.990" in out
    assert json.loads((tmp_path / "compare.json").read_text()) == rows
    assert (tmp_path / "compare.csv").read_text().count("\n") == 5
    assert (tmp_path / "compare.png").stat().st_size > 1000
    assert rows_of([result("raw", 0.5, None, None)])[0]["target_epsilon"] is None


def test_cache_trains_once_per_key_and_never_serves_a_foreign_entry(tmp_path: Path) -> None:
    calls = []

    def make(seed: int) -> tuple[torch.nn.Module, object]:
        module = torch.nn.Linear(3, 2)

        def train() -> float:
            calls.append(seed)
            with torch.no_grad():
                module.weight.fill_(seed)
            return 0.5 + seed

        return module, train

    key = {"seed": 1, "data": data_digest(np.ones((2, 3), np.float32))}
    m1, t1 = make(1)
    assert cached_training(tmp_path, name="ae", key=key, module=m1, train=t1) == (1.5, False)
    m2, t2 = make(2)
    assert cached_training(tmp_path, name="ae", key=key, module=m2, train=t2) == (1.5, True)
    assert calls == [1] and torch.all(m2.weight == 1)
    other = {**key, "data": data_digest(np.zeros((2, 3), np.float32))}  # other data: another entry
    m3, t3 = make(3)
    assert cached_training(tmp_path, name="ae", key=other, module=m3, train=t3) == (3.5, False)
    # A stored entry whose key differs (collision, foreign file) is retrained, not served.
    entry = next(tmp_path.glob("ae-*.pt"))
    stored = torch.load(entry, weights_only=True)
    torch.save({**stored, "key": "something else"}, entry)
    m4, t4 = make(4)
    assert cached_training(tmp_path, name="ae", key=json.loads(stored["key"]), module=m4, train=t4)[1] is False
    m5, t5 = make(5)
    assert cached_training("", name="ae", key=key, module=m5, train=t5) == (5.5, False)  # no cache dir: train


def test_attack_columns_take_the_worst_case_of_each_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    attacks = {
        "latent-inversion": {"status": "done", "ssim": 0.41, "leakage_ssim": 0.05},
        "gradient-inversion": {"status": "done", "ssim": 0.30, "leakage_ssim": 0.12},
        "model-inversion": {"status": "not-applicable", "reason": "x"},
        "membership": {"status": "done", "auc": 0.53},
    }
    (run / "attacks.json").write_text(json.dumps({"attacks": attacks}))
    attacked = {**result("latent-share", 0.9, None, None), "config": {"epsilon": "inf", "out-dir": str(run)}}
    rows = summarize([attacked, result("raw", 0.93, None, None)], tmp_path / "cmp")
    assert (rows[0]["inversion_ssim"], rows[0]["inversion_leakage_ssim"], rows[0]["mia_auc"]) == (0.30, 0.12, 0.53)
    assert rows[1]["mia_auc"] is None
    out = capsys.readouterr().out
    assert "MIA AUC" in out and "0.300 (+0.120)" in out
