"""compare: DP runs sit beside their non-private twins, attack columns take the worst case."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fedlatent.bench.compare import pairs, rows_of, show_compare, summarize
from fedlatent.bench.compare_spec import compare_spec
from fedlatent.bench.sweep import points


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
        "latent-inversion": {
            "status": "done",
            "ssim": 0.41,
            "leakage_ssim": 0.05,
            "individual": {
                "individual_ssim": 0.04,
                "individual_interval": [0.01, 0.07],
                "individual_n": 50,
                "kind": "individual",
            },
        },
        "gradient-inversion": {
            "status": "done",
            "ssim": 0.30,
            "leakage_ssim": 0.12,
            "leakage_baseline": "nearest_public",
            "leakage_interval": [0.09, 0.15],
            "leakage_n": 24,
            "individual": {
                "individual_ssim": 0.06,
                "individual_interval": [-0.02, 0.14],
                "individual_n": 10,
                "kind": "class-typical",
            },
        },
        "model-inversion": {"status": "not-applicable", "reason": "x"},
        "membership": {"status": "done", "auc": 0.53},
    }
    (run / "attacks.json").write_text(json.dumps({"attacks": attacks}))
    attacked = {**result("latent-share", 0.9, None, None), "config": {"epsilon": "inf", "out-dir": str(run)}}
    rows = summarize([attacked, result("raw", 0.93, None, None)], tmp_path / "cmp")
    assert (rows[0]["inversion_ssim"], rows[0]["inversion_leakage_ssim"], rows[0]["mia_auc"]) == (0.30, 0.12, 0.53)
    row = rows[0]
    assert (row["inversion_family"], row["inversion_baseline"], row["inversion_n"]) == (
        "gradient-inversion",
        "nearest_public",
        24,
    )
    assert (row["inversion_leakage_low"], row["inversion_leakage_high"]) == (0.09, 0.15)
    # The individual columns come from the strongest stranger test (latent inversion's, low end 0.01).
    assert (row["individual_leakage_ssim"], row["individual_low"], row["leak_kind"]) == (0.04, 0.01, "individual")
    assert rows[1]["mia_auc"] is None and rows[1]["leak_kind"] is None
    out = capsys.readouterr().out
    assert "MIA AUC" in out and "+0.120 individual" in out and "0.530" in out
    assert "leak_kind" in (tmp_path / "cmp" / "compare.csv").read_text().splitlines()[0]


def test_a_distributed_run_shows_the_servers_epsilon_and_the_local_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    distributed = {**result("latent-fedavg", 0.89, 3.0, 2.99), "epsilon_local": 11.6}
    rows = summarize([result("latent-fedavg", 0.92, None, None), distributed], tmp_path)
    assert rows[1]["epsilon_local"] == 11.6 and rows[0]["epsilon_local"] is None
    assert "2.990 (11.6 local)" in capsys.readouterr().out


def test_a_compare_directory_prints_its_table_answer_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = compare_spec({}, modes=["raw", "latent-fedavg"], encoders=["scatternet"], attacks="none")
    pts = points(spec)
    (tmp_path / "sweep.json").write_text(json.dumps({"spec": {"base": spec.base}, "points": [
        {"id": p.id, "public_only": p.public_only} for p in pts]}))  # fmt: skip
    accuracy = {"public-only": 0.80, "raw": 0.70, "latent-fedavg": 0.84}
    for p in pts:
        where = tmp_path / "points" / p.id
        where.mkdir(parents=True)
        eps = p.overrides.get("epsilon", math.inf)
        r = result(p.overrides["mode"], accuracy[p.overrides["mode"]], None if math.isinf(eps) else eps, None)
        r |= {"encoder": p.overrides.get("encoder", "public"), "config": {"epsilon": "inf" if math.isinf(eps) else eps}}
        if p.is_public_only:
            r |= {"public_only": {"image_classifier": 0.78, "latent_classifier": 0.7, "scatter_classifier": 0.80}}
        (where / "results.json").write_text(json.dumps(r))
        (where / "point.json").write_text("{}")
    sentences = show_compare(tmp_path)
    out = capsys.readouterr().out
    assert "latent-fedavg" in out and "scatternet" in out and "0.8400 (+4.0)" in out and "0.7000 (-10.0)" in out
    assert sentences[0].startswith("At ε = 3, latent-fedavg (scatternet encoder) lifts most") and sentences[0] in out
    assert "Cut from the full setting to fit minutes: rounds 3 (full: 10)" in out
    assert f"report with figures: {tmp_path / 'report.html'}" in out
    assert json.loads((tmp_path / "compare.json").read_text())[-1]["scatter_classifier"] == 0.80
