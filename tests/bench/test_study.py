"""The sweep report: every figure, the public-only bar, lifts, conclusions, and self-contained HTML."""

from __future__ import annotations

import math
from pathlib import Path

from sweep_fakes import fake_attacks, fake_run

from fedlatent.bench.aggregate import point_rows, summarize
from fedlatent.bench.claims import conclusions
from fedlatent.bench.runner import run_sweep
from fedlatent.bench.study import write_report
from fedlatent.bench.sweep import SweepSpec
from fedlatent.runs import run_config

GRID = {
    "mode": ["raw", "latent-fedavg", "latent-share"],
    "epsilon": [math.inf, 3.0],
    "public-fraction": [0.2, 0.01],
    "seed": [0, 1],
}


def _swept(out: Path, leakage=lambda d: 0.2 if "raw" in d.name else 0.01) -> Path:
    spec = SweepSpec.from_mapping({"sweep": {"attacks": "quick"}, "base": {"dataset": "fashion-mnist"}, "grid": GRID})
    attack = lambda d, s: fake_attacks(d, leakage(d))  # noqa: E731
    run_sweep(spec, out, run_point=fake_run, attack_point=attack, run_config=run_config)
    return out


def test_the_report_has_every_figure_and_the_bar(tmp_path: Path) -> None:
    md, html = write_report(_swept(tmp_path))
    figures = {p.name for p in (tmp_path / "figures").glob("*.png")}
    assert figures == {
        "accuracy-vs-epsilon.png",
        "lift-vs-public-fraction.png",
        "leakage-vs-epsilon.png",
        "frontier.png",
        "accuracy-per-round.png",
    }
    text = md.read_text()
    assert "| public-only | 0 | 0.7050 ± 0.0071 |" in text  # the bar: mean ± std over seeds 0, 1
    assert "Threat model" in text and "What ε means per mode" in text
    for name in figures:
        assert f"figures/{name}" in text
    page = html.read_text()
    assert page.count("data:image/png;base64,") == len(figures)  # readable without the files beside it
    assert "Tramèr & Boneh 2021" in text and "89.7%" in text  # the anchors, with their sources


def test_conclusions_state_each_claim_with_its_numbers(tmp_path: Path) -> None:
    summary = summarize(point_rows(_swept(tmp_path)))
    said = conclusions(summary)
    # fake: raw 0.80 vs latent-fedavg 0.78 (-2.0 points, kept); leakage 0.01 vs 0.2 (harder).
    plain = [s for s in said if "public-fraction 0.01" in s and "no DP" in s]
    assert any("claim 1 holds" in s and "(-2.0 points)" in s for s in plain)
    assert any("claim 2 holds for latent-share" in s for s in plain)
    # raw's fake leak (0.2) is individual, the latents' (0.01) class-typical: the sentence says which.
    assert any("what leaked is class-typical for latent-share and individual for raw" in s for s in plain)
    # raw without DP: 0.80 + 0.01 seed against the bar 0.70 + 0.01 seed: +10 points on both seeds
    assert any("lift over public-only" in s and "raw 10.0 ± 0.0" in s for s in plain)


def test_attacks_that_never_beat_their_baselines_decide_nothing(tmp_path: Path) -> None:
    summary = summarize(point_rows(_swept(tmp_path, leakage=lambda d: -0.1 if "raw" in d.name else -0.3)))
    said = " ".join(conclusions(summary))
    assert "claim 2 undecided" in said and "claim 2 holds" not in said and "claim 2 refuted" not in said
