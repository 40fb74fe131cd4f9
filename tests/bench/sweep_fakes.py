"""A stand-in for a federation: writes the results.json a run of a config would, from a formula.

It lets the sweep runner, the aggregation and the report be tested in seconds; the real path
(Flower, attacks) is tested by ``test_sweep_cli``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fedlatent.config import RunConfig
from fedlatent.jsonable import jsonable

ACCURACY = {"public-only": 0.70, "raw": 0.80, "latent-fedavg": 0.78, "latent-share": 0.76}


def accuracy(cfg: RunConfig) -> float:
    """A made-up accuracy: by mode, 10 points less under DP, +0.01 per seed."""
    return ACCURACY[cfg.mode] - (0.10 if cfg.dp else 0.0) + 0.01 * cfg.seed


def fake_run(cfg: RunConfig) -> dict[str, Any]:
    """Write ``cfg.out_dir/results.json`` as a run would and return it."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    acc = accuracy(cfg)
    results = {
        "mode": cfg.mode,
        "encoder": cfg.encoder if cfg.is_latent else None,
        "dataset": cfg.dataset,
        "accuracy": acc,
        "epsilon": (0.0 if cfg.mode == "public-only" else None) if not cfg.dp else cfg.epsilon * 0.99,
        "end_to_end_dp": cfg.dp and cfg.mode != "latent-share",
        "bytes_uploaded": 10,
        "wall_seconds": 1.0,
        "history": [{"round": r + 1, "accuracy": acc * (r + 1) / cfg.rounds} for r in range(cfg.rounds)],
        "seed": cfg.seed,
        "records": {"public": 7, "private": 70, "test": 30},
        "config": jsonable(cfg.to_run_config()),
    }
    (out / "results.json").write_text(json.dumps(jsonable(results)))
    return results


def fake_attacks(run_dir: Path, leakage: float) -> dict[str, Any]:
    """Write an ``attacks.json`` with one inversion and a membership AUC."""
    report = {
        "attacks": {
            "latent-inversion": {
                "status": "done",
                "ssim": 0.5 + leakage,
                "leakage_ssim": leakage,
                "leakage_baseline": "aux_class_mean",
                "leakage_interval": [leakage - 0.01, leakage + 0.01],
                "leakage_n": 100,
                "individual": {  # a leak above 0.1 is individual here, the rest class-typical
                    "individual_ssim": leakage / 2,
                    "individual_interval": [leakage / 2 - 0.05, leakage / 2 + 0.05],
                    "individual_n": 100,
                    "kind": "individual" if leakage > 0.1 else "class-typical",
                },
            },
            "membership": {"status": "done", "auc": 0.5 + leakage, "tpr_at_0.001_fpr": 0.002},
        }
    }
    (run_dir / "attacks.json").write_text(json.dumps(report))
    return report


def is_close(a: float | None, b: float) -> bool:
    return a is not None and math.isclose(a, b, abs_tol=1e-12)
