"""Flower ClientApp: a thin adapter from Messages to the pure functions of fedlatent.

Handlers (message type -> what the client does):

- ``train`` with ``config.phase == "encoder"``: one FedAvg round of the federated autoencoder.
- ``train`` with ``config.phase == "classifier"``: local training of the federated classifier
  (image classifier in ``raw``; latent classifier on its own encoded data otherwise).
- ``evaluate``: accuracy of the global classifier on the test split encoded with this
  client's encoder (the ``local`` encoder, which the server never holds).
- ``query.set_encoder``: keep the server's frozen encoder (``public``/``federated``; latent-fedavg).
- ``query.local_encoder``: train a private autoencoder; keep only its encoder, in state.
- ``query.share_latents``: send encoded latents and labels of the private partition, through
  the server's encoder sent with the query, or the local one in state.

Each message may run in a fresh process, so the encoder lives in ``context.state`` (the
only thing Flower persists per node) and the data plan comes from the config (decoded and
partitioned once per process, ``plan.make_plan``).
In the latent modes no handler ever puts an image into a reply.
"""

from __future__ import annotations

import dataclasses
import random

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedlatent.config import RunConfig
from fedlatent.federation import payloads as P
from fedlatent.learning.models import Encoder
from fedlatent.learning.seeding import generator
from fedlatent.learning.training import encode, evaluate, train_autoencoder, train_classifier
from fedlatent.plan import (
    DataPlan,
    build_autoencoder,
    build_classifier,
    build_encoder,
    dp_train_round,
    make_plan,
    new_ledger,
    release_noise_std,
)
from fedlatent.privacy import client as dp
from fedlatent.privacy.ledger import Ledger

app = ClientApp()
ENCODER_STATE = "encoder"
LEDGER_STATE = "dp-ledger"


def _setup(context: Context) -> tuple[RunConfig, DataPlan, int]:
    cfg = RunConfig.from_run_config(context.run_config)
    pid = int(context.node_config["partition-id"])
    n = int(context.node_config.get("num-partitions", cfg.num_clients))  # type: ignore[arg-type]
    if cfg.num_clients == 0:  # "every SuperNode": the federation says how many there are
        cfg = dataclasses.replace(cfg, num_clients=n)
    elif n != cfg.num_clients:
        raise ValueError(f"federation has {n} SuperNodes but config num-clients = {cfg.num_clients}")
    if cfg.client_threads:  # small models on shared cores: extra intra-op threads only contend
        torch.set_num_threads(cfg.client_threads)
    return cfg, make_plan(cfg), pid


def _new_encoder(cfg: RunConfig, plan: DataPlan) -> Encoder:
    return build_encoder(cfg, plan.dataset)


def _encoder(context: Context, cfg: RunConfig, plan: DataPlan) -> Encoder:
    return P.load_arrays(_new_encoder(cfg, plan), P.arrays(context.state, ENCODER_STATE))


def failing(cfg: RunConfig, rnd: int) -> set[int]:
    """Fault injection (``fail-fraction``, for tests): the partitions that crash in training round ``rnd``.

    Exactly ``round(fail-fraction * num-clients)`` of them, drawn anew each round from the run seed.
    """
    k = round(cfg.fail_fraction * cfg.num_clients)
    return set(random.Random(f"{cfg.seed}:{rnd}:fail").sample(range(cfg.num_clients), k)) if k else set()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One round of local training: the autoencoder or the classifier."""
    cfg, plan, pid = _setup(context)
    config = P.config_of(msg)
    x, y = plan.client(pid)
    rnd = int(config.get("server-round", 0))  # type: ignore[arg-type]
    if pid in failing(cfg, rnd):
        raise RuntimeError(f"fault injection (fail-fraction={cfg.fail_fraction}): partition {pid} crashes round {rnd}")
    model: torch.nn.Module
    if config.get("phase") == P.PHASE_ENCODER:
        ae = P.load_arrays(build_autoencoder(cfg, plan.dataset), P.arrays(msg.content))
        gen = generator(cfg.seed, pid, rnd, 0)
        if cfg.encoder_dp:
            return _train_private(msg, context, cfg, ae, x, y, pid, gen, encoder=True)
        loss = train_autoencoder(ae, x, epochs=cfg.ae_epochs, batch_size=cfg.batch_size, lr=cfg.lr, generator=gen)
        model = ae
    else:
        model = P.load_arrays(build_classifier(cfg, plan.dataset), P.arrays(msg.content))
        inputs = encode(_encoder(context, cfg, plan), x) if cfg.is_latent else x
        gen = generator(cfg.seed, pid, rnd, 1)
        if cfg.dp:
            return _train_private(msg, context, cfg, model, inputs, y, pid, gen)
        loss = train_classifier(
            model, inputs, y, epochs=cfg.local_epochs, batch_size=cfg.batch_size, lr=cfg.lr, generator=gen
        )
    metrics = {"num-examples": len(x), P.UNIT_WEIGHT: 1, "train-loss": loss, "partition-id": pid}
    return P.reply(msg, metrics=metrics, arrays={P.ARRAYS: P.module_to_arrays(model)})


def _train_private(
    msg: Message,
    context: Context,
    cfg: RunConfig,
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    pid: int,
    gen: torch.Generator,
    *,
    encoder: bool = False,
) -> Message:
    """A DP-SGD round, or a refusal when the round would overspend the client's budget."""
    ledger = _load_ledger(context.state, cfg)
    metrics, trained = dp_train_round(cfg, model, x, y, ledger=ledger, generator=gen, encoder=encoder)
    _save_ledger(context.state, ledger)
    metrics.update({"num-examples": len(x), P.UNIT_WEIGHT: 1, "partition-id": pid})
    return P.reply(msg, metrics=metrics, arrays={P.ARRAYS: P.module_to_arrays(model)} if trained else None)


def _load_ledger(state: RecordDict, cfg: RunConfig) -> Ledger:
    """The client's ledger from its persistent state (a fresh one on first use)."""
    if LEDGER_STATE in state.config_records:
        return Ledger.from_config(state.config_records[LEDGER_STATE])
    return new_ledger(cfg)


def _save_ledger(state: RecordDict, ledger: Ledger) -> None:
    """Persist the ledger in the client's state (it survives fresh ClientApp processes)."""
    state[LEDGER_STATE] = ConfigRecord(ledger.to_config())  # type: ignore[arg-type]


@app.evaluate()
def evaluate_(msg: Message, context: Context) -> Message:
    """Test accuracy of the received classifier through this client's own encoder."""
    cfg, plan, pid = _setup(context)
    model = P.load_arrays(build_classifier(cfg, plan.dataset), P.arrays(msg.content))
    x, y = plan.test()
    inputs = encode(_encoder(context, cfg, plan), x) if cfg.is_latent else x
    loss, acc = evaluate(model, inputs, y)
    return P.reply(msg, metrics={"num-examples": len(x), "loss": loss, "accuracy": acc, "partition-id": pid})


@app.query("identify")
def identify(msg: Message, context: Context) -> Message:
    """Say which partition this node holds (the server's seeded sampling draws partitions)."""
    _, plan, pid = _setup(context)
    return P.reply(msg, metrics={"num-examples": len(plan.client_idx[pid]), "partition-id": pid})


@app.query("set_encoder")
def set_encoder(msg: Message, context: Context) -> Message:
    """Check and keep the frozen encoder the server distributes."""
    cfg, plan, pid = _setup(context)
    record = P.arrays(msg.content)
    P.load_arrays(_new_encoder(cfg, plan), record)
    context.state[ENCODER_STATE] = record
    return P.reply(msg, metrics={"num-examples": len(plan.client_idx[pid]), "partition-id": pid})


@app.query("local_encoder")
def local_encoder(msg: Message, context: Context) -> Message:
    """Train a private autoencoder; only its encoder is kept, and it never leaves."""
    cfg, plan, pid = _setup(context)
    x, _ = plan.client(pid)
    ae = build_autoencoder(cfg, plan.dataset)
    loss = train_autoencoder(
        ae, x, epochs=cfg.ae_epochs, batch_size=cfg.batch_size, lr=cfg.lr, generator=generator(cfg.seed, pid, 0, 2)
    )
    context.state[ENCODER_STATE] = P.module_to_arrays(ae.encoder)  # the decoder is dropped here
    return P.reply(msg, metrics={"num-examples": len(x), "recon-loss": loss, "partition-id": pid})


@app.query("share_latents")
def share_latents(msg: Message, context: Context) -> Message:
    """Encode the private partition and send latents + labels (no images).

    The encoder comes with the query when the server holds one, else from this client's state.
    """
    cfg, plan, pid = _setup(context)
    x, y = plan.client(pid)
    if P.ARRAYS in msg.content.array_records:
        encoder = P.load_arrays(_new_encoder(cfg, plan), P.arrays(msg.content))
    else:
        encoder = _encoder(context, cfg, plan)
    latents = encode(encoder, x)
    metrics: dict[str, float] = {"num-examples": len(x), "partition-id": pid}
    if cfg.dp:
        ledger = _load_ledger(context.state, cfg)
        released = dp.release_latents(
            latents,
            y,
            clip=cfg.latent_clip,
            noise_std=release_noise_std(cfg),
            label_epsilon=cfg.label_epsilon,
            num_classes=plan.dataset.num_classes,
            ledger=ledger,
            generator=generator(cfg.seed, pid, 0, 3),
        )
        _save_ledger(context.state, ledger)
        if released is None:
            return P.reply(msg, metrics={**metrics, "refused": 1, "epsilon-spent": ledger.spent()})
        latents, y, extra = released
        metrics.update(extra)
    record: ArrayRecord = P.pack_latents(latents.numpy(), y.numpy())
    return P.reply(msg, metrics=metrics, arrays={P.LATENTS: record})
