"""Baseline: what the public split alone gives, with no client at all.

What: trains the run's classifiers on the public split only (the image classifier on public
images; the latent classifier on public latents of the public encoder, from the same cache the
federation used) and reports their test accuracy. Why: a public encoder trained with the public
labels (``ae-labels``) puts class information into the latents for free; a federation is only
worth its privacy cost by what it adds beyond this baseline, so results should be read against it.

    python experiments/public_only.py --set dataset=fashion-mnist ae-epochs=30 ae-labels=1.0 \\
        cache-dir=runs/dp-sweep/hybrid/.cache --out runs/dp-sweep/hybrid/public-only.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from fedlatent.config import RunConfig
from fedlatent.learning.seeding import generator
from fedlatent.learning.training import encode, evaluate, train_classifier
from fedlatent.plan import build_classifier, make_plan, public_autoencoder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="run-config keys")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    cfg = RunConfig.from_run_config({"num-clients": 10, **dict(item.split("=", 1) for item in args.set)})
    plan = make_plan(cfg)
    x, y = plan.public()
    xt, yt = plan.test()
    out: dict[str, object] = {"config": {k: str(v) for k, v in cfg.to_run_config().items()}, "public": len(x)}
    start = time.time()
    raw = build_classifier(dataclasses.replace(cfg, mode="raw"), plan.dataset)
    epochs = cfg.rounds * cfg.local_epochs  # the epochs a client's model sees in a federation
    train_classifier(raw, x, y, epochs=epochs, batch_size=cfg.batch_size, lr=cfg.lr, generator=generator(cfg.seed, 7))
    out["raw_image_classifier"] = evaluate(raw, xt, yt)[1]
    print(f"public images only, image classifier: {out['raw_image_classifier']:.4f} ({time.time() - start:.0f} s)")
    ae, _, hit = public_autoencoder(cfg, plan)
    print(f"public autoencoder {'from the cache' if hit else 'trained'}")
    z, zt = encode(ae.encoder, x), encode(ae.encoder, xt)
    latent = build_classifier(dataclasses.replace(cfg, mode="latent-fedavg"), plan.dataset)
    train_classifier(
        latent, z, y, epochs=epochs, batch_size=cfg.batch_size, lr=cfg.lr, generator=generator(cfg.seed, 8)
    )
    out["latent_classifier"] = evaluate(latent, zt, yt)[1]
    print(f"public latents only, latent classifier: {out['latent_classifier']:.4f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
