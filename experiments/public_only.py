"""Baseline: what the public split alone gives, with no client at all (``fedlatent.baselines``).

A federation is only worth its privacy cost by what it adds beyond this baseline, so results
should be read against it. ``fedlatent compare`` computes it too; this script runs it alone.

    python experiments/public_only.py --set dataset=fashion-mnist ae-epochs=30 ae-labels=1.0 \\
        cache-dir=runs/dp-sweep/hybrid/.cache --out runs/dp-sweep/hybrid/public-only.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedlatent.baselines import public_only
from fedlatent.config import RunConfig
from fedlatent.jsonable import jsonable


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="run-config keys")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    cfg = RunConfig.from_run_config({"num-clients": 10, **dict(item.split("=", 1) for item in args.set)})
    out = {"config": jsonable(cfg.to_run_config()), **public_only(cfg)}
    print(f"public images only, image classifier: {out['image_classifier']:.4f}")
    if out["latent_classifier"] is not None:
        print(f"public latents only, latent classifier: {out['latent_classifier']:.4f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
