"""Aggregation on hand-made inputs: flat rows, the bar and lift per seed, mean ± std over seeds."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

from sweep_fakes import fake_attacks, fake_run, is_close

from fedlatent.bench.aggregate import flatten, mean_std, point_rows, summarize, write_tables
from fedlatent.bench.runner import run_sweep
from fedlatent.bench.sweep import SweepSpec
from fedlatent.runs import run_config

SPEC = SweepSpec.from_mapping(
    {
        "sweep": {"attacks": "quick"},
        "grid": {"mode": ["raw", "latent-fedavg"], "epsilon": [math.inf, 3.0], "seed": [0, 1, 2]},
    }
)


def test_flatten_joins_keys_and_keeps_lists_as_json() -> None:
    flat = flatten({"a": 1, "b": {"c": 2, "d": {"e": None}}, "h": [{"round": 1}]})
    assert flat == {"a": 1, "b.c": 2, "b.d.e": None, "h": '[{"round": 1}]'}


def _swept(tmp_path: Path) -> Path:
    run_sweep(
        SPEC, tmp_path, run_point=fake_run, attack_point=lambda d, s: fake_attacks(d, 0.05), run_config=run_config
    )
    return tmp_path


def test_rows_hold_every_results_and_attacks_field_plus_bar_and_lift(tmp_path: Path) -> None:
    rows = point_rows(_swept(tmp_path))
    assert len(rows) == 3 + 2 * 2 * 3  # a bar per seed, then the grid
    raw3 = next(r for r in rows if r["mode"] == "raw" and r["target_epsilon"] == 3.0 and r["seed"] == 1)
    # fake accuracies: bar 0.70 + 0.01 seed; raw 0.80 - 0.10 (DP) + 0.01 seed -> lift 0.0 exactly
    assert is_close(raw3["bar"], 0.71) and is_close(raw3["lift"], 0.0)
    assert raw3["config.epsilon"] == 3.0 and raw3["records.public"] == 7
    assert raw3["attacks.latent-inversion.leakage_ssim"] == 0.05 and raw3["inversion_leakage_ssim"] == 0.05
    assert raw3["mia_auc"] == 0.55 and raw3["inversion_ssim"] == 0.55 and raw3["mia_tpr_at_0.001_fpr"] == 0.002
    bar = next(r for r in rows if r["mode"] == "public-only" and r["seed"] == 2)
    assert bar["lift"] == 0.0 and bar["epsilon"] == 0.0


def test_summary_is_mean_and_sample_std_over_seeds(tmp_path: Path) -> None:
    summary = summarize(point_rows(_swept(tmp_path)))
    assert len(summary) == 1 + 4  # seeds collapse: one bar, four (mode, epsilon) cells
    fed = next(s for s in summary if s["mode"] == "latent-fedavg" and s["epsilon"] == "inf")
    expected = [0.78 + 0.01 * s for s in range(3)]
    assert fed["seeds"] == [0, 1, 2] and fed["accuracy_n"] == 3
    assert is_close(fed["accuracy_mean"], statistics.fmean(expected))
    assert is_close(fed["accuracy_std"], statistics.stdev(expected))
    assert is_close(fed["lift_mean"], 0.08) and fed["lift_std"] < 1e-12  # lift pairs each seed with its own bar
    assert fed["epsilon_mean"] is None and fed["epsilon_n"] == 0  # no DP: nothing spent, not zero


def test_one_seed_has_no_std_and_mean_std_says_so() -> None:
    rows = [{"point": "p", "seed": 0, "config.mode": "raw", "accuracy": 0.5}]
    (s,) = summarize(rows)
    assert s["accuracy_std"] is None and mean_std(s, "accuracy") == "0.5000" and mean_std(s, "lift") == "-"
    assert mean_std({"a_mean": 0.1234, "a_std": 0.01}, "a", scale=100, digits=1) == "12.3 ± 1.0"


def test_tables_are_written_as_csv_and_strict_json(tmp_path: Path) -> None:
    out = _swept(tmp_path)
    write_tables(out, point_rows(out))
    with (out / "points.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 15 and "attacks.membership.auc" in rows[-1] and "lift" in rows[0]
    summary = json.loads((out / "summary.json").read_text())  # strict: inf budgets are strings
    assert {s["epsilon"] for s in summary} == {"inf", "3.0"}
