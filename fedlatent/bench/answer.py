"""The compare's answer in plain sentences, computed from its rows: lift, leakage, the guarantee.

What: ``answer(rows)`` takes the sweep rows of a compare (``aggregate.point_rows``) and says
(1) which mode and encoder lifts most over the public-only bar at the DP budget, and without
DP; (2) whether the latent modes leaked more or less than ``raw`` under the attacks run
(reconstruction SSIM beyond the best trivial baseline, a score below 0 counted as 0: an attack
that loses to a free baseline is weak, not evidence of privacy; and membership AUC); (3) where
the guarantee does not hold end to end, and why; and that every DP figure is one draw of secret
noise. ``claims.conclusions`` states the same per setting, at length, in the report.

Why mechanical: the sentences a newcomer reads first must never word a result more kindly than
its numbers, so they are computed, with the numbers in them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

LATENT = ("latent-fedavg", "latent-share")


def _name(r: dict[str, Any]) -> str:
    return str(r["mode"]) if r["mode"] == "raw" else f"{r['mode']} ({r.get('encoder')} encoder)"


def _eps(r: dict[str, Any]) -> float:
    t = r.get("target_epsilon")
    return math.inf if t is None else float(t)


def _lift_sentence(rows: Sequence[dict[str, Any]], eps: float, bar: float) -> str:
    at = [r for r in rows if _eps(r) == eps and r.get("lift") is not None]
    where = "without DP" if math.isinf(eps) else f"at ε = {eps:g}"
    where_ = where[0].upper() + where[1:]
    if not at:
        return f"No run finished {where}."
    best = max(at, key=lambda r: r["lift"])
    spent = "" if math.isinf(eps) or best.get("epsilon") is None else f", ε spent {best['epsilon']:.3f}"
    if best["lift"] > 0:
        return (
            f"{where_}, {_name(best)} lifts most over the public-only bar ({bar:.4f}): "
            f"{best['accuracy']:.4f}, {100 * best['lift']:+.1f} points{spent}."
        )
    return (
        f"{where_}, no mode beats the public-only bar ({bar:.4f}): the best, {_name(best)}, "
        f"reaches {best['accuracy']:.4f} ({100 * best['lift']:+.1f} points){spent}; the federation is not worth "
        "its privacy cost here."
    )


def _worst(rows: Sequence[dict[str, Any]], key: str) -> float | None:
    values = [float(r[key]) for r in rows if r.get(key) is not None]
    return max(values) if values else None


def _kind(rows: Sequence[dict[str, Any]]) -> str | None:
    """ "individual" when the stranger test's interval lay above 0 for any row, else its other verdict."""
    kinds = {r.get("leak_kind") for r in rows} - {None}
    return "individual" if "individual" in kinds else (kinds.pop() if kinds else None)


def _leak_sentence(rows: Sequence[dict[str, Any]]) -> str:
    raw = [r for r in rows if r["mode"] == "raw"]
    latent = [r for r in rows if r["mode"] in LATENT]
    raw_leak, lat_leak = _worst(raw, "inversion_leakage_ssim"), _worst(latent, "inversion_leakage_ssim")
    raw_mia, lat_mia = _worst(raw, "mia_auc"), _worst(latent, "mia_auc")
    if raw_leak is None and raw_mia is None:
        return "No attack scored the raw runs, so leakage is not compared (attacks off?)."
    parts = []
    if raw_leak is not None and lat_leak is not None:
        r, lt = max(raw_leak, 0.0), max(lat_leak, 0.0)
        verdict = "less than" if lt < r else ("as little as" if lt == r == 0.0 else "at least as much as")
        parts.append(
            f"reconstruction: the latents leaked {verdict} raw (worst SSIM beyond the best trivial baseline "
            f"{lat_leak:+.3f} vs {raw_leak:+.3f}"
            + ("; neither attack beat its free baselines, which says the attacks are weak, not that the data is safe)"
               if lt == r == 0.0 else ")")
        )  # fmt: skip
    lat_kind, raw_kind = _kind(latent), _kind(raw)
    if lat_kind or raw_kind:  # a leak is "individual" only when the stranger test's interval excludes 0
        parts.append(f"what leaked is {lat_kind or 'untested'} for the latents and {raw_kind or 'untested'} for raw")
    if raw_mia is not None and lat_mia is not None:
        verdict = "lower" if lat_mia < raw_mia else "not lower"
        parts.append(f"membership: the latents' worst AUC is {verdict} than raw's ({lat_mia:.3f} vs {raw_mia:.3f})")
    return "Under the quick attacks, " + "; ".join(parts) + "." if parts else "The latent runs were not attacked."


def _why_not_end_to_end(r: dict[str, Any]) -> str:
    reasons = []
    if r.get("labels_in_clear"):
        reasons.append("labels sent in clear")
    if r.get("encoder") in ("local", "federated") and r["mode"] != "raw":
        reasons.append("encoder trained on private data")
    if r.get("noise_secret") is False:
        reasons.append("noise derived from the public seed")
    return ", ".join(reasons) or "see its privacy_note"


def answer(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Two to four sentences on a compare's rows (see module docstring); [] without a bar."""
    fed = [r for r in rows if r["mode"] != "public-only"]
    bars = [r["bar"] for r in fed if r.get("bar") is not None]
    if not fed or not bars:
        return []
    bar = max(bars)
    budgets = sorted({_eps(r) for r in fed}, key=lambda e: (math.isinf(e), e))
    out = [_lift_sentence(fed, e, bar) for e in budgets]
    out.append(_leak_sentence(fed))
    dp = [r for r in fed if not math.isinf(_eps(r))]
    broken = [f"{_name(r)}: {_why_not_end_to_end(r)}" for r in dp if not r.get("end_to_end_dp")]
    if dp:
        tail = (
            "Not end-to-end DP: " + "; ".join(broken) + "." if broken else "Every DP run's guarantee holds end to end."
        )
        seeds = sorted({int(r.get("seed") or 0) for r in dp})
        draw = (
            "one draw of secret noise each (seed "
            + ", ".join(map(str, seeds))
            + "): rerun with another --seed, or sweep seeds, to see the spread"
            if len(seeds) == 1
            else f"mean over seeds {seeds} in the report"
        )
        out.append(f"{tail} DP figures are {draw}.")
    return out
