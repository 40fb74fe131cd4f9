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
partitioned once per process, ``plan.make_plan``). A client with a ``client_store`` directory
also keeps its ledger and its last release there, so that a resumed run neither resets its ε
nor makes it pay twice for a round the server repeats (``_answer_once``).
In the latent modes no handler ever puts an image into a reply.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.clientapp import ClientApp

from fedlatent.config import RunConfig
from fedlatent.federation import payloads as P
from fedlatent.federation.client_store import ClientStore, Release
from fedlatent.federation.secagg_client import distributed_reply, is_secure_round, secagg_when_asked, secure_config
from fedlatent.learning.cache import data_digest
from fedlatent.learning.models import Autoencoder, Encoder
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
    noise_generator,
    release_noise_std,
)
from fedlatent.privacy import client as dp
from fedlatent.privacy.ledger import Ledger

app = ClientApp(mods=[secagg_when_asked])  # Flower's SecAgg+ mod, on the rounds that ask for it
ENCODER_STATE = "encoder"
LEDGER_STATE = "dp-ledger"
# (metrics, array records) of a reply, and the ledger that paid for it (None: no private step)
Answer = Callable[[], tuple[dict[str, float], dict[str, ArrayRecord], Ledger | None]]


def _store(msg: Message, context: Context, cfg: RunConfig, pid: int) -> ClientStore | None:
    """This client's store for the run: its own ``state-dir`` (node config) first, else ``client-state-dir``."""
    root = context.node_config.get("state-dir") or cfg.client_state_dir
    run_key = P.config_of(msg).get("run-key")
    if not root or not isinstance(run_key, str) or not run_key:
        return None
    return ClientStore(str(root), run_key=run_key, partition=pid)


def _resumed(msg: Message) -> bool:
    return P.config_of(msg).get("resumed") is True


def _answer_once(
    msg: Message, context: Context, store: ClientStore | None, name: str, rnd: int, answer: Answer
) -> Message:
    """Reply with ``answer()``, or with the stored release if this very request was answered before.

    A repeated request (same phase, round and digest of what the server sent) gets the same
    release again: post-processing, no new privacy cost. The release and the ledger that paid
    for it are stored in one commit before the reply leaves. Refusals are not stored (they cost
    nothing and leave the ledger as it was).
    """
    digest = request_digest(msg)
    if store is not None and (old := store.release(name)) is not None and (old.round, old.digest) == (rnd, digest):
        return P.reply(msg, metrics=old.metrics, arrays={k: P.numpy_record(v) for k, v in old.arrays.items()})
    metrics, arrays, ledger = answer()
    if "refused" not in metrics:
        state = ledger.to_config() if ledger is not None else None
        if store is not None:
            kept = {k: P.record_numpy(v) for k, v in arrays.items()}
            release = Release(round=rnd, digest=digest, metrics=dict(metrics), arrays=kept)
            store.save_release(name, release, ledger=state)
        if state is not None:  # for the next message of this Flower run
            context.state[LEDGER_STATE] = ConfigRecord(state)  # type: ignore[arg-type]
    return P.reply(msg, metrics=metrics, arrays=arrays)


def request_digest(msg: Message) -> str:
    """SHA-256 of what the server asked: message type, config (but ``resumed``) and every array sent."""
    config = {k: v for k, v in sorted(P.config_of(msg).items()) if k != "resumed"}
    head = np.frombuffer(f"{msg.metadata.message_type!s}|{config!r}".encode(), dtype=np.uint8)
    records = msg.content.array_records
    return data_digest(head, *(records[name][key].numpy() for name in sorted(records) for key in records[name]))


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
    """One round of local training: the autoencoder or the classifier (or a distributed-DP share)."""
    cfg, plan, pid = _setup(context)
    config = secure_config(msg) if is_secure_round(msg) else P.config_of(msg)
    x, y = plan.client(pid)
    rnd = int(config.get("server-round", 0))  # type: ignore[arg-type]
    if pid in failing(cfg, rnd):
        raise RuntimeError(f"fault injection (fail-fraction={cfg.fail_fraction}): partition {pid} crashes round {rnd}")
    if is_secure_round(msg):  # SecAgg+ collects this client's share of a distributed DP-SGD step
        ledger = _load_ledger(context, cfg, None, resumed=False)

        def inputs() -> torch.Tensor:
            return encode(_encoder(context, cfg, plan), x) if cfg.is_latent else x

        reply, ledger = distributed_reply(msg, cfg=cfg, plan=plan, pid=pid, ledger=ledger, inputs=inputs)
        context.state[LEDGER_STATE] = ConfigRecord(ledger.to_config())  # type: ignore[arg-type]
        return reply
    encoder = config.get("phase") == P.PHASE_ENCODER
    store = _store(msg, context, cfg, pid)

    def answer() -> tuple[dict[str, float], dict[str, ArrayRecord], Ledger | None]:
        model: torch.nn.Module
        if encoder:
            model = P.load_arrays(build_autoencoder(cfg, plan.dataset), P.arrays(msg.content))
            inputs, private, stream, epochs = x, cfg.encoder_dp, 0, cfg.ae_epochs
        else:
            model = P.load_arrays(build_classifier(cfg, plan.dataset), P.arrays(msg.content))
            inputs = encode(_encoder(context, cfg, plan), x) if cfg.is_latent else x
            private, stream, epochs = cfg.dp, 1, cfg.local_epochs
        metrics: dict[str, float] = {"num-examples": len(x), P.UNIT_WEIGHT: 1, "partition-id": pid}
        if private:  # DP-SGD, or a refusal when the round would overspend the budget
            ledger = _load_ledger(context, cfg, store, resumed=_resumed(msg))
            gen = noise_generator(cfg, pid, rnd, stream)
            spent, trained = dp_train_round(cfg, model, inputs, y, ledger=ledger, generator=gen, encoder=encoder)
            return metrics | spent, {P.ARRAYS: P.module_to_arrays(model)} if trained else {}, ledger
        gen, batch = generator(cfg.seed, pid, rnd, stream), cfg.batch_size
        if isinstance(model, Autoencoder):
            loss = train_autoencoder(model, x, epochs=epochs, batch_size=batch, lr=cfg.lr, generator=gen)
        else:
            loss = train_classifier(model, inputs, y, epochs=epochs, batch_size=batch, lr=cfg.lr, generator=gen,
                                    optimizer=cfg.optimizer, momentum=cfg.momentum)  # fmt: skip
        return metrics | {"train-loss": loss}, {P.ARRAYS: P.module_to_arrays(model)}, None

    return _answer_once(msg, context, store, "train-encoder" if encoder else "train-classifier", rnd, answer)


def _load_ledger(context: Context, cfg: RunConfig, store: ClientStore | None, *, resumed: bool) -> Ledger:
    """The client's ledger: from its store, else from Flower's state, else a fresh one.

    In a resumed run a client without a store refuses to start a fresh ledger: what it spent
    before the interruption lived in a Flower state that is gone, and starting again at ε = 0
    would overspend its budget.
    """
    if store is not None:
        state = store.ledger()
        return Ledger.from_config(state) if state is not None else new_ledger(cfg)
    if LEDGER_STATE in context.state.config_records:
        return Ledger.from_config(context.state.config_records[LEDGER_STATE])
    if resumed:
        raise RuntimeError(
            "resumed run: this client kept its privacy ledger in memory only (no state-dir / client-state-dir), "
            "so what it spent before the interruption is lost; it takes no private step"
        )
    return new_ledger(cfg)


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
    """Train a private autoencoder; only its encoder is kept (in state and store), and it never leaves."""
    cfg, plan, pid = _setup(context)
    x, _ = plan.client(pid)
    store = _store(msg, context, cfg, pid)
    kept = store.release("local-encoder") if store is not None else None
    if kept is not None:  # a resumed run: the same encoder, not a retrained one
        record, metrics = P.numpy_record(kept.arrays["encoder"]), kept.metrics
    else:
        ae = build_autoencoder(cfg, plan.dataset)
        gen = generator(cfg.seed, pid, 0, 2)
        loss = train_autoencoder(ae, x, epochs=cfg.ae_epochs, batch_size=cfg.batch_size, lr=cfg.lr, generator=gen)
        record = P.module_to_arrays(ae.encoder)  # the decoder is dropped here
        metrics = {"num-examples": len(x), "recon-loss": loss, "partition-id": pid}
        if store is not None:
            arrays = {"encoder": P.record_numpy(record)}
            store.save_release("local-encoder", Release(round=0, digest="", metrics=metrics, arrays=arrays))
    context.state[ENCODER_STATE] = record
    return P.reply(msg, metrics=metrics)


@app.query("share_latents")
def share_latents(msg: Message, context: Context) -> Message:
    """Encode the private partition and send latents + labels (no images), once.

    The encoder comes with the query when the server holds one, else from this client's state.
    """
    cfg, plan, pid = _setup(context)
    store = _store(msg, context, cfg, pid)

    def answer() -> tuple[dict[str, float], dict[str, ArrayRecord], Ledger | None]:
        x, y = plan.client(pid)
        if P.ARRAYS in msg.content.array_records:
            encoder = P.load_arrays(_new_encoder(cfg, plan), P.arrays(msg.content))
        else:
            encoder = _encoder(context, cfg, plan)
        latents = encode(encoder, x)
        metrics: dict[str, float] = {"num-examples": len(x), "partition-id": pid}
        ledger = None
        if cfg.dp:
            ledger = _load_ledger(context, cfg, store, resumed=_resumed(msg))
            released = dp.release_latents(
                latents,
                y,
                clip=cfg.latent_clip,
                noise_std=release_noise_std(cfg),
                label_epsilon=cfg.label_epsilon,
                num_classes=plan.dataset.num_classes,
                ledger=ledger,
                generator=noise_generator(cfg, pid, 0, 3),
            )
            if released is None:
                return {**metrics, "refused": 1, "epsilon-spent": ledger.spent()}, {}, ledger
            latents, y, extra = released
            metrics.update(extra)
        return metrics, {P.LATENTS: P.pack_latents(latents.numpy(), y.numpy())}, ledger

    return _answer_once(msg, context, store, "share-latents", 0, answer)
