"""The claims attack table (issue 24) from a finished sweep of experiments/claims-attacks-fmnist.toml.

One row per (point, reconstruction family): the headline leakage beyond the strongest trivial
baseline with its 95% interval, n and the winning baseline; the stranger test's individual
leakage with its interval, unit and verdict, the uploader's rank and the AUC; the membership AUC.

    python3 experiments/claims_attack_table.py runs/claims-attacks-fmnist \
        --out experiments/results/claims-attacks-fmnist
writes ``.json`` (every row) and ``.md`` (the table).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

FAMILIES = ("gradient-inversion", "latent-inversion", "model-inversion")


def rows(sweep: Path) -> list[dict[str, Any]]:
    """Every attacked point's reconstruction families, in the sweep's order."""
    out = []
    for p in json.loads((sweep / "sweep.json").read_text())["points"]:
        where = sweep / "points" / p["id"]
        if not (where / "attacks.json").is_file():
            continue
        results = json.loads((where / "results.json").read_text())
        attacks = json.loads((where / "attacks.json").read_text())["attacks"]
        eps = results["config"].get("epsilon", "inf")
        base = {"mode": results["mode"], "encoder": results.get("encoder") or "-", "target_epsilon": eps,
                "epsilon": results.get("epsilon"), "accuracy": results["accuracy"],
                "mia_auc": attacks.get("membership", {}).get("auc")}  # fmt: skip
        for family in FAMILIES:
            a = attacks.get(family, {})
            if a.get("status") != "done" or a.get("leakage_ssim") is None:
                continue
            ind = a.get("individual") or {}
            out.append(base | {
                "family": family, "ssim": a["ssim"], "leakage": a["leakage_ssim"],
                "leakage_interval": a.get("leakage_interval"), "n": a.get("leakage_n"),
                "baseline": a.get("leakage_baseline"), "individual": ind.get("individual_ssim"),
                "individual_interval": ind.get("individual_interval"), "individual_n": ind.get("individual_n"),
                "unit": ind.get("individual_unit"), "kind": ind.get("kind", "n/a (class target)"),
                "rank": ind.get("uploader_rank"), "rank_chance": ind.get("rank_chance"), "auc": ind.get("auc"),
                "variant": a.get("variant"),
            })  # fmt: skip
    return out


def _ci(mean: float | None, bounds: list[float | None] | None) -> str:
    if mean is None:
        return "-"
    lo, hi = bounds or (None, None)
    return f"{mean:+.3f}" + ("" if lo is None or hi is None else f" [{lo:+.3f}, {hi:+.3f}]")


def _eps(r: dict[str, Any]) -> str:
    t = r["target_epsilon"]
    return "∞" if t in ("inf", math.inf) else f"{float(t):g} ({r['epsilon']:.2f})"


def markdown(table: list[dict[str, Any]]) -> str:
    head = ("| mode | encoder | ε (spent) | accuracy | family | SSIM | beyond the best baseline [95% CI] | baseline, n "
            "| vs strangers [95% CI] | n (unit) | leak | rank / chance | AUC | MIA AUC |")  # fmt: skip
    lines = [head, "|" + "---|" * 14]
    for r in table:
        rank = "-" if r["rank"] is None else f"{r['rank']:.1f} / {r['rank_chance']:.1f}"
        lines.append(
            f"| {r['mode']} | {r['encoder']} | {_eps(r)} | {r['accuracy']:.4f} | {r['family']}"
            + (f" ({r['variant']})" if r["variant"] else "")
            + f" | {r['ssim']:.3f} | {_ci(r['leakage'], r['leakage_interval'])} | {r['baseline']}, {r['n']} "
            f"| {_ci(r['individual'], r['individual_interval'])} | "
            + ("-" if r["individual_n"] is None else f"{r['individual_n']} ({r['unit']})")
            + f" | {r['kind']} | {rank} | " + ("-" if r["auc"] is None else f"{r['auc']:.3f}")
            + " | " + ("-" if r["mia_auc"] is None else f"{r['mia_auc']:.3f}") + " |"
        )  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="path without suffix for .json and .md")
    args = parser.parse_args()
    table = rows(args.sweep)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(table, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(table))
    print(markdown(table))


if __name__ == "__main__":
    main()
