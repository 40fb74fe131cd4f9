"""The wire contract: every message body fedlatent sends or accepts, packed and checked here.

A client reply is untrusted input to the server: ``contract.Contract`` checks it whole with the
decoders here (``check_arrays``, ``_decode``, ``_finite``), and a reply that fails is rejected
with a ``PayloadError`` whose plain-text message the server logs and counts before going on
with the other clients.

Message bodies (RecordDict keys):

- ``arrays``  ArrayRecord: model weights (state_dict order), either direction.
- ``config``  ConfigRecord: server -> client instructions (``phase``, ``server-round``).
- ``metrics`` MetricRecord: client -> server numbers (``num-examples`` always).
- ``latents`` ArrayRecord with ``latents`` (n, d) float32 and ``labels`` (n,) int64.
"""

from __future__ import annotations

import math
import re
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
Q_IDENTIFY = "query.identify"

WEIGHT_DTYPE = np.dtype(np.float32)  # every model's parameters: a reply in another dtype is refused

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


class PayloadError(ValueError):
    """A message body does not satisfy the contract; the message says what is wrong."""


def module_to_arrays(module: nn.Module) -> ArrayRecord:
    """Weights of ``module`` as an ArrayRecord (detached CPU copies)."""
    return ArrayRecord({k: v.detach().cpu() for k, v in module.state_dict().items()})


def check_arrays(record: ArrayRecord, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Decoded weights with exactly the model's keys and shapes, in ``WEIGHT_DTYPE``, all finite."""
    if not isinstance(record, ArrayRecord):
        raise PayloadError(f"expected an ArrayRecord, got {type(record).__name__}")
    keys, expected = list(record.keys()), list(shapes)
    if keys != expected:
        missing, extra = sorted(set(expected) - set(keys)), sorted(set(keys) - set(expected))
        raise PayloadError(f"weight keys differ from the model: missing {missing}, unexpected {extra}")
    out = {}
    for key in keys:
        array = _decode(record, key)
        if array.dtype != WEIGHT_DTYPE:
            raise PayloadError(f"weight '{key}' has dtype {array.dtype}, expected {WEIGHT_DTYPE}")
        if tuple(array.shape) != tuple(shapes[key]):
            raise PayloadError(f"weight '{key}' has shape {array.shape}, expected {tuple(shapes[key])}")
        if not np.isfinite(array).all():
            raise PayloadError(f"weight '{key}' contains NaN or infinite values")
        out[key] = array
    return out


def record_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    """The arrays of a record as numpy, in order (for storing them)."""
    return {key: record[key].numpy() for key in record.keys()}


def numpy_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Inverse of ``record_numpy``."""
    return ArrayRecord({key: Array(np.ascontiguousarray(value)) for key, value in arrays.items()})


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
    return numpy_record(
        {"latents": latents.astype(np.float32, copy=False), "labels": labels.astype(np.int64, copy=False)}
    )


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
    return _finite(key, content.metric_records.get(METRICS, MetricRecord()).get(key))


def _finite(key: str, value: object) -> float:
    """``value`` of metric ``key`` as a float, or a PayloadError unless it is a finite int or float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PayloadError(f"metrics['{key}'] must be a finite number, got {plain_text(repr(value), 80)}")
    return float(value)


def plain_text(reason: object, limit: int = 500) -> str:
    """``reason`` as one plain line: terminal colour codes and control characters removed, cut at ``limit``."""
    text = _ANSI.sub("", str(reason))
    text = "".join(c if c.isprintable() else " " for c in text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _decode(record: ArrayRecord, key: str) -> np.ndarray:
    """One array of a record, decoded; bytes that do not decode are a PayloadError, not a crash.

    Flower's ``Array`` carries ``dtype`` and ``shape`` beside the bytes, which hold their own
    header; an array whose declared dtype or shape disagrees with what its bytes decode to is
    refused (a reader trusting either could be told one thing and given another).
    """
    item = record[key]
    try:
        array = np.asarray(item.numpy())
    except Exception as err:  # noqa: BLE001 - any decoding failure of client bytes is the client's fault
        raise PayloadError(f"array '{key}' does not decode: {plain_text(err, 120)}") from err
    if str(item.dtype) != str(array.dtype) or tuple(item.shape) != array.shape:
        raise PayloadError(
            f"array '{key}' declares {plain_text(item.dtype, 40)} {tuple(item.shape)} "
            f"but its bytes hold {array.dtype} {array.shape}"
        )
    return array
