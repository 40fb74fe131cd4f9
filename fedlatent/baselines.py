"""The public-only bar: what the public split alone gives, with no client at all.

What: ``public_only(cfg)`` trains classifiers on the public split only — the image classifier
on public images; with a ``public`` encoder, the latent classifier on public latents (the same
public autoencoder as the federation, from the same cache); and always a linear classifier on
the public images' ScatterNet features (data-free, so anyone holding the public split has it) —
for the epochs a client's model sees in the federation (``rounds x local-epochs``), at least
``BAR_MIN_EPOCHS``, and scores them on the test split. The bar is the best of them. With
``public-labels`` false the public split is images only: no classifier can be trained on it,
and the bar is chance, ``1 / classes`` (the expected accuracy of a label-free guess), with the
untrained classifier exported.

Why: a federation is worth its privacy cost only by what it adds beyond this; every table
shows it and each mode's ``lift`` = accuracy − bar (ARCHITECTURE.md, "The research question,
asked fairly"). With 12,000 labelled public Fashion-MNIST images the bar is already ~87%.
The floor on epochs and the ScatterNet classifier keep the bar from being weak by accident: a
run cut to a few rounds must not train its bar for a few epochs, and a ScatterNet federation
must beat what ScatterNet features of the public images alone give.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from torch import nn

from fedlatent.config import RunConfig
from fedlatent.learning.seeding import generator
from fedlatent.learning.training import encode, evaluate, train_classifier
from fedlatent.plan import build_classifier, build_encoder, make_plan, public_autoencoder

BAR_MIN_EPOCHS = 30  # a few hundred public records converge within this; fewer would flatter every lift


def public_only(cfg: RunConfig) -> dict[str, Any]:
    """Test accuracy of the classifiers trained on the public split alone (see module docstring).

    Returns
    -------
    dict
        ``accuracy`` (the bar), ``image_classifier``, ``latent_classifier`` (None without a
        public encoder), ``scatter_classifier``, ``public_records``, ``epochs`` and ``wall_seconds``.
    """
    return train_public_only(cfg)[1]


def train_public_only(cfg: RunConfig) -> tuple[nn.Module, dict[str, Any]]:
    """``public_only``'s scores and the trained image classifier (what ``--mode public-only`` exports)."""
    start = time.monotonic()
    plan = make_plan(cfg)
    x, y = plan.public()
    xt, yt = plan.test()
    if len(x) == 0:
        raise ValueError("public-fraction is 0: there is no public split to train on")
    epochs = max(cfg.rounds * cfg.local_epochs, BAR_MIN_EPOCHS)  # what a client's model sees, at least the floor
    bs, lr = cfg.batch_size, cfg.lr
    image = build_classifier(dataclasses.replace(cfg, mode="raw"), plan.dataset)
    if not cfg.public_labels:  # images without labels teach no classifier: the bar is chance
        chance = 1.0 / plan.dataset.num_classes
        chance_only: dict[str, Any] = {"image_classifier": None, "latent_classifier": None, "scatter_classifier": None}
        chance_only |= {"accuracy": chance, "chance": True}
        return image, chance_only | {"public_records": len(x), "epochs": 0, "wall_seconds": time.monotonic() - start}
    train_classifier(image, x, y, epochs=epochs, batch_size=bs, lr=lr, generator=generator(cfg.seed, 7))
    out: dict[str, Any] = {"image_classifier": evaluate(image, xt, yt)[1], "latent_classifier": None}
    if cfg.encoder == "public":
        ae, _, _ = public_autoencoder(cfg, plan)
        latent = build_classifier(dataclasses.replace(cfg, mode="latent-fedavg"), plan.dataset)
        z = encode(ae.encoder, x)
        train_classifier(latent, z, y, epochs=epochs, batch_size=bs, lr=lr, generator=generator(cfg.seed, 8))
        out["latent_classifier"] = evaluate(latent, encode(ae.encoder, xt), yt)[1]
    scatter = dataclasses.replace(cfg, mode="latent-fedavg", encoder="scatternet", latent_classifier="linear")
    features = build_encoder(scatter, plan.dataset)
    head = build_classifier(scatter, plan.dataset)
    z = encode(features, x)
    train_classifier(head, z, y, epochs=epochs, batch_size=bs, lr=lr, generator=generator(cfg.seed, 9))
    out["scatter_classifier"] = evaluate(head, encode(features, xt), yt)[1]
    scores = [out[k] for k in ("image_classifier", "latent_classifier", "scatter_classifier") if out[k] is not None]
    out.update(accuracy=max(scores), public_records=len(x), epochs=epochs, wall_seconds=time.monotonic() - start)
    return image, out
