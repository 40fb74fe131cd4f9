"""Tests for fedlatent.bench: the centralized references, the DP step ratio, the tables and figure."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedlatent.bench.central import central_seconds
from fedlatent.bench.perf import PARTS, marginal, run_bench
from fedlatent.bench.report import markdown, write_report
from fedlatent.bench.steps import MODELS, time_steps
from fedlatent.config import RunConfig

SMALL = {"dataset": "digits", "num-clients": 4, "rounds": 2, "local-epochs": 1, "ae-epochs": 2}


def test_the_centralized_reference_trains_what_the_federation_trains() -> None:
    seconds, accuracy = central_seconds(RunConfig.from_run_config({**SMALL, "mode": "raw"}))
    assert seconds > 0 and accuracy > 0.5  # 2 epochs over all private digits: far above chance
    seconds, accuracy = central_seconds(RunConfig.from_run_config({**SMALL, "mode": "latent-fedavg", "ae-epochs": 30}))
    assert seconds > 0 and accuracy > 0.2
    _, dp_accuracy = central_seconds(RunConfig.from_run_config({**SMALL, "mode": "raw", "epsilon": 8.0}))
    assert 0.0 <= dp_accuracy <= 1.0
    with pytest.raises(ValueError, match="public encoder"):
        central_seconds(RunConfig.from_run_config({**SMALL, "encoder": "local"}))


def test_each_clipping_method_is_timed_beside_a_plain_step() -> None:
    row = time_steps("latent-mlp", 16, reps=2, steps=1)
    assert set(row["seconds"]) == {"plain", "noise", "book-keeping", "ghost", "vmap"}
    assert all(s > 0 for s in row["seconds"].values()) and row["chosen"] == "book-keeping"
    assert row["ratio"]["ghost"] == pytest.approx(row["seconds"]["ghost"] / row["seconds"]["plain"])
    assert row["params"] == 32 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
    assert set(MODELS) >= {"image-mlp", "cnn", "tanh-cnn", "latent-mlp", "scatter-linear"}


def test_the_dp_step_part_alone_starts_no_federation(tmp_path: Path) -> None:
    lines: list[str] = []
    with pytest.raises(ValueError, match="unknown bench part"):
        run_bench(tmp_path, parts=["dp-step", "warp"])
    assert "dp-step" in PARTS
    import fedlatent.bench.perf as perf

    rows = [time_steps("latent-mlp", 8, reps=1, steps=1)]
    original = perf.dp_step_table
    perf.dp_step_table = lambda echo: rows  # the real table takes minutes; its rows are tested above
    try:
        report = run_bench(tmp_path, parts=["dp-step"], echo=lines.append)
    finally:
        perf.dp_step_table = original
    assert set(report) == {"dataset", "started", "dp_step"} and not (tmp_path / "runs").exists()
    text = (tmp_path / "bench.md").read_text()
    assert "| latent-mlp | 42,634 | 8 |" in text and (tmp_path / "dp-step.png").stat().st_size > 5000


def test_tables_and_figure(tmp_path: Path) -> None:
    report = {
        "dataset": "digits",
        "started": "now",
        "dp_step": [{"model": "image-mlp", "batch": 32, "params": 235146, "chosen": "book-keeping",
                     "seconds": {"plain": 0.002}, "ratio": {"noise": 0.5, "book-keeping": 1.25, "ghost": 2.5}}],
        "fed_vs_central": [
            {"mode": "raw", "epsilon": None, "federated_seconds": 12.0, "central_seconds": 10.0, "ratio": 1.2,
             "federated_accuracy": 0.9, "central_accuracy": 0.91, "bytes_uploaded_per_client": 2e6},
        ],
        "recipe": {"epsilon": 2.9842, "rounds": 10, "accuracy": 0.7208, "wall_seconds": 290.8},
        "ray_sweep": [{"nodes": n, "cpus_per_node": 1, "points": 8, "seconds": 400 / n, "points_per_hour": 72.0 * n}
                      for n in (1, 2)],
        "rounds": [{"mode": "raw", "clients": 100, "seconds_per_round": 3.0, "peak_rss_bytes": 2**31,
                    "bytes_uploaded_per_client": 1e5}],
        "scale": [
            {"dataset": d, "clients": n, "round_seconds": n * 0.02, "seconds_per_message": 0.02, "wall_seconds": 9.0,
             "peak_rss_bytes": 2**30 * n / 100, "bytes_uploaded_per_client": 4e3}
            for d in ("digits", "fashion-mnist") for n in (10, 100)
        ],
    }  # fmt: skip
    text = markdown(report)
    assert "| image-mlp | 235,146 | 32 | 2.00 | 1.50 | **1.25** | 2.50 |" in text
    assert "| raw | ∞ | 12.0 | 10.0 | **1.20** |" in text
    assert "| 2.984 | 10 | 0.7208 | 290.8 |" in text and "| 2 | 1 | 8 | 200 | 144 | 2.00 |" in text
    assert "| fashion-mnist | 100 | 2.0 | 20.0 | - |" in text and "| raw | 100 | 3.0 | 2.00 |" in text
    rows = marginal([dict(r) for r in report["scale"]])
    assert "marginal_seconds_per_message" not in rows[0]
    assert rows[1]["marginal_seconds_per_message"] == pytest.approx((2.0 - 0.2) / 90)
    write_report(report, tmp_path)
    assert (tmp_path / "bench.md").read_text() == text and (tmp_path / "bench.png").stat().st_size > 5000
    assert (tmp_path / "dp-step.png").stat().st_size > 5000


def test_the_secagg_table_reads_each_rounds_median_after_the_first() -> None:
    from fedlatent.bench.secure import per_round, secagg_cost

    class FakeBench:
        out = Path("/nonexistent")

        def federation(self, name: str, overrides: dict) -> dict:
            secure = name.startswith("secagg")
            assert overrides["dp-mode" if secure else "local-epochs"] == ("distributed" if secure else 1)
            seconds = [9.0, 2.0, 2.2, 2.4] if secure else [5.0, 1.0, 1.0, 1.0]
            return {"history": [{"round": i + 1, "seconds": s} for i, s in enumerate(seconds)], "rounds": 4,
                    "bytes_uploaded": 4 * overrides["num-clients"] * (320e3 if secure else 160e3),
                    "accuracy": 0.8, "epsilon": 2.99}  # fmt: skip

    assert per_round({"history": [{"seconds": 9.0}, {"seconds": 1.0}, {"seconds": 3.0}]}) == 2.0
    rows = secagg_cost(FakeBench(), clients=(10,))
    assert rows[0]["ratio"] == pytest.approx(2.2) and rows[0]["secure_bytes_up_per_client_round"] == 320e3
    report = {"dataset": "d", "started": "now", "secagg": rows}
    assert "| 10 | 2.20 | 1.00 | 2.20 | 320, 160 |" in markdown(report)
