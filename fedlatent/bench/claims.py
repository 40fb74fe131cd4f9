"""The seed article's two claims, checked against a sweep's summary and stated with its numbers.

Claim 1, "latents keep most of the accuracy": in each setting and at each ε, the best latent
mode against ``raw`` (kept when it is at most 2 points below), and every mode against the
public-only bar (worth its privacy cost only with a lift beyond the seeds' spread).
Claim 2, "latents make reconstructing the images harder": the best inversion's SSIM beyond its
strongest trivial baseline (``inversion_leakage_ssim``) of each latent mode against ``raw``, and
whether what leaked is individual (the stranger test's interval above 0) or class-typical.

The verdicts are mechanical (thresholds above; a leakage below 0 counts as 0) so that a report never words a result more
kindly than its numbers; where a comparison lacks a side, the sentence says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from fedlatent.bench.aggregate import _number, mean_std

KEPT_POINTS = 2.0  # claim 1 holds where the best latent mode is at most this many points below raw
LATENT = ("latent-fedavg", "latent-share")


def _key(s: dict[str, Any]) -> tuple[str, str, str, str, str, float]:
    eps = _number(s.get("epsilon"))
    parts = tuple(str(s.get(k)) for k in ("dataset", "partition", "public-fraction", "public-labels", "encoder"))
    return (*parts, math.inf if eps is None else eps)  # type: ignore[return-value]


def _where(key: tuple[Any, ...]) -> str:
    dataset, partition, fraction, labels, encoder, eps = key
    labelled = "labelled" if labels != "False" else "unlabelled"
    eps_text = "no DP" if math.isinf(eps) else f"ε={eps:g}"
    return f"{dataset}, {partition}, public-fraction {fraction} ({labelled}), encoder {encoder}, {eps_text}"


def _lift_note(s: dict[str, Any]) -> str:
    """Whether a lift is worth a privacy cost: beyond twice the seeds' std (and half a point)."""
    mean, std = s.get("lift_mean"), s.get("lift_std")
    if mean is None:
        return ""
    if mean > max(2 * (std or 0.0), 0.005):
        return ""
    return " (below the bar)" if mean < -max(2 * (std or 0.0), 0.005) else " (not beyond the seeds' spread)"


def conclusions(summary: Sequence[dict[str, Any]]) -> list[str]:
    """One sentence per (setting, ε) and claim, with its numbers (see module docstring)."""
    cells: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
    for s in summary:
        if s["mode"] != "public-only":
            cells.setdefault(_key(s), {})[s["mode"]] = s
    out = []
    for key, modes in sorted(cells.items(), key=lambda kv: str(kv[0])):
        raw = modes.get("raw")
        latents = [modes[m] for m in LATENT if m in modes and modes[m].get("accuracy_mean") is not None]
        lifts = ", ".join(f"{m} {mean_std(s, 'lift', scale=100, digits=1)}{_lift_note(s)}" for m, s in modes.items())
        out.append(f"{_where(key)} — lift over public-only (points): {lifts}.")
        if raw is None or not latents or raw.get("accuracy_mean") is None:
            out.append(f"{_where(key)} — claim 1: no raw/latent pair to compare.")
            continue
        best = max(latents, key=lambda s: s["accuracy_mean"])
        gap = 100 * (best["accuracy_mean"] - raw["accuracy_mean"])
        verdict = "holds" if gap >= -KEPT_POINTS - 1e-9 else "refuted"  # 1e-9: float noise of a mean
        out.append(
            f"{_where(key)} — claim 1 {verdict}: best latent mode {best['mode']} {mean_std(best, 'accuracy')} vs raw "
            f"{mean_std(raw, 'accuracy')} ({gap:+.1f} points)."
        )
        # An attack below its free baselines is a weak attack, not privacy: the attacker could
        # have output the baseline, so leakage counts from 0.
        raw_leak = raw.get("inversion_leakage_ssim_mean")
        leaks = [(s, s.get("inversion_leakage_ssim_mean")) for s in latents]
        if raw_leak is None or all(v is None for _, v in leaks):
            out.append(f"{_where(key)} — claim 2: no inversion scores on both sides (no attacks run, or n/a).")
            continue
        for s, leak in leaks:
            if leak is None:
                continue
            if max(leak, 0.0) < max(raw_leak, 0.0):
                verdict = "holds"
            elif max(leak, raw_leak) <= 0.0:
                verdict = "undecided (neither side's attack beat its trivial baselines)"
            else:
                verdict = "refuted"
            out.append(
                f"{_where(key)} — claim 2 {verdict} for {s['mode']}: inversion leakage SSIM "
                f"{mean_std(s, 'inversion_leakage_ssim', digits=3)} vs raw "
                f"{mean_std(raw, 'inversion_leakage_ssim', digits=3)} (beyond the best trivial baseline); "
                f"what leaked is {s.get('leak_kind') or 'untested'} for {s['mode']} and "
                f"{raw.get('leak_kind') or 'untested'} for raw (individual only where the stranger test's 95% "
                "interval excludes 0)."
            )
    return out or ["No federated point finished: nothing to conclude."]
