"""Probe behind the training defaults: batch size x learning rate of the public autoencoder and the server MLP.

What: on the public split of a data set, trains the public autoencoder for a fixed number of
epochs at several (batch size, learning rate) pairs and reports wall time, the reconstruction
loss on the test split and the accuracy of a latent classifier trained on the public latents;
then, on one encoder's latents of the private split, the latent-share server MLP at several
pairs (accuracy on the test split, wall time). One thread, as a ClientApp or ServerApp gets.

Why: the defaults were batch 32 and lr 1e-3 everywhere; a larger batch makes an epoch several
times cheaper on CPUs, and the learning rate must grow with it to keep the loss. The defaults
in ``config.py`` are the cheapest pair whose quality matches batch 32 here.

    OMP_NUM_THREADS=1 python experiments/speed_defaults.py --dataset fashion-mnist --out runs/speed-defaults.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fedlatent.config import RunConfig
from fedlatent.learning.models import LatentClassifier
from fedlatent.learning.seeding import generator
from fedlatent.learning.training import encode, evaluate, train_autoencoder, train_classifier
from fedlatent.plan import build_autoencoder, make_plan

AE_PAIRS = [(32, 1e-3), (128, 1e-3), (128, 2e-3), (256, 2e-3), (256, 4e-3)]
SERVER_PAIRS = [(32, 1e-3), (128, 1e-3), (128, 2e-3), (256, 2e-3), (512, 4e-3)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--ae-epochs", type=int, default=30)
    ap.add_argument("--server-epochs", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("runs/speed-defaults.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = RunConfig.from_run_config({"dataset": args.dataset, "num-clients": 10})
    plan = make_plan(cfg)
    x, y = plan.public()
    xt, yt = plan.test()
    private = torch.cat([plan.client(p)[0] for p in range(cfg.num_clients)])
    private_y = torch.cat([plan.client(p)[1] for p in range(cfg.num_clients)])
    rows: dict[str, list[dict[str, float]]] = {"public_autoencoder": [], "server_mlp": []}
    encoders = {}
    for bs, lr in AE_PAIRS:
        ae = build_autoencoder(cfg, plan.dataset)
        start = time.time()
        loss = train_autoencoder(ae, x, epochs=args.ae_epochs, batch_size=bs, lr=lr, generator=generator(0, 0))
        seconds = time.time() - start
        with torch.no_grad():
            test_loss = float(torch.nn.functional.binary_cross_entropy(ae.eval()(xt), xt))
        probe = LatentClassifier(latent_dim=cfg.latent_dim, num_classes=10)
        z, zt = encode(ae.encoder, x), encode(ae.encoder, xt)
        train_classifier(probe, z, y, epochs=20, batch_size=128, lr=2e-3, generator=generator(0, 1))
        row = {"batch_size": bs, "lr": lr, "seconds": seconds, "train_loss": loss, "test_loss": test_loss}
        row["public_latent_accuracy"] = evaluate(probe, zt, yt)[1]
        rows["public_autoencoder"].append(row)
        encoders[(bs, lr)] = ae.encoder
        print(json.dumps(row), flush=True)
    encoder = encoders[AE_PAIRS[0]]
    z, zt = encode(encoder, private), encode(encoder, xt)
    for bs, lr in SERVER_PAIRS:
        model = LatentClassifier(latent_dim=cfg.latent_dim, num_classes=10)
        start = time.time()
        train_classifier(
            model, z, private_y, epochs=args.server_epochs, batch_size=bs, lr=lr, generator=generator(0, 2)
        )
        row = {"batch_size": bs, "lr": lr, "seconds": time.time() - start, "accuracy": evaluate(model, zt, yt)[1]}
        rows["server_mlp"].append(row)
        print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
