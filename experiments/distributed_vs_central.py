"""Distributed DP-SGD (Skellam shares, summed as SecAgg would) beside centralized DP-SGD, same data and steps.

The claims setting: Fashion-MNIST, 1% public, 10 IID clients holding 59,400 records, ScatterNet
features (data-free) and a linear classifier, as Tramèr & Boneh 2021's ScatterNet + linear
(their published settings, not tuned here: expected batch 8,192, SGD lr 16, momentum 0.9,
clip 0.1; group norm of 27 groups is part of fedlatent's ScatterNet features).

Three runs on the same encoded records, each ``--steps`` steps at sampling rate q = 8192/59400:

- ``distributed``: each client's clipped sum rounded to integers plus its Skellam share
  (``privacy.distributed.client_share``), the shares summed exactly (what SecAgg+ gives the
  server), the noise calibrated for ε with the Skellam accountant;
- ``central-same-noise``: one party, Poisson sample of the union, clipped sum plus Gaussian noise
  of the *same* standard deviation as the distributed sum's (in gradient units);
- ``central-opacus``: one party, Gaussian noise calibrated for ε by Opacus' RDP accountant (what a
  centralized trainer would use; slightly less noise than the Skellam bound needs).

    OMP_NUM_THREADS=1 python3 experiments/distributed_vs_central.py --epsilon 3 --steps 290 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from fedlatent.config import RunConfig
from fedlatent.learning.training import encode
from fedlatent.plan import build_encoder, make_plan
from fedlatent.privacy.accounting import calibrate_noise_multiplier, dp_sgd_epsilon
from fedlatent.privacy.distributed import (
    client_share,
    clipped_gradient_sum,
    plan_distributed,
    server_gradient,
    set_flat_gradient,
)


def features(cache: str) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor, torch.Tensor]:
    cfg = RunConfig.from_run_config(
        {
            "dataset": "fashion-mnist",
            "public-fraction": 0.01,
            "num-clients": 10,
            "encoder": "scatternet",
            "mode": "latent-fedavg",
            "cache-dir": cache,
        }
    )
    plan = make_plan(cfg)
    enc = build_encoder(cfg, plan.dataset)
    clients = []
    for p in range(cfg.num_clients):
        x, y = plan.client(p)
        clients.append((encode(enc, x), y))
    xt, yt = plan.test()
    return clients, encode(enc, xt), yt


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def run(
    kind: str,
    clients,
    xt,
    yt,
    *,
    steps: int,
    q: float,
    lr: float,
    clip: float,
    epsilon: float,
    seed: int,
    plan=None,
    std: float | None = None,
) -> dict:
    torch.manual_seed(seed)
    dim_in = clients[0][0].shape[1]
    model = torch.nn.Linear(dim_in, 10)
    torch.nn.init.zeros_(model.weight), torch.nn.init.zeros_(model.bias)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(10_000 + seed)
    n_total = sum(len(x) for x, _ in clients)
    curve = []
    start = time.monotonic()
    for step in range(1, steps + 1):
        if kind == "distributed":
            total = sum(client_share(model, x, y, plan=plan, generator=gen)[0] for x, y in clients)
            grad = server_gradient(total, plan=plan, expected_batch=q * n_total)
        else:
            x = torch.cat([c[0] for c in clients])
            y = torch.cat([c[1] for c in clients])
            mask = torch.rand(len(x), generator=gen) < q
            s = clipped_gradient_sum(model, x[mask], y[mask], clip=clip)
            s += torch.randn(len(s), generator=gen, dtype=torch.float64) * std
            grad = (s / (q * n_total)).float()
        opt.zero_grad()
        set_flat_gradient(model, grad)
        opt.step()
        if step % 10 == 0 or step == steps:
            curve.append((step, accuracy(model, xt, yt)))
            print(f"{kind} seed {seed} step {step}/{steps}: test accuracy {curve[-1][1]:.4f}", flush=True)
    return {"kind": kind, "seed": seed, "accuracy": curve[-1][1], "curve": curve, "seconds": time.monotonic() - start}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epsilon", type=float, default=3.0)
    ap.add_argument("--steps", type=int, default=290)
    ap.add_argument("--batch", type=int, default=8192)
    ap.add_argument("--lr", type=float, default=16.0)
    ap.add_argument("--clip", type=float, default=0.1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--kinds", nargs="+", default=["distributed", "central-same-noise", "central-opacus"])
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "fedlatent"))
    ap.add_argument("--out", default="experiments/results/distributed-vs-central.json")
    a = ap.parse_args()
    clients, xt, yt = features(a.cache)
    n_total = sum(len(x) for x, _ in clients)
    q, delta = a.batch / n_total, 1e-5
    dim = clients[0][0].shape[1] * 10 + 10
    plan = plan_distributed(
        epsilon=a.epsilon,
        delta=delta,
        clip=a.clip,
        dim=dim,
        sample_rate=q,
        rounds=a.steps,
        clients=len(clients),
        min_survivors=len(clients),
        max_records=max(len(x) for x, _ in clients),
    )
    same_std = math.sqrt(plan.variance) / plan.scale  # the distributed sum's noise, in gradient units
    z_opacus = calibrate_noise_multiplier(target_epsilon=a.epsilon, delta=delta, sample_rate=q, steps=a.steps)
    setting = {
        "epsilon": a.epsilon,
        "delta": delta,
        "steps": a.steps,
        "sample_rate": q,
        "clip": a.clip,
        "lr": a.lr,
        "dim": dim,
        "records": n_total,
        "scale": plan.scale,
        "skellam_noise_multiplier": plan.noise_multiplier,
        "same_noise_std": same_std,
        "same_noise_multiplier": same_std / a.clip,
        "opacus_noise_multiplier": z_opacus,
        "epsilon_distributed": plan.epsilon([len(clients)] * a.steps, delta=delta),
        "epsilon_local": plan.epsilon_local(a.steps, delta=delta),
        "epsilon_central_same_noise_gaussian": dp_sgd_epsilon(
            noise_multiplier=same_std / a.clip, sample_rate=q, steps=a.steps, delta=delta
        ),
    }
    print(json.dumps(setting, indent=1), flush=True)
    results = []
    for seed in a.seeds:
        for kind in a.kinds:
            std = same_std if kind == "central-same-noise" else z_opacus * a.clip
            results.append(
                run(
                    kind,
                    clients,
                    xt,
                    yt,
                    steps=a.steps,
                    q=q,
                    lr=a.lr,
                    clip=a.clip,
                    epsilon=a.epsilon,
                    seed=seed,
                    plan=plan,
                    std=std,
                )
            )
    summary = {}
    for kind in a.kinds:
        accs = [r["accuracy"] for r in results if r["kind"] == kind]
        summary[kind] = {
            "mean": float(np.mean(accs)),
            "std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
            "n": len(accs),
        }
    print(json.dumps(summary, indent=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"setting": setting, "summary": summary, "runs": results}, indent=1))


if __name__ == "__main__":
    main()
