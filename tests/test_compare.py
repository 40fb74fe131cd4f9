"""compare: DP runs sit beside their non-private twins, attack columns take the worst case."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

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


def test_every_accuracy_shows_its_lift_over_the_public_only_bar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = [result("raw", 0.93, None, None), result("raw", 0.71, 3.0, 2.98)]
    baseline = {"accuracy": 0.80, "image_classifier": 0.80, "latent_classifier": None, "wall_seconds": 2.0}
    rows = summarize(results, tmp_path, baseline=baseline)
    assert [round(r["lift"], 6) for r in rows] == [0.13, -0.09]
    out = capsys.readouterr().out
    assert "public-only" in out and "0.9300 (+13.0)" in out and "0.7100 (-9.0)" in out
    written = json.loads((tmp_path / "compare.json").read_text())
    assert written[-1]["mode"] == "public-only" and written[-1]["accuracy"] == 0.80 and written[-1]["epsilon"] == 0.0
    assert "public-only" in (tmp_path / "compare.csv").read_text()


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
    assert "MIA AUC" in out and "+0.120" in out and "0.530" in out


def test_a_distributed_run_shows_the_servers_epsilon_and_the_local_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    distributed = {**result("latent-fedavg", 0.89, 3.0, 2.99), "epsilon_local": 11.6}
    rows = summarize([result("latent-fedavg", 0.92, None, None), distributed], tmp_path)
    assert rows[1]["epsilon_local"] == 11.6 and rows[0]["epsilon_local"] is None
    assert "2.990 (11.6 local)" in capsys.readouterr().out
