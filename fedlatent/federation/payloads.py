"""The wire contract: every message body fedlatent sends or accepts, packed and checked here.

A client reply is untrusted input to the server: a wrong key, a wrong shape, NaN, labels
out of range or raw images where latents belong are rejected with a ``PayloadError`` that
the server logs before going on with the other clients. Keeping packing and checking in one
module means the server view on disk is, by construction, exactly what passed these checks.

Message bodies (RecordDict keys):

- ``arrays``  ArrayRecord: model weights (state_dict order), either direction.
- ``config``  ConfigRecord: server -> client instructions (``phase``, ``server-round``).
- ``metrics`` MetricRecord: client -> server numbers (``num-examples`` always).
- ``latents`` ArrayRecord with ``latents`` (n, d) float32 and ``labels`` (n,) int64.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TypeVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from torch import nn

M = TypeVar("M", bound=nn.Module)

ARRAYS, CONFIG, METRICS, LATENTS = "arrays", "config", "metrics", "latents"

# Metric every train reply carries with value 1: the weight of uniform averaging, which
# client-level DP needs (one client's influence on the mean must not depend on its size).
UNIT_WEIGHT = "unit-weight"

# Phases of the ServerApp, sent as config["phase"] so one @train handler serves both.
PHASE_ENCODER, PHASE_CLASSIFIER = "encoder", "classifier"

# Query message types ("query.<action>"; Flower requires the action to be an identifier).
Q_SET_ENCODER = "query.set_encoder"
Q_LOCAL_ENCODER = "query.local_encoder"
Q_SHARE_LATENTS = "query.share_latents"


class PayloadError(ValueError):
    """A message body does not satisfy the contract; the message says what is wrong."""


def module_to_arrays(module: nn.Module) -> ArrayRecord:
    """Weights of ``module`` as an ArrayRecord (detached CPU copies)."""
    return ArrayRecord({k: v.detach().cpu() for k, v in module.state_dict().items()})


def check_arrays(record: ArrayRecord, reference: Mapping[str, tuple[int, ...]]) -> None:
    """Require exactly the reference's keys and shapes, float dtype and finite values.

    Parameters
    ----------
    record
        The received weights.
    reference
        Key -> expected shape, e.g. from ``shapes_of(module)``.
    """
    if not isinstance(record, ArrayRecord):
        raise PayloadError(f"expected an ArrayRecord, got {type(record).__name__}")
    keys, expected = list(record.keys()), list(reference.keys())
    if keys != expected:
        missing = sorted(set(expected) - set(keys))
        extra = sorted(set(keys) - set(expected))
        raise PayloadError(f"weight keys differ from the model: missing {missing}, unexpected {extra}")
    for key in keys:
        array = record[key].numpy()
        if array.dtype.kind != "f":
            raise PayloadError(f"weight '{key}' has dtype {array.dtype}, expected a float dtype")
        if tuple(array.shape) != tuple(reference[key]):
            raise PayloadError(f"weight '{key}' has shape {array.shape}, expected {tuple(reference[key])}")
        if not np.isfinite(array).all():
            raise PayloadError(f"weight '{key}' contains NaN or infinite values")


def shapes_of(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every entry of ``module.state_dict()``."""
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def load_arrays(module: M, record: ArrayRecord) -> M:
    """Check ``record`` against ``module`` and load it in place; return the module."""
    check_arrays(record, shapes_of(module))
    module.load_state_dict(record.to_torch_state_dict())
    return module


def pack_latents(latents: np.ndarray, labels: np.ndarray) -> ArrayRecord:
    """Latents ``(n, d)`` and their labels ``(n,)`` as one ArrayRecord."""
    return ArrayRecord(
        {
            "latents": Array(np.ascontiguousarray(latents, dtype=np.float32)),
            "labels": Array(np.ascontiguousarray(labels, dtype=np.int64)),
        }
    )


def unpack_latents(record: ArrayRecord, *, latent_dim: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(latents, labels)`` after checking shapes, dtypes, finiteness and label range."""
    if not isinstance(record, ArrayRecord) or sorted(record.keys()) != ["labels", "latents"]:
        got = sorted(record.keys()) if isinstance(record, ArrayRecord) else type(record).__name__
        raise PayloadError(f"latent payload must hold exactly 'latents' and 'labels', got {got}")
    latents, labels = record["latents"].numpy(), record["labels"].numpy()
    if latents.ndim != 2 or latents.shape[1] != latent_dim:
        raise PayloadError(f"latents have shape {latents.shape}, expected (n, {latent_dim})")
    if labels.shape != (latents.shape[0],):
        raise PayloadError(f"labels have shape {labels.shape}, expected ({latents.shape[0]},)")
    if latents.shape[0] == 0:
        raise PayloadError("latent payload is empty")
    if latents.dtype.kind != "f":
        raise PayloadError("latents must be finite floats")
    with np.errstate(over="ignore"):  # checked after the cast: a finite float64 can overflow to inf
        latents = latents.astype(np.float32)
    if not np.isfinite(latents).all():
        raise PayloadError("latents must be finite floats")
    if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= num_classes:
        raise PayloadError(f"labels must be integers in [0, {num_classes})")
    return latents, labels.astype(np.int64)


def num_examples(content: RecordDict) -> int:
    """The reply's ``num-examples`` metric, checked to be a positive integer."""
    try:
        value = content[METRICS]["num-examples"]
    except KeyError as err:
        raise PayloadError("reply has no metrics['num-examples']") from err
    # isfinite first: int() of NaN/inf raises ValueError/OverflowError, not PayloadError.
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0 or int(value) != value:
        raise PayloadError(f"num-examples must be a positive integer, got {value!r}")
    return int(value)


def payload_bytes(content: RecordDict) -> int:
    """Bytes of the serialized arrays in a message body (protocol overhead excluded)."""
    return sum(record.count_bytes() for record in content.array_records.values())


def reply(
    message: Message, *, metrics: Mapping[str, float | int], arrays: Mapping[str, ArrayRecord] | None = None
) -> Message:
    """A client's reply: named ArrayRecords plus the ``metrics`` MetricRecord."""
    content = RecordDict({METRICS: MetricRecord(dict(metrics))})
    for key, record in (arrays or {}).items():
        content[key] = record
    return Message(content=content, reply_to=message)


def config_of(message: Message) -> ConfigRecord:
    """The message's ConfigRecord (empty when none was sent)."""
    return message.content.config_records.get(CONFIG, ConfigRecord())


def arrays(content: RecordDict, key: str = ARRAYS) -> ArrayRecord:
    """The ArrayRecord ``key`` of a message body, or a PayloadError naming it."""
    if key not in content.array_records:
        raise PayloadError(f"message has no ArrayRecord '{key}'")
    return content.array_records[key]


def metric(content: RecordDict, key: str) -> float:
    """A finite number from the body's ``metrics`` record, or a PayloadError naming it."""
    value = content.metric_records.get(METRICS, MetricRecord()).get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise PayloadError(f"metrics['{key}'] must be a finite number, got {value!r}")
    return float(value)
