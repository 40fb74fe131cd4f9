"""Replies as clients send them, for the server-side tests: valid ones per phase and the contract they meet."""

from __future__ import annotations

import time

import numpy as np
import torch
from flwr.app import ArrayRecord, Error, Message, MetricRecord, RecordDict
from flwr.app.metadata import Metadata

from fedlatent.federation import payloads as P
from fedlatent.federation.contract import Contract

SHAPES = {"weight": (2, 3), "bias": (2,)}
SIZES = (10, 30, 20, 20, 20, 20)
TEST = 50  # records of the test split: what an evaluation reply counts
D, K = 4, 10


def contract(sizes: tuple[int, ...] = SIZES, **kw: object) -> Contract:
    return Contract(sizes=sizes, test_size=TEST, num_classes=K, latent_dim=D, **kw)  # type: ignore[arg-type]


def reply_from(node: int, content: RecordDict | None = None, error: Error | None = None) -> Message:
    meta = Metadata(
        run_id=1,
        message_id=f"m{node}",
        src_node_id=node,
        dst_node_id=0,
        reply_to_message_id=f"to-{node}",
        group_id="1",
        created_at=time.time(),
        ttl=60.0,
        message_type="train",
    )
    if error is not None:
        return Message(error=error, metadata=meta)
    return Message(content=content, metadata=meta)


def update(weight: np.ndarray, *, pid: int, n: int | float | None = None, **metrics: float) -> RecordDict:
    """A plain train reply: weights of SHAPES (bias zero) and the four metrics a client sends."""
    arrays = ArrayRecord({"weight": torch.from_numpy(weight), "bias": torch.zeros(2)})
    values = {"num-examples": SIZES[pid] if n is None else n, P.UNIT_WEIGHT: 1, "train-loss": 0.5, "partition-id": pid}
    return RecordDict({P.ARRAYS: arrays, P.METRICS: MetricRecord({**values, **metrics})})


def evaluation(pid: int, acc: float, n: int | None = None) -> RecordDict:
    values = {"num-examples": TEST if n is None else n, "loss": 0.1, "accuracy": acc, "partition-id": pid}
    return RecordDict({P.METRICS: MetricRecord(values)})


def latents(z: np.ndarray, y: np.ndarray, *, pid: int, n: int | None = None) -> RecordDict:
    metrics = MetricRecord({"num-examples": SIZES[pid] if n is None else n, "partition-id": pid})
    return RecordDict({P.LATENTS: P.pack_latents(z, y), P.METRICS: metrics})
