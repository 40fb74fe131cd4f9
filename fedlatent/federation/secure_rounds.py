"""Distributed DP-SGD on the server: each round one step over the union of the clients' records, via SecAgg+.

Per round: the global model goes to every live client; each returns its integer share (clipped
per-record gradients of a Poisson sample, rounded, plus Skellam noise) through Flower's SecAgg+
(``secagg.secure_sum``); the server decodes the sum into the gradient of one centralized DP-SGD
step and applies its optimizer (``optimizer``/``lr``/``momentum``). It records, per round, which
partitions the sum holds: its own ε of each client is computed from that record
(``report.privacy_summary``), never taken from a reply.

The server view holds what the server received: the sum of each round (``secure/rNNN.npz``),
with the partitions in it, and no client's vector (there is none to hold).
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
from flwr.app import ArrayRecord, RecordDict
from flwr.common import Scalar
from flwr.server.workflow import SecAggPlusWorkflow

from fedlatent.federation import payloads as P
from fedlatent.federation.context import RunContext
from fedlatent.federation.rounds import broadcast, identify
from fedlatent.federation.secagg import SecureRoundFailed, secure_sum, workflow_for
from fedlatent.learning.models import Encoder
from fedlatent.learning.progress import Progress
from fedlatent.learning.training import encode, evaluate, make_optimizer
from fedlatent.plan import build_classifier
from fedlatent.privacy.distributed import server_gradient, set_flat_gradient
from fedlatent.privacy.statistics import (
    Projected,
    decode_statistics,
    fit_projection,
    lda_from_statistics,
    statistics_ridge,
)
from fedlatent.secure_plan import distributed_plan

log = logging.getLogger("fedlatent")
EVALUATIONS = 20  # test accuracy this many times over the run (and after the last round)


def server_optimizer(model: torch.nn.Module, *, kind: str, lr: float, momentum: float) -> torch.optim.Optimizer:
    """The server's optimizer of distributed DP-SGD: it only post-processes the privatized gradient."""
    return make_optimizer(list(model.parameters()), kind=kind, lr=lr, momentum=momentum)


def _workflow(run: RunContext, bound: int) -> tuple[SecAggPlusWorkflow, int]:
    """Flower's SecAgg+ workflow for this run's clients and range, and its threshold."""
    threshold = run.cfg.secagg_threshold or run.cfg.min_survivors
    workflow = workflow_for(clients=len(run.nodes), threshold=threshold, bound=bound, timeout=run.cfg.round_timeout)
    return workflow, threshold


def _secure_round(
    run: RunContext, workflow: SecAggPlusWorkflow, threshold: int, *, rnd: int, phase: str, arrays: ArrayRecord
) -> tuple[np.ndarray, list[int]]:
    """One secure round with the live nodes: ``(the sum, the partitions it holds)``, recorded and counted."""
    if run.flower is None:
        raise RuntimeError("secure aggregation needs the ServerApp's Flower context (SecAgg+ keeps its state there)")
    nodes = [n for n in run.nodes if n not in run.silent]
    config: dict[str, Scalar] = {"server-round": rnd, "phase": phase, "run-key": run.checkpoint.run_key}
    try:
        total, survivors = secure_sum(run.flower, run.grid, workflow, rnd=rnd, nodes=nodes, model=arrays, config=config)
    except SecureRoundFailed as err:
        raise SecureRoundFailed(f"{err}; threshold {threshold} of {len(nodes)} live clients") from err
    pids = sorted(p for n in survivors if (p := run.contract.partition_of(n)) is not None)
    if len(pids) != len(survivors):
        raise RuntimeError(f"round {rnd}: a node in the sum holds no partition bound at identify")
    run.record.privacy.secure_rounds[rnd] = pids
    run.view.secure_sum(rnd, total, pids)
    run.traffic.down += P.payload_bytes(RecordDict({P.ARRAYS: arrays})) * len(nodes)
    run.traffic.up += total.nbytes * len(survivors)  # one int64 vector each (the masks' seeds not counted)
    return total, pids


def distributed_phase(run: RunContext, encoder: Encoder | None) -> torch.nn.Module:
    """``rounds`` distributed DP-SGD steps; a history row per evaluated round."""
    cfg, plan, record = run.cfg, run.plan, run.record
    if not run.contract.owner:
        identify(run)  # bind nodes to partitions: the server accounts per partition
    model = build_classifier(cfg, plan.dataset)
    dplan = distributed_plan(cfg, plan)
    expected_batch = dplan.sample_rate * sum(len(c) for c in plan.client_idx)
    optimizer = server_optimizer(model, kind=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum)
    workflow, threshold = _workflow(run, dplan.bound)
    xt, yt = plan.test()
    xt = encode(encoder, xt) if encoder is not None else xt  # once: the test features do not change
    every = max(1, cfg.rounds // EVALUATIONS)
    progress = Progress("distributed DP-SGD", cfg.rounds, unit="rounds")
    log.info("distributed DP: z=%.3f over the sum of >= %d shares, scale %.4g, range +-%d, %d parameters",
             dplan.noise_multiplier, dplan.min_survivors, dplan.scale, dplan.bound, dplan.dim)  # fmt: skip
    for rnd in range(1, cfg.rounds + 1):
        start = time.monotonic()
        total, pids = _secure_round(
            run, workflow, threshold, rnd=rnd, phase=P.PHASE_CLASSIFIER, arrays=P.module_to_arrays(model)
        )
        saturated = int((np.abs(total) >= len(pids) * dplan.bound).sum())
        set_flat_gradient(model, server_gradient(total, plan=dplan, expected_batch=expected_batch))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        row: dict[str, float] = {"round": rnd, "survivors": len(pids), "seconds": time.monotonic() - start}
        if saturated:
            row["saturated"] = saturated
            log.warning("round %d: %d coordinates of the sum at the range's edge (clamped shares)", rnd, saturated)
        if rnd % every == 0 or rnd == cfg.rounds:
            row["accuracy"] = evaluate(model, xt, yt)[1]
        record.history.append(row)
        progress(rnd, **{k: v for k, v in row.items() if k == "accuracy"})
    return model


def statistics_phase(run: RunContext, encoder: Encoder | None) -> torch.nn.Module:
    """latent-share by sufficient statistics: one secure round, then LDA on the noisy sums (``privacy.statistics``).

    The encoder (public or data-free) goes to every client first; the public projection travels
    with the secure round; the server fits the discriminant from the sum alone.
    """
    cfg, plan, record = run.cfg, run.plan, run.record
    if encoder is None:
        raise RuntimeError("statistics need an encoder the server holds")
    for m in broadcast(run, P.Q_SET_ENCODER, RecordDict({P.ARRAYS: P.module_to_arrays(encoder)})):
        run.inbox.accept(m, phase="set-encoder", rnd=0)
    if not run.contract.owner:
        identify(run)
    mean, basis = fit_projection(encode(encoder, plan.public()[0]), cfg.statistics_dim)
    dplan = distributed_plan(cfg, plan)
    workflow, threshold = _workflow(run, dplan.bound)
    arrays = ArrayRecord([mean.numpy(), basis.numpy()])
    total, pids = _secure_round(run, workflow, threshold, rnd=1, phase="statistics", arrays=arrays)
    k = plan.dataset.num_classes
    sums, counts, moment = decode_statistics(total, num_classes=k, dim=cfg.statistics_dim, clip=cfg.stat_clip,
                                             scale=dplan.scale)  # fmt: skip
    noise = math.sqrt(dplan.share_variance * len(pids)) / dplan.scale * cfg.stat_clip  # per moment entry
    ridge = statistics_ridge(clip=cfg.stat_clip, dim=cfg.statistics_dim, moment_noise_std=noise, records=counts.sum())
    weights, biases = lda_from_statistics(sums, counts, moment, ridge=ridge)
    model = Projected(mean, basis, clip=cfg.stat_clip, num_classes=k)
    with torch.no_grad():
        model.linear.weight.copy_(torch.from_numpy(weights).float())
        model.linear.bias.copy_(torch.from_numpy(biases).float())
    log.info("LDA fitted on the secure sum of %d clients' statistics (%d entries, ridge %.3g)", len(pids), dplan.dim,
             ridge)  # fmt: skip
    record.history.append({"round": 1, "survivors": len(pids), "learner": "lda-statistics"})
    return model
