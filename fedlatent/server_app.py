"""Flower ServerApp: the run as four phases, each a short function.

1. encoder     ``public``: train the autoencoder on the public split, broadcast the encoder.
               ``federated``: FedAvg over the autoencoder, then broadcast its encoder.
               ``local``: ask every client to train its own; the server never sees it.
2. federation  ``raw`` / ``latent-fedavg``: FedAvg of the classifier (Flower's strategy).
               ``latent-share``: collect latents once, train the classifier on the server.
3. evaluation  on the test split: centrally when the server holds the encoder (or in
               ``raw``), else federated, each client through its own encoder.
4. export      ``results.json``, ``server_view/``, ``private_index/`` (see ``report``).
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy

from . import payloads as P
from .client_dp import release_noise_std
from .config import RunConfig
from .learners import fit_server_learner
from .models import Encoder
from .plan import DataPlan, build_autoencoder, build_classifier, generator, make_plan, public_autoencoder, share_clip
from .report import RunRecord, jsonable, run_directory
from .server_view import ServerView
from .strategy import ClientLevelDP, PrivacyLog, RecordingFedAvg, Traffic, accept
from .training import encode, evaluate, train_classifier

app = ServerApp()
log = logging.getLogger("fedlatent")


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run every phase and export the run directory."""
    _log_to_stream()
    start = time.time()
    cfg = RunConfig.from_run_config(context.run_config)
    nodes = wait_for_nodes(grid, cfg.num_clients)
    cfg = dataclasses.replace(cfg, num_clients=len(nodes))  # num-clients 0: every SuperNode
    out = run_directory(cfg)
    log.info("fedlatent run -> %s", out)
    plan = make_plan(cfg)
    record = RunRecord(cfg=cfg, out=out, plan=plan)
    view = ServerView(out / "server_view", settings=jsonable(cfg.to_run_config()))
    view.public_index(plan.public_idx)
    traffic = Traffic()

    encoder = encoder_phase(grid, nodes, cfg, plan, view, traffic, record.privacy) if cfg.is_latent else None
    if cfg.mode == "latent-share":
        model = share_phase(grid, nodes, cfg, plan, view, traffic, encoder, record)
    else:
        model = fedavg_phase(grid, cfg, plan, view, traffic, encoder, record)
    view.final_model(P.module_to_arrays(model))

    if cfg.is_latent and encoder is None:  # local encoders: only clients can evaluate
        last = record.history[-1] if record.history else {}
        if cfg.mode == "latent-fedavg" and last.get("round") == cfg.rounds and last.get("client_accuracy"):
            record.client_accuracy = last["client_accuracy"]  # the last round evaluated the final model
        else:
            record.client_accuracy = federated_evaluation(grid, nodes, model, view, traffic, cfg.rounds)
        record.accuracy = float(np.mean(list(record.client_accuracy.values())))
    else:
        record.accuracy = central_accuracy(model, plan, encoder)
    view.close()
    record.finish(bytes_up=traffic.up, bytes_down=traffic.down, seconds=time.time() - start)
    log.info("accuracy %.4f, results in %s", record.accuracy, out / "results.json")


def _log_to_stream() -> None:
    """Show fedlatent's progress in the run's log without touching the root logger."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("fedlatent: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def wait_for_nodes(grid: Grid, n: int, timeout: float = 600.0, settle: float = 3.0) -> list[int]:
    """Block until ``n`` SuperNodes are connected (``n = 0``: all, once their count settles)."""
    deadline = time.time() + timeout
    seen, since = -1, time.time()
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) != seen:
            seen, since = len(nodes), time.time()
        if (n and len(nodes) >= n) or (not n and nodes and time.time() - since >= settle):
            return nodes[:n] if n else nodes
        if time.time() > deadline:
            raise TimeoutError(f"only {len(nodes)} of num-clients={n} SuperNodes connected in {timeout:.0f}s")
        time.sleep(0.5)


def broadcast(grid: Grid, nodes: list[int], message_type: str, content: RecordDict, traffic: Traffic) -> list[Message]:
    """Send one body to every node and return their replies."""
    messages = traffic.sent(Message(content=content, message_type=message_type, dst_node_id=n) for n in nodes)
    return list(grid.send_and_receive(messages))


def encoder_phase(
    grid: Grid,
    nodes: list[int],
    cfg: RunConfig,
    plan: DataPlan,
    view: ServerView,
    traffic: Traffic,
    privacy: PrivacyLog,
) -> Encoder | None:
    """Make the encoder; return it when the server holds one (``local``: None)."""
    ds = plan.dataset
    if cfg.encoder == "local":
        replies = broadcast(grid, nodes, P.Q_LOCAL_ENCODER, RecordDict({P.CONFIG: ConfigRecord()}), traffic)
        ok = [accept(m, phase="local-encoder", rnd=0, view=view, traffic=traffic) for m in replies]
        log.info("local encoders trained on %d of %d clients", sum(p is not None for p in ok), len(nodes))
        return None
    if cfg.encoder == "public":
        ae, loss, hit = public_autoencoder(cfg, plan)
        how = "loaded from the cache" if hit else "trained"
        log.info("public autoencoder %s (%d records), loss %.4f", how, len(plan.public_idx), loss)
    else:
        ae = build_autoencoder(cfg, ds)
        strategy = RecordingFedAvg(
            phase=P.PHASE_ENCODER,
            shapes=P.shapes_of(ae),
            view=view,
            traffic=traffic,
            num_clients=cfg.num_clients,
            fraction_train=cfg.fraction_train,
            privacy=privacy,  # a DP encoder's rounds are in each client's ledger too
        )
        result = strategy.start(grid=grid, initial_arrays=P.module_to_arrays(ae), num_rounds=cfg.encoder_rounds)
        P.load_arrays(ae, result.arrays)
    encoder_arrays = P.module_to_arrays(ae.encoder)  # the decoder is discarded here
    view.encoder(
        encoder_arrays, arch={"image_shape": list(ds.image_shape), "latent_dim": cfg.latent_dim, "arch": cfg.ae_arch}
    )
    replies = broadcast(grid, nodes, P.Q_SET_ENCODER, RecordDict({P.ARRAYS: encoder_arrays}), traffic)
    for m in replies:
        accept(m, phase="set-encoder", rnd=0, view=view, traffic=traffic)
    return ae.encoder


def fedavg_phase(
    grid: Grid,
    cfg: RunConfig,
    plan: DataPlan,
    view: ServerView,
    traffic: Traffic,
    encoder: Encoder | None,
    record: RunRecord,
) -> torch.nn.Module:
    """FedAvg of the classifier; history from central or federated evaluation."""
    model = build_classifier(cfg, plan.dataset)
    central = not (cfg.is_latent and encoder is None)

    def evaluate_fn(rnd: int, arrays: ArrayRecord) -> MetricRecord | None:
        if rnd == 0:
            return None
        acc = central_accuracy(P.load_arrays(model, arrays), plan, encoder)
        record.history.append({"round": rnd, "accuracy": acc})
        log.info("round %d: test accuracy %.4f", rnd, acc)
        return MetricRecord({"accuracy": acc})

    strategy = RecordingFedAvg(
        phase=P.PHASE_CLASSIFIER,
        shapes=P.shapes_of(model),
        view=view,
        traffic=traffic,
        num_clients=cfg.num_clients,
        fraction_train=cfg.fraction_train,
        federated_evaluation=not central,
        privacy=record.privacy,
        weighted_by_key=P.UNIT_WEIGHT if cfg.client_dp_noise > 0 else "num-examples",
    )
    runner: Strategy = strategy
    if cfg.client_dp_noise > 0:
        runner = ClientLevelDP(strategy, noise_multiplier=cfg.client_dp_noise, clipping_norm=cfg.client_dp_clip)
        record.privacy.client_level = runner.multipliers  # filled in as rounds are released
    result = runner.start(
        grid=grid,
        initial_arrays=P.module_to_arrays(model),
        num_rounds=cfg.rounds,
        evaluate_fn=evaluate_fn if central else None,
    )
    if not central:
        for rnd, accs in sorted(strategy.client_eval.rounds.items()):
            record.history.append(
                {"round": rnd, "accuracy": float(np.mean(list(accs.values()))), "client_accuracy": accs}
            )
    return P.load_arrays(model, result.arrays)


def share_phase(
    grid: Grid,
    nodes: list[int],
    cfg: RunConfig,
    plan: DataPlan,
    view: ServerView,
    traffic: Traffic,
    encoder: Encoder | None,
    record: RunRecord,
) -> torch.nn.Module:
    """Collect every client's latents once, then train the classifier on the pool."""
    ds = plan.dataset
    replies = broadcast(grid, nodes, P.Q_SHARE_LATENTS, RecordDict({P.CONFIG: ConfigRecord()}), traffic)
    zs, ys = [], []
    for msg in replies:
        pid = accept(msg, phase="share-latents", rnd=0, view=view, traffic=traffic)
        if pid is None:
            continue
        try:
            if record.privacy.note(msg, pid=pid, phase="share-latents", rnd=0):
                continue
            z, y = P.unpack_latents(
                P.arrays(msg.content, P.LATENTS), latent_dim=cfg.latent_dim, num_classes=ds.num_classes
            )
        except (P.PayloadError, KeyError) as err:
            log.warning("rejected latents of partition %s: %s", pid, err)
            view.rejected("share-latents", 0, msg.metadata.src_node_id, str(err))
            continue
        view.latents(pid, z, y)
        zs.append(torch.from_numpy(z))
        ys.append(torch.from_numpy(y))
    if not zs:
        raise RuntimeError("no client shared valid latents; nothing to train on")
    z_all, y_all = torch.cat(zs), torch.cat(ys)
    log.info("pooled %d latents from %d clients", len(z_all), len(zs))
    model = build_classifier(cfg, ds)
    gen = generator(cfg, 0, 1)
    if cfg.learner != "mlp" or cfg.dp:  # a learner that knows the release (noise, clip, labels)
        learner = fit_server_learner(
            z_all,
            y_all,
            kind=cfg.learner,
            num_classes=ds.num_classes,
            clip=share_clip(cfg),
            noise_std=release_noise_std(cfg) if cfg.dp else 0.0,
            label_epsilon=cfg.label_epsilon,
            epochs=cfg.server_epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            generator=gen,
        )
        model.load_state_dict(learner.state_dict())
        log.info("server learner %s fitted on %d released latents", cfg.learner, len(z_all))
        entry: dict[str, float | int | str] = {"round": 1, "learner": cfg.learner}
        if encoder is not None:
            entry["accuracy"] = central_accuracy(model, plan, encoder)
        record.history.append(entry)
        return model
    for epoch in range(1, cfg.server_epochs + 1):
        loss = train_classifier(model, z_all, y_all, epochs=1, batch_size=cfg.batch_size, lr=cfg.lr, generator=gen)
        row: dict[str, float | int | str] = {"round": epoch, "train_loss": loss}
        if encoder is not None:
            row["accuracy"] = central_accuracy(model, plan, encoder)
        record.history.append(row)
    return model


def central_accuracy(model: torch.nn.Module, plan: DataPlan, encoder: Encoder | None) -> float:
    """Test accuracy on the server: raw images, or latents of the server's encoder."""
    x, y = plan.test()
    return evaluate(model, encode(encoder, x) if encoder is not None else x, y)[1]


def federated_evaluation(
    grid: Grid, nodes: list[int], model: torch.nn.Module, view: ServerView, traffic: Traffic, rnd: int
) -> dict[int, float]:
    """Every client scores the model on the test split through its own encoder."""
    content = RecordDict({P.ARRAYS: P.module_to_arrays(model), P.CONFIG: ConfigRecord()})
    replies = broadcast(grid, nodes, "evaluate", content, traffic)
    accs: dict[int, float] = {}
    for msg in replies:
        pid = accept(msg, phase="evaluate", rnd=rnd, view=view, traffic=traffic)
        if pid is not None:
            accs[pid] = P.metric(msg.content, "accuracy")
    if not accs:
        raise RuntimeError("no client returned an evaluation")
    return accs
