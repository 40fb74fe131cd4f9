"""Probe behind compare's Fashion-MNIST profile: which short DP-SGD recipe a 3-round federation can use.

What: the clients' path without Flower — each of 10 IID clients runs the run's DP-SGD round
(``plan.dp_train_round``: Opacus accountant, Poisson sampling, per-record clipping, Adam) on its
partition, the server averages the models (FedAvg, equal shards) — for a few (batch size, lr,
clip, local epochs) at the profile's 3 rounds and ε = 3, on ScatterNet features with a linear
head and on the public autoencoder's latents with the MLP head. Scored on the **public split**
(600 labelled images everyone holds), never on the test split: choosing a default on test data
would flatter it.

Why: compare's default must fit minutes, so it cuts rounds and epochs; under DP a short run
needs a recipe for few steps (larger batches, a larger step), which this probe ranks.

    OMP_NUM_THREADS=2 python3 experiments/quick_profile.py --out runs/quick-profile.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from pathlib import Path

import torch

from fedlatent.config import RunConfig
from fedlatent.data.loading import Dataset
from fedlatent.learning.seeding import secret_generator
from fedlatent.learning.training import encode, evaluate
from fedlatent.plan import build_classifier, build_encoder, dp_train_round, make_plan, new_ledger, public_autoencoder


def federate(cfg: RunConfig, shards: list[tuple[torch.Tensor, torch.Tensor]], ds: Dataset) -> torch.nn.Module:
    """FedAvg of ``cfg.rounds`` rounds of each shard's DP-SGD round; returns the global model."""
    model = build_classifier(cfg, ds)
    ledgers = [new_ledger(cfg) for _ in shards]
    for _ in range(cfg.rounds):
        states = []
        for (x, y), ledger in zip(shards, ledgers, strict=True):
            local = build_classifier(cfg, ds)
            local.load_state_dict(model.state_dict())
            dp_train_round(cfg, local, x, y, ledger=ledger, generator=secret_generator())
            states.append(local.state_dict())
        model.load_state_dict({k: torch.stack([s[k].float() for s in states]).mean(0) for k in states[0]})
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/quick-profile.json"))
    ap.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "fedlatent"))
    args = ap.parse_args()
    base = {"dataset": "fashion-mnist", "public-fraction": 0.01, "num-clients": 10, "rounds": 3, "epsilon": 3.0}
    base |= {"ae-epochs": 30, "cache-dir": args.cache_dir}
    rows = []
    for encoder, head in (("scatternet", "linear"), ("public", "mlp")):
        keys = {**base, "mode": "latent-fedavg", "encoder": encoder, "latent-classifier": head}
        cfg = RunConfig.from_run_config(keys)
        plan = make_plan(cfg)
        enc = public_autoencoder(cfg, plan)[0].encoder if encoder == "public" else build_encoder(cfg, plan.dataset)
        shards = [(encode(enc, x), y) for x, y in (plan.client(i) for i in range(cfg.num_clients))]
        xv, yv = plan.public()
        zv = encode(enc, xv)
        for bs, lr, clip, epochs in itertools.product((64, 256), (1e-3, 1e-2), (1.0, 0.1), (1,)):
            run = dataclasses.replace(cfg, batch_size=bs, lr=lr, max_grad_norm=clip, local_epochs=epochs)
            start = time.monotonic()
            model = federate(run, shards, plan.dataset)
            acc = evaluate(model, zv, yv)[1]
            row = {"encoder": encoder, "head": head, "batch": bs, "lr": lr, "clip": clip, "epochs": epochs}
            rows.append(row | {"public_accuracy": acc, "seconds": time.monotonic() - start})
            print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
