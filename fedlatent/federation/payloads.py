"""The wire contract: every message body fedlatent sends or accepts, packed and checked here.

A client reply is untrusted input to the server. ``Contract.check`` validates a reply
completely before anything uses it: exactly the records and metric keys its phase sends
(``REPLIES``), every value finite and in range, weights of the global model's keys, shapes
and dtype, the partition id an integer in range, the node's own and unique in its round,
``num-examples`` equal to the partition size the server recomputes from the plan, latent rows
and labels. A reply that fails is rejected with a ``PayloadError`` whose plain-text message
the server logs and counts before going on with the other clients. Keeping packing and
checking in one module means the server view on disk is, by construction, exactly what
passed these checks.

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
from dataclasses import dataclass, field
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

# The replies each phase may send: (ArrayRecord names, MetricRecord keys); a reply matches one
# exactly. Keys: "plain" without DP, "dp" with it, "refused" when a DP client's budget is spent.
_ID = frozenset({"num-examples", "partition-id"})
_TRAIN = _ID | {UNIT_WEIGHT}
_REFUSED = frozenset({"refused", "epsilon-spent"})
_DP_TRAIN = frozenset({"epsilon-spent", "noise-multiplier"})
REPLIES: dict[str, dict[str, tuple[frozenset[str], frozenset[str]]]] = {
    "train": {
        "plain": (frozenset({ARRAYS}), _TRAIN | {"train-loss"}),
        "dp": (frozenset({ARRAYS}), _TRAIN | _DP_TRAIN),
        "refused": (frozenset(), _TRAIN | _REFUSED),
    },
    "evaluate": {"plain": (frozenset(), _ID | {"loss", "accuracy"})},
    "set-encoder": {"plain": (frozenset(), _ID)},
    "identify": {"plain": (frozenset(), _ID)},
    "local-encoder": {"plain": (frozenset(), _ID | {"recon-loss"})},
    "share-latents": {
        "plain": (frozenset({LATENTS}), _ID),
        "dp": (frozenset({LATENTS}), _ID | _DP_TRAIN | {"noise-std"}),
        "refused": (frozenset(), _ID | _REFUSED),
    },
}
REPLIES["final-evaluate"] = REPLIES["evaluate"]  # the last evaluation, after the rounds: its own answers
EVALUATE_PHASES = frozenset({"evaluate", "final-evaluate"})  # they count the test split, not a partition
_NON_NEGATIVE = frozenset({"train-loss", "loss", "recon-loss", "noise-multiplier", "noise-std"})
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
    """One array of a record, decoded; bytes that do not decode are a PayloadError, not a crash."""
    try:
        return np.asarray(record[key].numpy())
    except Exception as err:  # noqa: BLE001 - any decoding failure of client bytes is the client's fault
        raise PayloadError(f"array '{key}' does not decode: {plain_text(err, 120)}") from err


@dataclass
class Contract:
    """What the server accepts from clients in one run, and who already answered.

    Built once per run from facts the server knows (``sizes``: the records of every partition,
    recomputed from the plan; the test split's size; the budget; which phases run DP-SGD); ``check`` validates one
    reply and, when it passes, binds its node to its partition and marks the partition as
    answered in that round. Binding is first come: a node keeps its partition for the run and
    no other node may report it.
    """

    sizes: tuple[int, ...]
    num_classes: int
    latent_dim: int
    test_size: int = 0  # records of the test split, which federated evaluation scores
    epsilon: float = math.inf
    dp_phases: frozenset[str] = frozenset()
    owner: dict[int, int] = field(default_factory=dict)  # partition -> node
    bound: dict[int, int] = field(default_factory=dict)  # node -> partition: owner inverted, read for every reply
    answered: set[tuple[str, int, int]] = field(default_factory=set)  # (phase, round, partition)

    def partition_of(self, node: int) -> int | None:
        """The partition a node is bound to, or None before its first accepted reply."""
        return self.bound.get(node)

    def check(
        self, msg: Message, *, phase: str, rnd: int, weights: Mapping[str, tuple[int, ...]] | None = None
    ) -> tuple[int, dict[str, np.ndarray]]:
        """Validate one reply of ``phase``; return ``(partition id, decoded arrays)`` or raise PayloadError.

        ``weights``: key -> shape of the model a train reply updates (FedAvg phases).
        """
        if msg.has_error():
            # Ray and Flower wrap the client's exception in a long preamble: its own words come last.
            text = plain_text(msg.error.reason, limit=100_000).rsplit("Message: ", 1)[-1].removesuffix("'>")
            raise PayloadError(f"client error: {text if len(text) <= 400 else '...' + text[-397:]}")
        content, kind = msg.content, "train" if weights is not None else phase
        if content.config_records:
            raise PayloadError(f"unexpected ConfigRecord(s) {sorted(content.config_records)}")
        if list(content.metric_records) != [METRICS]:
            raise PayloadError(f"expected exactly one MetricRecord '{METRICS}', got {sorted(content.metric_records)}")
        metrics, names = content.metric_records[METRICS], frozenset(content.array_records)
        dp = phase in self.dp_phases  # a DP phase never sends a plain reply, a plain one never a DP one
        allowed = {k: v for k, v in REPLIES[kind].items() if (k != "plain") == dp}
        match = [k for k, (arrays, keys) in allowed.items() if names == arrays and frozenset(metrics) == keys]
        if not match:
            expected = " or ".join(f"arrays {sorted(a)} + metrics {sorted(m)}" for a, m in allowed.values())
            raise PayloadError(f"reply holds arrays {sorted(names)} + metrics {sorted(metrics)}; expected {expected}")
        values = {k: _finite(k, v) for k, v in metrics.items()}
        pid = self._partition(values, node=msg.metadata.src_node_id, phase=phase, rnd=rnd)
        self._values(values)
        decoded: dict[str, np.ndarray] = {}
        if ARRAYS in names:
            decoded = check_arrays(content.array_records[ARRAYS], weights or {})
        if LATENTS in names:
            decoded = self._latents(content.array_records[LATENTS], rows=self.sizes[pid])
        self.owner[pid] = msg.metadata.src_node_id
        self.bound[msg.metadata.src_node_id] = pid
        self.answered.add((phase, rnd, pid))
        return pid, decoded

    def _partition(self, values: Mapping[str, float], *, node: int, phase: str, rnd: int) -> int:
        raw = values["partition-id"]
        if not raw.is_integer() or not 0 <= raw < len(self.sizes):
            raise PayloadError(f"partition-id {raw!r} is not an integer in [0, {len(self.sizes)})")
        pid = int(raw)
        if self.owner.get(pid, node) != node:
            raise PayloadError(f"partition-id {pid} belongs to node {self.owner[pid]}")
        if (bound := self.partition_of(node)) not in (None, pid):
            raise PayloadError(f"node {node} reported partition {bound} before, now {pid}")
        if (phase, rnd, pid) in self.answered:
            raise PayloadError(f"partition-id {pid} already answered {phase} round {rnd}")
        records, of = (
            (self.test_size, "the test split") if phase in EVALUATE_PHASES else (self.sizes[pid], f"partition {pid}")
        )
        if values["num-examples"] != records:
            raise PayloadError(f"num-examples {values['num-examples']:g} != {records} records of {of}")
        return pid

    def _values(self, values: Mapping[str, float]) -> None:
        for key, value in values.items():
            if key in (UNIT_WEIGHT, "refused") and value != 1:
                raise PayloadError(f"metrics['{key}'] must be 1, got {value:g}")
            if key == "accuracy" and not 0.0 <= value <= 1.0:
                raise PayloadError(f"accuracy {value:g} is outside [0, 1]")
            if key == "epsilon-spent" and not 0.0 <= value <= self.epsilon * (1 + 1e-6):
                raise PayloadError(f"epsilon-spent {value:g} is outside [0, budget {self.epsilon:g}]")
            if key in _NON_NEGATIVE and value < 0:
                raise PayloadError(f"metrics['{key}'] must be >= 0, got {value:g}")

    def _latents(self, record: ArrayRecord, *, rows: int) -> dict[str, np.ndarray]:
        if sorted(record.keys()) != ["labels", "latents"]:
            raise PayloadError(f"latent payload must hold exactly 'latents' and 'labels', got {sorted(record.keys())}")
        latents, labels = _decode(record, "latents"), _decode(record, "labels")
        if latents.dtype != np.float32 or labels.dtype != np.int64:
            raise PayloadError(f"latents/labels have dtype {latents.dtype}/{labels.dtype}, expected float32/int64")
        if latents.shape != (rows, self.latent_dim) or labels.shape != (rows,):
            raise PayloadError(
                f"latents/labels have shape {latents.shape}/{labels.shape}, "
                f"expected ({rows}, {self.latent_dim})/({rows},)"
            )
        if not np.isfinite(latents).all():
            raise PayloadError("latents must be finite floats")
        if rows and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise PayloadError(f"labels must be integers in [0, {self.num_classes})")
        return {"latents": latents, "labels": labels}
