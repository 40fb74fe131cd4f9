"""compare's answer: computed sentences that never word a result more kindly than its numbers."""

from __future__ import annotations

from typing import Any

from fedlatent.bench.answer import answer


def row(mode: str, encoder: str, acc: float, eps: float | None, **extra: Any) -> dict[str, Any]:
    base = {"mode": mode, "encoder": encoder, "accuracy": acc, "target_epsilon": eps, "bar": 0.80, "seed": 0}
    base |= {"lift": acc - 0.80, "epsilon": None if eps is None else eps - 0.01, "end_to_end_dp": eps is not None}
    return base | extra


def test_the_answer_names_the_largest_lift_at_the_budget_and_the_leakage_against_raw() -> None:
    rows = [
        row("raw", "public", 0.85, None, inversion_leakage_ssim=0.10, mia_auc=0.60, leak_kind="individual"),
        row("raw", "public", 0.70, 3.0, inversion_leakage_ssim=0.02, mia_auc=0.52),
        row(
            "latent-fedavg",
            "scatternet",
            0.88,
            None,
            inversion_leakage_ssim=-0.05,
            mia_auc=0.55,
            leak_kind="class-typical",
        ),
        row("latent-fedavg", "scatternet", 0.84, 3.0, inversion_leakage_ssim=-0.08, mia_auc=0.51),
        row("latent-share", "public", 0.75, 3.0, end_to_end_dp=False, labels_in_clear=True),
        {"mode": "public-only", "accuracy": 0.80, "bar": 0.80, "lift": 0.0, "target_epsilon": None},
    ]
    text = answer(rows)
    assert text[0].startswith("At ε = 3, latent-fedavg (scatternet encoder)") and "0.8400, +4.0 points" in text[0]
    assert "ε spent 2.990" in text[0]  # the budget first: it is the question
    assert text[1].startswith("Without DP, latent-fedavg (scatternet encoder) lifts most") and "+8.0 points" in text[1]
    assert "leaked less than raw" in text[2] and "-0.050 vs +0.100" in text[2] and "(0.550 vs 0.600)" in text[2]
    assert "what leaked is class-typical for the latents and individual for raw" in text[2]
    assert "Not end-to-end DP: latent-share (public encoder): labels sent in clear" in text[3]
    assert "one draw of secret noise" in text[3]


def test_no_lift_is_said_plainly_and_attacks_below_their_baselines_are_called_weak() -> None:
    rows = [
        row("raw", "public", 0.78, 3.0, inversion_leakage_ssim=-0.01),
        row("latent-share", "public", 0.70, 3.0, inversion_leakage_ssim=-0.20),
    ]
    text = answer(rows)
    assert "no mode beats the public-only bar (0.8000)" in text[0] and "-2.0 points" in text[0]
    assert "not worth its privacy cost" in text[0]
    assert "as little as raw" in text[1] and "attacks are weak, not that the data is safe" in text[1]
    assert "what leaked" not in text[1]  # no stranger test ran: no word on its kind
    assert "Every DP run's guarantee holds end to end" in text[2]
    assert answer([]) == [] and answer([{**rows[0], "bar": None}]) == []
