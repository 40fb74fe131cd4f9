"""A run's attacks as table columns: the worst inversion and membership figures of ``attacks.json``.

What: ``attack_columns(path)`` reads one run's ``attacks.json`` into the flat columns that
``compare``, the sweep tables (``aggregate``) and the reports show: the headline inversion's
leakage beyond its best trivial baseline with the baseline's name, interval and n, the stranger
test's individual leakage with its interval and verdict (``leak_kind``), and the membership
attacks' AUC and TPR at 0.1% FPR. Why apart: every table reads the same worst case.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# The headline inversion's detail (attacks.leakage): the winning baseline, the leakage's 95%
# interval and n, and the stranger test's individual leakage with its interval and verdict.
INVERSION_DETAIL = (
    "inversion_family",
    "inversion_baseline",
    "inversion_leakage_low",
    "inversion_leakage_high",
    "inversion_n",
    "individual_leakage_ssim",
    "individual_low",
    "individual_high",
    "individual_n",
    "leak_kind",
)


def attack_columns(path: Path) -> dict[str, Any]:
    """The worst case over a run's attacks (``attacks.json``): best inversion SSIM, best MIA AUC.

    The inversion columns come from the family with the highest leakage beyond its best
    baseline; the individual ones from the family whose stranger test is strongest (its interval's
    low end), and ``leak_kind`` is "individual" when any family's interval lies above 0.
    """
    cols: dict[str, Any] = dict.fromkeys(("inversion_ssim", "inversion_leakage_ssim", *INVERSION_DETAIL, "mia_auc"))
    cols["mia_tpr_at_0.001_fpr"] = None
    if not path.is_file():
        return cols
    attacks = json.loads(path.read_text())["attacks"]
    inversions = {
        name: a
        for name, a in attacks.items()
        if name.endswith("inversion") and a.get("status") == "done" and a.get("ssim") is not None
    }
    if inversions:
        family = max(inversions, key=lambda k: inversions[k].get("leakage_ssim", inversions[k]["ssim"]))
        worst = inversions[family]
        low, high = worst.get("leakage_interval") or (None, None)
        cols.update(inversion_ssim=worst["ssim"], inversion_leakage_ssim=worst.get("leakage_ssim"))
        cols.update(inversion_family=family, inversion_baseline=worst.get("leakage_baseline"))
        cols.update(inversion_leakage_low=low, inversion_leakage_high=high, inversion_n=worst.get("leakage_n"))
        tests = [a["individual"] for a in inversions.values() if a.get("individual")]
        if tests:
            ind = max(tests, key=lambda t: _low_end(t["individual_interval"], t["individual_ssim"]))
            low, high = ind["individual_interval"]
            cols.update(individual_leakage_ssim=ind["individual_ssim"], individual_low=low, individual_high=high)
            cols.update(individual_n=ind["individual_n"], leak_kind=ind["kind"])
    if attacks.get("membership", {}).get("status") == "done":
        cols["mia_auc"] = attacks["membership"]["auc"]
        # The worst case over the membership attacks (older attacks.json keep it per attack only).
        tprs = [
            v["tpr_at_0.001_fpr"]
            for v in attacks["membership"].values()
            if isinstance(v, dict) and "tpr_at_0.001_fpr" in v
        ]
        cols["mia_tpr_at_0.001_fpr"] = attacks["membership"].get("tpr_at_0.001_fpr", max(tprs, default=None))
    return cols


def _low_end(bounds: list[float | None], mean: float) -> float:
    """The interval's low end (the mean, less infinitely much, when there is no interval)."""
    return bounds[0] if bounds[0] is not None else mean - 1e9
