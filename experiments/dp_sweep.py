"""Benchmark of the DP issue: accuracy (and optionally attacks) of the modes across ε.

What: for every partition x mode x ε it runs one real Flower federation (``fedlatent run``
semantics, one private SuperLink for the whole sweep) and then, with ``--attack``, the attacks
on its run directory. Runs share one public-autoencoder cache. A run whose ``results.json``
already exists is not redone, so a stopped sweep resumes. Writes ``sweep.json``, ``sweep.csv``
and ``sweep.png`` (accuracy vs ε per mode and partition) in ``--out``.

    python experiments/dp_sweep.py --dataset fashion-mnist --epsilons inf 1 3 8 \\
        --partitions iid dirichlet --out runs/dp-sweep
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from fedlatent.attacks.run import run_attacks
from fedlatent.bench.compare import attack_columns
from fedlatent.jsonable import jsonable
from fedlatent.launch.superlink import LocalSuperLink
from fedlatent.runs import run_config, run_one


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--modes", nargs="+", default=["latent-share", "latent-fedavg", "raw"])
    ap.add_argument("--epsilons", nargs="+", type=float, default=[math.inf, 1.0, 3.0, 8.0])
    ap.add_argument("--partitions", nargs="+", default=["iid"])
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra run-config keys")
    ap.add_argument("--attack", choices=("full", "quick"), default=None)
    ap.add_argument("--out", type=Path, default=Path("runs/dp-sweep"))
    ap.add_argument("--collect", action="store_true", help="run nothing: tabulate the runs already in --out")
    args = ap.parse_args()
    out = args.out.resolve()
    extra = dict(item.split("=", 1) for item in args.set)
    base = {"dataset": args.dataset, "num-clients": args.clients, "cache-dir": str(out / ".cache"), **extra}
    if args.dataset != "digits":
        base.setdefault("ae-epochs", 30)
    plan = [(p, m, e) for p in args.partitions for m in args.modes for e in args.epsilons]
    rows: list[dict[str, Any]] = []
    if args.collect:
        for part, mode, eps in plan:
            run_dir = out / part / f"{mode}-eps{eps:g}"
            if (run_dir / "results.json").is_file():
                rows.append(row_of(part, mode, eps, json.loads((run_dir / "results.json").read_text()), run_dir))
        write(out, rows)
        return
    with tempfile.TemporaryDirectory(prefix="fedlatent-flwr-") as home, LocalSuperLink(flwr_home=Path(home)) as link:
        for i, (part, mode, eps) in enumerate(plan):
            run_dir = out / part / f"{mode}-eps{eps:g}"
            cfg = run_config({**base, "partition": part, "mode": mode, "epsilon": eps}, default_out=str(run_dir))
            print(f"\n== [{i + 1}/{len(plan)}] {part} {mode} epsilon={eps:g} -> {run_dir}", flush=True)
            start = time.time()
            if (run_dir / "results.json").is_file():
                res = json.loads((run_dir / "results.json").read_text())
                print("   done before; reusing its results", flush=True)
            else:
                res = run_one(link, cfg, verbose=False, timeout=6 * 3600)
            if args.attack and not (run_dir / "attacks.json").is_file():
                run_attacks(run_dir, preset=args.attack)
            row = row_of(part, mode, eps, res, run_dir)
            rows.append(row)
            print(f"   accuracy {row['accuracy']:.4f}  epsilon {row['epsilon']}  ({time.time() - start:.0f} s)")
            write(out, rows)


def row_of(part: str, mode: str, eps: float, res: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """One line of the sweep table: accuracy, privacy actually spent, attack worst cases."""
    return {
        "partition": part,
        "mode": mode,
        "target_epsilon": eps,
        "accuracy": res["accuracy"],
        "epsilon": res["epsilon"],
        "end_to_end_dp": res["end_to_end_dp"],
        "refusals": len(res["refusals"]),
        "wall_seconds": res["wall_seconds"],
        **attack_columns(run_dir / "attacks.json"),
    }


def write(out: Path, rows: list[dict[str, Any]]) -> None:
    """sweep.json / sweep.csv / sweep.png (rewritten after every run, so partial sweeps are readable)."""
    out.mkdir(parents=True, exist_ok=True)
    clean = jsonable(rows)
    (out / "sweep.json").write_text(json.dumps(clean, indent=2, allow_nan=False) + "\n")
    with (out / "sweep.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(clean)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    finite = sorted({r["target_epsilon"] for r in rows if math.isfinite(r["target_epsilon"])})
    x_inf = (max(finite) * 2) if finite else 1.0  # no DP drawn to the right of the largest ε
    for key in sorted({(r["partition"], r["mode"]) for r in rows}):
        pts = sorted(
            (r["target_epsilon"] if math.isfinite(r["target_epsilon"]) else x_inf, r["accuracy"])
            for r in rows
            if (r["partition"], r["mode"]) == key
        )
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{key[1]} ({key[0]})")
    ax.set_xscale("log")
    ax.set_xlabel(f"target ε per client (rightmost point: no DP, drawn at {x_inf:g})")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
