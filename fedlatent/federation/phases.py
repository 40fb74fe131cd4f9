"""The ServerApp's phases, each a short function of one ``RunContext``.

1. encoder     ``public``: train the autoencoder on the public split, broadcast the encoder.
               ``federated``: FedAvg over the autoencoder, then broadcast its encoder.
               ``local``: ask every client to train its own; the server never sees it.
2. federation  ``raw`` / ``latent-fedavg``: FedAvg of the classifier (Flower's strategy).
               ``latent-share``: collect latents once, train the classifier on the server.
3. evaluation  on the test split: centrally when the server holds the encoder (or in
               ``raw``), else federated, each client through its own encoder.

Each step ends with a checkpoint (``run.checkpoint.save``), and each starts from the one a
resumed run continues (``run.resumed``): a step done is never done again, a step begun is
done again from its start.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from flwr.serverapp.strategy import Strategy

from fedlatent.federation import payloads as P
from fedlatent.federation.bounds import latent_bound
from fedlatent.federation.context import RunContext
from fedlatent.federation.rounds import broadcast, fedavg_rounds
from fedlatent.federation.strategy import ClientLevelDP, RecordingFedAvg, RoundFailed, client_floor
from fedlatent.learning.models import Autoencoder, Encoder
from fedlatent.learning.progress import Progress
from fedlatent.learning.seeding import generator
from fedlatent.learning.training import encode, evaluate, train_classifier
from fedlatent.plan import (
    DataPlan,
    build_autoencoder,
    build_classifier,
    build_encoder,
    public_autoencoder,
    release_noise_std,
    share_clip,
)
from fedlatent.privacy.learners import fit_server_learner

log = logging.getLogger("fedlatent")


def recording_fedavg(
    run: RunContext, *, phase: str, model: torch.nn.Module, federated_evaluation: bool = False, uniform: bool = False
) -> RecordingFedAvg:
    """The run's FedAvg over ``model``: replies checked, uploads recorded, ε reports kept.

    ``uniform``: every client weighs the same (``UNIT_WEIGHT``), as client-level DP needs.
    """
    cfg = run.cfg
    return RecordingFedAvg(
        phase=phase,
        shapes=P.shapes_of(model),
        inbox=run.inbox,
        num_clients=cfg.num_clients,
        seed=cfg.seed,
        min_clients=cfg.min_clients,
        fraction_train=cfg.fraction_train,
        federated_evaluation=federated_evaluation,
        privacy=run.record.privacy,  # a DP encoder's rounds are in each client's ledger too
        weighted_by_key=P.UNIT_WEIGHT if uniform else "num-examples",
        silent=run.silent,
        nodes=run.nodes,
    )


def encoder_phase(run: RunContext) -> Encoder | None:
    """Make the encoder; return it when the server holds one (``local``: None)."""
    cfg, plan, done = run.cfg, run.plan, run.checkpoint.stage.encoder_done
    if cfg.encoder == "local":
        replies = broadcast(run, P.Q_LOCAL_ENCODER, RecordDict({P.CONFIG: ConfigRecord()}))
        ok = [run.inbox.accept(m, phase="local-encoder", rnd=0) for m in replies]
        log.info("local encoders ready on %d of %d clients", sum(p is not None for p in ok), len(run.nodes))
        run.checkpoint.save(encoder_done=True)
        return None
    if done:  # a resumed run: the encoder it made is in the server view
        encoder = P.load_arrays(build_encoder(cfg, plan.dataset), run.view.load("encoder.npz"))
        log.info("%s encoder restored from the server view", cfg.encoder)
        return _distribute(run, encoder)
    if cfg.encoder == "scatternet":  # data-free: nothing to train, every party could build it
        encoder = build_encoder(cfg, plan.dataset)
        log.info("scatternet encoder: %d fixed features per image, no data used", cfg.feature_dim)
    elif cfg.encoder == "public":
        progress = Progress("public autoencoder", cfg.ae_epochs)
        ae, loss, hit = public_autoencoder(cfg, plan, on_epoch=progress)
        how = "loaded from the cache" if hit else "trained"
        log.info("public autoencoder %s (%d records), loss %.4f", how, len(plan.public_idx), loss)
        encoder = ae.encoder  # the decoder is discarded here
    else:
        encoder = _federated_autoencoder(run).encoder  # the decoder is discarded here
    run.view.encoder(P.module_to_arrays(encoder), arch=_arch(run))
    run.checkpoint.arrays.pop("autoencoder", None)  # the encoder is in the view from now on
    run.checkpoint.save(encoder_done=True)
    return _distribute(run, encoder)


def _federated_autoencoder(run: RunContext) -> Autoencoder:
    """FedAvg of the autoencoder, from round 1 or from the round a resumed run had reached."""
    cfg, stage = run.cfg, run.checkpoint.stage
    ae = build_autoencoder(cfg, run.plan.dataset)
    arrays = run.checkpoint.arrays["autoencoder"] if stage.encoder_round else P.module_to_arrays(ae)
    strategy = recording_fedavg(run, phase=P.PHASE_ENCODER, model=ae)

    def after_round(rnd: int, arrays: ArrayRecord) -> None:
        run.checkpoint.save({"autoencoder": arrays}, encoder_round=rnd)

    rounds = range(stage.encoder_round + 1, cfg.encoder_rounds + 1)
    return P.load_arrays(ae, fedavg_rounds(run, strategy, name="encoder", arrays=arrays, rounds=rounds,
                                           after_round=after_round))  # fmt: skip


def _arch(run: RunContext) -> dict[str, object]:
    cfg = run.cfg
    return {"image_shape": list(run.plan.dataset.image_shape), "latent_dim": cfg.feature_dim, "arch": cfg.encoder_arch}


def _distribute(run: RunContext, encoder: Encoder) -> Encoder:
    """Send the frozen encoder to the clients (latent-fedavg; latent-share sends it with its one query)."""
    if run.cfg.mode != "latent-share":
        content = RecordDict({P.ARRAYS: P.module_to_arrays(encoder)})
        for m in broadcast(run, P.Q_SET_ENCODER, content):
            run.inbox.accept(m, phase="set-encoder", rnd=0)
    return encoder


def fedavg_phase(run: RunContext, encoder: Encoder | None) -> torch.nn.Module:
    """FedAvg of the classifier, from round 1 or where a resumed run stopped; a history row per round."""
    cfg, plan, record, stage = run.cfg, run.plan, run.record, run.checkpoint.stage
    model = build_classifier(cfg, plan.dataset)
    central = not (cfg.is_latent and encoder is None)
    strategy = recording_fedavg(
        run, phase=P.PHASE_CLASSIFIER, model=model, federated_evaluation=not central, uniform=cfg.client_dp_noise > 0
    )
    runner: Strategy = strategy
    if cfg.client_dp_noise > 0:
        runner = ClientLevelDP(strategy, noise_multiplier=cfg.client_dp_noise, clipping_norm=cfg.client_dp_clip)
        runner.multipliers = record.privacy.client_level = record.privacy.client_level or []

    def after_round(rnd: int, arrays: ArrayRecord) -> None:
        row: dict[str, object] = {"round": rnd}
        if central:
            row["accuracy"] = central_accuracy(P.load_arrays(model, arrays), plan, encoder)
            log.info("round %d: test accuracy %.4f", rnd, row["accuracy"])
        elif accs := strategy.client_eval.rounds.get(rnd):
            row |= {"accuracy": float(np.mean(list(accs.values()))), "client_accuracy": accs}
        if rnd in strategy.round_seconds:  # how each round's cost grows with the clients (benchmarks read it)
            row["seconds"] = strategy.round_seconds[rnd]
        record.history.append(row)
        run.checkpoint.save({"classifier": arrays}, classifier_round=rnd)

    start = run.checkpoint.arrays["classifier"] if stage.classifier_round else P.module_to_arrays(model)
    rounds = range(stage.classifier_round + 1, cfg.rounds + 1)
    last = fedavg_rounds(run, runner, name="classifier", arrays=start, rounds=rounds, after_round=after_round)
    return P.load_arrays(model, last)


Pool = dict[int, tuple[torch.Tensor, torch.Tensor]]  # partition -> (latents, labels)


def collect_latents(run: RunContext, encoder: Encoder | None) -> Pool:
    """Ask every client for its latents; return every valid release by partition.

    The server's encoder, if it holds one, travels with the query: one message per client, and
    no copy of it in every node's state (1,000 clients kept 1,000 copies). The pool is in
    partition order, not in the order replies arrived, so that training on it is reproducible.
    """
    cfg, view = run.cfg, run.view
    pooled: Pool = {}
    if run.checkpoint.stage.latents:  # a resumed run: the releases it received are in the server view
        for pid, arrays in view.stored_latents().items():
            pooled[pid] = (torch.from_numpy(arrays["latents"]), torch.from_numpy(arrays["labels"]))
        log.info("latents of %d clients restored from the server view", len(pooled))
    else:
        content = RecordDict({P.CONFIG: ConfigRecord()})
        if encoder is not None:
            content[P.ARRAYS] = P.module_to_arrays(encoder)
        run.contract.latent_bound = latent_bound(cfg, encoder, run.plan.public()[0])
        dp, answered = "share-latents" in run.contract.dp_phases, set()
        for msg in broadcast(run, P.Q_SHARE_LATENTS, content):
            checked = run.inbox.accept(msg, phase="share-latents", rnd=0)
            if checked is None:
                continue
            answered.add(checked[0])
            if run.record.privacy.note(msg, pid=checked[0], phase="share-latents", rnd=0, dp=dp):
                continue
            pid, arrays = checked
            view.latents(pid, arrays["latents"], arrays["labels"])
            pooled[pid] = (torch.from_numpy(arrays["latents"]), torch.from_numpy(arrays["labels"]))
        if dp:  # asked, no accepted answer: the client may have released all the same
            run.record.privacy.missed(run.contract.unanswered(list(run.nodes), answered), "share-latents")
        floor = client_floor(cfg.min_clients, len(run.nodes))
        if len(pooled) < floor:
            raise RoundFailed(f"share-latents: {len(pooled)} client(s) shared valid latents, below min-clients={floor}")
        run.checkpoint.save(latents=True)
    return dict(sorted(pooled.items()))


def share_phase(run: RunContext, encoder: Encoder | None) -> torch.nn.Module:
    """Collect every client's latents once, then train the classifier on the pool.

    Second line of defence behind the contract's bounds (a ``local`` encoder's latents have
    none without DP): when the fit diverges, the release with the largest coordinate is dropped,
    logged, and the fit starts again on the rest, so one client's data cannot abort the run.
    """
    pooled = collect_latents(run, encoder)
    while True:
        try:
            return _fit_pool(run, encoder, pooled)
        except FloatingPointError as err:
            if len(pooled) <= client_floor(run.cfg.min_clients, len(run.nodes)):
                raise
            worst = max(pooled, key=lambda pid: float(pooled[pid][0].abs().max()))
            log.warning("server fit diverged (%s): dropping partition %s's latents and fitting again", err, worst)
            run.view.rejected("share-latents", 0, run.contract.owner.get(worst, -1), f"server fit diverged: {err}")
            run.record.history.clear()
            del pooled[worst]


def _fit_pool(run: RunContext, encoder: Encoder | None, pooled: Pool) -> torch.nn.Module:
    """The server's classifier on the pooled latents (``learner``, or the MLP with a history row per epoch)."""
    cfg, plan, record = run.cfg, run.plan, run.record
    z_all, y_all = torch.cat([z for z, _ in pooled.values()]), torch.cat([y for _, y in pooled.values()])
    log.info("pooled %d latents from %d clients", len(z_all), len(pooled))
    model = build_classifier(cfg, plan.dataset)
    gen = generator(cfg.seed, 0, 1)
    batch_size, lr = cfg.server_training(len(z_all))
    if cfg.release_aware_learner:
        learner = fit_server_learner(
            z_all,
            y_all,
            kind=cfg.learner,
            num_classes=plan.dataset.num_classes,
            clip=share_clip(cfg),
            noise_std=release_noise_std(cfg) if cfg.dp else 0.0,
            label_epsilon=cfg.label_epsilon,
            epochs=cfg.server_epochs,
            batch_size=batch_size,
            lr=lr,
            generator=gen,
        )
        model.load_state_dict(learner.state_dict())
        log.info("server learner %s fitted on %d released latents", cfg.learner, len(z_all))
        entry: dict[str, float | int | str] = {"round": 1, "learner": cfg.learner}
        if encoder is not None:
            entry["accuracy"] = central_accuracy(model, plan, encoder)
        record.history.append(entry)
        return model
    progress = Progress("server classifier", cfg.server_epochs)
    for epoch in range(1, cfg.server_epochs + 1):
        loss = train_classifier(model, z_all, y_all, epochs=1, batch_size=batch_size, lr=lr, generator=gen)
        progress(epoch, loss=loss)
        row: dict[str, float | int | str] = {"round": epoch, "train_loss": loss}
        if encoder is not None:
            row["accuracy"] = central_accuracy(model, plan, encoder)
        record.history.append(row)
    return model


def central_accuracy(model: torch.nn.Module, plan: DataPlan, encoder: Encoder | None) -> float:
    """Test accuracy on the server: raw images, or latents of the server's encoder."""
    x, y = plan.test()
    return evaluate(model, encode(encoder, x) if encoder is not None else x, y)[1]


def federated_evaluation(run: RunContext, model: torch.nn.Module, rnd: int) -> dict[int, float]:
    """Every client scores the model on the test split through its own encoder."""
    content = RecordDict({P.ARRAYS: P.module_to_arrays(model), P.CONFIG: ConfigRecord()})
    accs: dict[int, float] = {}
    for msg in broadcast(run, "evaluate", content):
        checked = run.inbox.accept(msg, phase="final-evaluate", rnd=rnd)
        if checked is not None:
            accs[checked[0]] = P.metric(msg.content, "accuracy")
    if not accs:
        raise RuntimeError("no client returned an evaluation")
    return accs
