"""The client's side of a SecAgg+ round: Flower's mod where the server asks for it, and the distributed-DP share.

``secagg_when_asked`` runs Flower's ``secaggplus_mod`` on the ``train`` messages of a SecAgg+
round (they carry its config record) and lets every other message through: the same ClientApp
serves plain FedAvg, queries and secure rounds. The mod handles the protocol's stages itself and
calls the ``train`` handler once per round, in the stage that collects masked vectors, with the
legacy ``fitins.*`` records; ``distributed_reply`` answers it with the client's integer share in
the legacy ``fitres.*`` layout the mod expects.

The share itself (``privacy.distributed.client_share``) and its accounting (a Skellam round in
the client's ``Ledger``, at the noise of the planned minimum of survivors) are pure functions;
this module only moves them in and out of Flower's records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable

from fedlatent.config import RunConfig
from fedlatent.plan import DataPlan, build_classifier, noise_generator
from fedlatent.privacy.distributed import client_share, integer_share
from fedlatent.privacy.ledger import Ledger
from fedlatent.privacy.statistics import Projected, client_statistics
from fedlatent.secure_plan import distributed_plan

log = logging.getLogger("fedlatent")
SECAGG_CONFIGS = "secaggplus_configs"  # the record Flower's workflow adds to every SecAgg+ message
FITINS_CONFIG, FITINS_PARAMETERS = "fitins.config", "fitins.parameters"


def secagg_when_asked(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's ``secaggplus_mod`` for the train messages of a SecAgg+ round; any other message passes."""
    if msg.metadata.message_type == MessageType.TRAIN and SECAGG_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


def is_secure_round(msg: Message) -> bool:
    """True for the message the mod hands on in a SecAgg+ round (legacy ``fitins`` records)."""
    return FITINS_CONFIG in msg.content.config_records


def secure_config(msg: Message) -> ConfigRecord:
    """The round's config in a SecAgg+ round (the legacy ``fitins.config`` record)."""
    return msg.content.config_records[FITINS_CONFIG]


def ordered_model(cfg: RunConfig, plan: DataPlan, arrays: ArrayRecord) -> torch.nn.Module:
    """The classifier with the legacy record's arrays ("0", "1", ... in ``state_dict`` order) loaded, shapes checked."""
    model = build_classifier(cfg, plan.dataset)
    state = model.state_dict()
    values = [a.numpy() for a in _ordered(arrays)]
    shapes = [tuple(t.shape) for t in state.values()]
    if [v.shape for v in values] != shapes:
        raise ValueError(f"the model sent has arrays {[v.shape for v in values]}, the classifier {shapes}")
    tensors = [torch.from_numpy(np.asarray(v, dtype=np.float32)) for v in values]
    model.load_state_dict(dict(zip(state, tensors, strict=True)))
    return model


def _ordered(arrays: ArrayRecord) -> list:
    """The legacy record's arrays in order (its keys are "0", "1", ...: the workflow drops the names)."""
    return [arrays[k] for k in sorted(arrays, key=int)]


def distributed_reply(
    msg: Message,
    *,
    cfg: RunConfig,
    plan: DataPlan,
    pid: int,
    inputs: Callable[[], torch.Tensor],
    ledger: Ledger,
) -> tuple[Message, Ledger]:
    """The client's share of one distributed DP-SGD round as a legacy FitRes; the ledger that paid for it.

    ``inputs`` gives the records the classifier trains on (latents or images). Raises
    ``BudgetExhausted`` when the round would overspend: under SecAgg+ a refusal is a dropout.
    """
    rnd = int(secure_config(msg).get("server-round", 0))  # type: ignore[arg-type]
    dplan = distributed_plan(cfg, plan)
    spent = ledger.record_skellam(dplan.round_of(dplan.min_survivors))  # raises before anything is computed
    _, y = plan.client(pid)
    generator = noise_generator(cfg, pid, rnd, 4)
    if cfg.mode == "latent-share":  # one release of sufficient statistics on the public projection
        mean, basis = (a.numpy() for a in _ordered(msg.content.array_records[FITINS_PARAMETERS]))
        projected = Projected(torch.from_numpy(mean), torch.from_numpy(basis), clip=cfg.stat_clip, num_classes=1)
        with torch.no_grad():
            stats = client_statistics(projected.project(inputs()), y, num_classes=plan.dataset.num_classes,
                                      clip=cfg.stat_clip)  # fmt: skip
        share, clamped = integer_share(stats, plan=dplan, generator=generator)
    else:
        model = ordered_model(cfg, plan, msg.content.array_records[FITINS_PARAMETERS])
        share, clamped = client_share(model, inputs(), y, plan=dplan, generator=generator)
    if clamped:  # a > 8-sigma event by the plan's range; it stays with the client (a count is data-dependent)
        log.warning("partition %d round %d: %d coordinates clamped to the secure-sum range", pid, rnd, clamped)
    content = RecordDict(
        {
            "fitres.parameters": ArrayRecord([share.astype(np.int64)]),
            "fitres.num_examples": MetricRecord({"num_examples": 1}),  # = max_weight: the mod scales by 1
            "fitres.metrics": ConfigRecord({"partition-id": pid, "epsilon-spent": spent}),
            "fitres.status": ConfigRecord({"code": 0, "message": "ok"}),
        }
    )
    return Message(content, reply_to=msg), ledger
