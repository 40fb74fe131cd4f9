"""The centralized references of the performance benchmark: the federation's training in one process.

What: ``central_seconds(cfg)`` does what a ``raw`` or ``latent-fedavg`` federation of ``cfg``
computes — the public autoencoder and the encoding of every record in the latent mode, then
``rounds x local-epochs`` epochs of the classifier over all clients' records, plain or with
DP-SGD at the noise the clients would use — in this process, and returns its wall time.

Why: "federated ÷ centralized" is the overhead Flower and fedlatent add to the same work, a
ratio, which holds on a noisy machine where absolute seconds do not.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from fedlatent.config import RunConfig
from fedlatent.learning.seeding import generator
from fedlatent.learning.training import (
    classification_losses,
    encode,
    evaluate,
    train_classifier,
)
from fedlatent.plan import build_classifier, dp_round_plan, make_plan, public_autoencoder
from fedlatent.privacy.dp_sgd import dp_fit


def central_seconds(cfg: RunConfig) -> tuple[float, float]:
    """Wall seconds and test accuracy of the federation's training done centrally (see module docstring)."""
    if cfg.mode not in ("raw", "latent-fedavg") or (cfg.is_latent and cfg.encoder != "public"):
        raise ValueError("the centralized reference exists for raw and latent-fedavg with a public encoder")
    start = time.monotonic()
    plan = make_plan(dataclasses.replace(cfg, cache_dir=""))
    x = torch.cat([plan.client(p)[0] for p in range(cfg.num_clients)])
    y = torch.cat([plan.client(p)[1] for p in range(cfg.num_clients)])
    xt, yt = plan.test()
    model = build_classifier(cfg, plan.dataset)
    if cfg.is_latent:
        ae, _, _ = public_autoencoder(dataclasses.replace(cfg, cache_dir=""), plan)
        x, xt = encode(ae.encoder, x), encode(ae.encoder, xt)
    epochs = cfg.rounds * cfg.local_epochs
    gen = generator(cfg.seed, 9)
    if cfg.dp:
        # One client's noise (the federation's clients each train a tenth of the records).
        z = dp_round_plan(cfg, len(x) // cfg.num_clients).noise_multiplier
        dp_fit(
            model, x, y, record_loss_fn=classification_losses, epochs=epochs, batch_size=cfg.batch_size,
            lr=cfg.lr, noise_multiplier=z, max_grad_norm=cfg.max_grad_norm, generator=gen,
            optimizer=cfg.optimizer, momentum=cfg.momentum,
        )  # fmt: skip
    else:
        train_classifier(model, x, y, epochs=epochs, batch_size=cfg.batch_size, lr=cfg.lr, generator=gen,
                         optimizer=cfg.optimizer, momentum=cfg.momentum)  # fmt: skip
    accuracy = evaluate(model, xt, yt)[1]
    return time.monotonic() - start, accuracy
