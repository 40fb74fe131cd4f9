"""Mutations of one client reply for the outside fuzz of the ServerApp (``bench.server_fuzz``), and their oracle.

What: ``applicable`` lists the mutations that make sense for one reply (its records, metric keys,
DP figures); ``mutate`` applies one to a copy of the reply (``error``: a Flower ``Error`` instead).
The oracle: the server must accept the ``VALID`` kinds (the honest reply, or one changed only
within what an honest client could send), may accept or refuse the ``EITHER`` kinds (judged for
crashes and privacy only), and must refuse every other kind; ``duplicate`` (the honest reply sent
twice) answers a round already answered.

Why an explicit oracle, and why some lies are not generated: a fuzz that compares the server only
with itself finds crashes, never a server that believes a lie or refuses an honest client. A lie
whose validity hangs on what the server cannot know is left out rather than guessed: a partition
claimed before its owner spoke (first claim binds, by design), an ε claim between what the server
knows and what may have happened, a faked budget refusal.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, MetricRecord, RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict

from fedlatent.federation import payloads as P

VALID = frozenset({"honest", "large-loss", "edge-accuracy", "shrunk-update", "jittered-latents", "relabelled"})
# Sent for (a) and (d) only: absurd latents where the server holds no bound (a local encoder without
# DP) may be accepted, or dropped when the server's fit diverges (phases.share_phase).
EITHER = frozenset({"absurd-latents-unbounded"})
LOSSES = ("train-loss", "loss", "recon-loss")
NON_FINITE, LARGE = (math.nan, math.inf, -math.inf), (1e6, 1e30, 3e38)  # large: a bad model, not a broken reply
T = TypeVar("T")
GENERIC = ("non-finite-metric", "list-metric", "missing-metric", "extra-metric", "extra-record", "missing-record",
           "count-lie", "partition-out-of-range", "partition-not-integer", "error", "duplicate")  # fmt: skip
ID_KEYS = ("num-examples", "partition-id")


@dataclass(frozen=True)
class Facts:
    """What a mutation may use beside the reply: what the harness knows of the run.

    ``others``: partition -> records, of partitions a claim on which is a lie whatever the order of
    replies; ``sent``: the weights the train message sent; ``epsilon_one``: ε of this reply's DP
    event alone (the client's ledger); ``bounded``: the server bounds the latents.
    """

    partitions: int
    num_classes: int
    others: Mapping[int, int]
    sent: Mapping[str, np.ndarray] | None = None
    epsilon_one: float = 0.0
    bounded: bool = True


def wire(content: RecordDict) -> RecordDict:
    """The content as the SuperLink delivers it: Flower's protobuf encoding and back (also a deep copy)."""
    return recorddict_from_proto(ProtoRecordDict.FromString(recorddict_to_proto(content).SerializeToString()))


def _record(content: RecordDict) -> str | None:
    """The reply's ArrayRecord (weights or latents), if it has one."""
    return next((k for k in (P.ARRAYS, P.LATENTS) if k in content.array_records), None)


def applicable(content: RecordDict, facts: Facts) -> list[str]:
    """Every kind of mutation that makes sense for this reply, in a fixed order (valid ones included)."""
    metrics, record = content[P.METRICS], _record(content)
    kinds = list(GENERIC)
    kinds += ["steal-partition"] if facts.others else []
    kinds += ["out-of-range"] if set(metrics) - set(ID_KEYS) else []
    kinds += ["large-loss"] if set(LOSSES) & set(metrics) else []
    kinds += ["edge-accuracy"] if "accuracy" in metrics else []
    if record is not None:
        kinds += ["array-dtype", "array-shape", "non-finite-array", "garbage-bytes", "lying-metadata", "array-keys"]
    if record == P.ARRAYS:
        kinds += ["absurd-weights"] + (["shrunk-update"] if facts.sent is not None else [])
    if record == P.LATENTS:
        kinds += ["label-out-of-range", "jittered-latents", "relabelled"]
        kinds += ["absurd-latents" if facts.bounded else "absurd-latents-unbounded"]
    if "epsilon-spent" in metrics and "refused" not in metrics:
        kinds += ["epsilon-zero", "epsilon-lower", "epsilon-higher"]
        noise = [key for key in ("noise-multiplier", "noise-std") if key in metrics]
        kinds += [f"{key}-{how}" for key in noise for how in ("zero", "halved")]
    return kinds


Mutation = Callable[[RecordDict, dict[str, float], Facts, np.random.Generator], None]
Change = Callable[[dict[str, np.ndarray], str, Facts, np.random.Generator], None]  # of the decoded arrays


def _metric(update: Callable[[dict[str, float], Facts, np.random.Generator], None]) -> Mutation:
    """A mutation of the metric values alone."""
    return lambda content, metrics, facts, rng: update(metrics, facts, rng)


def _pick(rng: np.random.Generator, options: Sequence[T]) -> T:
    return options[int(rng.integers(len(options)))]


def _set(key: str, values: Callable[[dict[str, float], Facts], Sequence[float]]) -> Mutation:
    """Set metric ``key`` to one of ``values(metrics, facts)``."""
    return _metric(lambda m, f, rng: m.__setitem__(key, float(_pick(rng, values(m, f)))))


def _out_of_range(m: dict[str, float], f: Facts, rng: np.random.Generator) -> None:
    key = _pick(rng, sorted(set(m) - set(ID_KEYS)))
    bad = {"accuracy": [1.5, -0.1, 1 + 1e-9], P.UNIT_WEIGHT: [0.0, 2.0, 0.5, -1.0], "epsilon-spent": [-1.0, 1e9]}
    m[key] = _pick(rng, bad.get(key, [-1.0, -1e-9, -1e30]))  # losses and noise figures: negative


def _list_metric(m: dict[str, float], f: Facts, rng: np.random.Generator) -> None:
    """A metric as a list of numbers: a MetricRecord may hold one, the contract may not."""
    key = _pick(rng, sorted(m))
    m[key] = cast(float, [m[key], m[key]])


def _steal(m: dict[str, float], f: Facts, rng: np.random.Generator) -> None:
    """Claim a partition another node holds; its record count too, so that only the claim gives it away."""
    m["partition-id"] = pid = _pick(rng, sorted(f.others))
    if "accuracy" not in m:  # an evaluation counts the test split, not a partition
        m["num-examples"] = f.others[pid]


def _arrays(change: Change) -> Mutation:
    """A mutation of the decoded arrays of the reply's ArrayRecord, re-encoded honestly."""

    def run(content: RecordDict, metrics: dict[str, float], facts: Facts, rng: np.random.Generator) -> None:
        name = _record(content)
        assert name is not None
        arrays = P.record_numpy(content.array_records[name])
        change(arrays, name, facts, rng)
        content[name] = P.numpy_record(arrays)

    return run


def _poke(values: Sequence[float]) -> Change:
    """Set one coordinate of one float array to one of ``values``."""

    def change(a: dict[str, np.ndarray], name: str, f: Facts, rng: np.random.Generator) -> None:
        key = _pick(rng, [k for k, v in a.items() if v.dtype.kind == "f" and v.size])
        flat = a[key].reshape(-1).copy()
        flat[int(rng.integers(flat.size))] = _pick(rng, values)
        a[key] = flat.reshape(a[key].shape)

    return change


def _dtype(a: dict[str, np.ndarray], name: str, f: Facts, rng: np.random.Generator) -> None:
    key = str(_pick(rng, sorted(a)))
    a[key] = a[key].astype(np.int32 if a[key].dtype.kind == "f" else np.float32) if rng.random() < 0.5 else (
        a[key].astype(np.float64 if a[key].dtype != np.float64 else np.float32))  # fmt: skip


def _shape(a: dict[str, np.ndarray], name: str, f: Facts, rng: np.random.Generator) -> None:
    if name == P.LATENTS and rng.random() < 0.5:  # one record fewer, consistently: the row count lies
        a["latents"], a["labels"] = a["latents"][:-1], a["labels"][:-1]
        return
    key = str(_pick(rng, sorted(a)))
    a[key] = np.concatenate([a[key].reshape(-1), a[key].reshape(-1)[:1]])


def _keys(a: dict[str, np.ndarray], name: str, f: Facts, rng: np.random.Generator) -> None:
    key = str(_pick(rng, sorted(a)))
    if rng.random() < 0.5:
        a.pop(key)
    else:
        a[f"{key}-copy"] = a[key]


def _shrunk(a: dict[str, np.ndarray], name: str, f: Facts, rng: np.random.Generator) -> None:
    """Weights moved less than the honest update did (a smaller step in the same direction): within its bounds."""
    assert f.sent is not None
    u = float(rng.uniform(0.5, 1.0))
    for key in a:
        a[key] = (f.sent[key] + u * (a[key].astype(np.float64) - f.sent[key])).astype(np.float32)


def _absurd_latents(a: dict[str, np.ndarray], name: str, f: Facts, rng: np.random.Generator) -> None:
    z, row = a["latents"].copy(), int(rng.integers(len(a["latents"])))
    if rng.random() < 0.5:
        z[row, ::2] = np.finfo(np.float32).max
    else:  # one latent of L2 norm 1e4: hundreds of noise deviations past any clip
        z[row] = 1e4 * z[row] / max(float(np.linalg.norm(z[row])), 1e-12) if np.any(z[row]) else 1e4
    a["latents"] = z


def _bad_label(a: dict[str, np.ndarray], name: str, f: Facts, rng: np.random.Generator) -> None:
    y = a["labels"].copy()
    y[int(rng.integers(len(y)))] = _pick(rng, [f.num_classes, -1, 2**40])
    a["labels"] = y


def _jitter(a: dict[str, np.ndarray], name: str, f: Facts, rng: np.random.Generator) -> None:
    z = a["latents"]
    a["latents"] = (z * (1 + 0.01 * rng.standard_normal(z.shape).clip(-3, 3))).astype(np.float32)


def _garbage(content: RecordDict, metrics: dict[str, float], facts: Facts, rng: np.random.Generator) -> None:
    def junk(a: Array) -> Array:  # random bytes, or a valid .npy of pickled objects (never to be unpickled)
        buffer = io.BytesIO()
        np.save(buffer, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
        data = buffer.getvalue() if rng.random() < 0.25 else rng.bytes(int(rng.integers(0, 64)))
        return Array(a.dtype, a.shape, _pick(rng, [a.stype, "torch", ""]), data)

    _rewrite(content, rng, junk)


def _lying_metadata(content: RecordDict, metrics: dict[str, float], facts: Facts, rng: np.random.Generator) -> None:
    def lie(a: Array) -> Array:  # the bytes are valid; what the Array says of them is not
        if rng.random() < 0.5:
            dtype = "float16" if a.dtype != "float16" else "float32"
            return Array(dtype=dtype, shape=a.shape, stype=a.stype, data=a.data)
        shape = _pick(rng, [(*a.shape, 1), (2**31 - 1, 2**31 - 1)])  # an axis too many, an absurd size (int32)
        return Array(dtype=a.dtype, shape=shape, stype=a.stype, data=a.data)

    _rewrite(content, rng, lie)


def _rewrite(content: RecordDict, rng: np.random.Generator, change: Callable[[Array], Array]) -> None:
    name = _record(content)
    assert name is not None
    record = content.array_records[name]
    items = {k: record[k] for k in record}
    key = str(_pick(rng, sorted(items)))
    items[key] = change(items[key])
    content[name] = ArrayRecord(items)


def _extra_record(content: RecordDict, metrics: dict[str, float], facts: Facts, rng: np.random.Generator) -> None:
    records: list[ArrayRecord | MetricRecord | ConfigRecord] = [
        MetricRecord({"a": 1.0}), ConfigRecord({"a": "b"}), ArrayRecord({"a": Array(np.zeros(2, np.float32))})
    ]  # fmt: skip
    content[_pick(rng, ["extra", "config", "metrics2", "x"])] = _pick(rng, records)


def _missing_record(content: RecordDict, metrics: dict[str, float], facts: Facts, rng: np.random.Generator) -> None:
    del content[_record(content) or P.METRICS]
    metrics.clear()  # nothing to write back when the metrics went


MUTATIONS: dict[str, Mutation] = {
    "honest": _metric(lambda m, f, rng: None),
    "non-finite-metric": _metric(lambda m, f, rng: m.__setitem__(_pick(rng, sorted(m)), _pick(rng, NON_FINITE))),
    "list-metric": _metric(_list_metric),
    "missing-metric": _metric(lambda m, f, rng: m.__delitem__(_pick(rng, sorted(m)))),
    "extra-metric": _metric(lambda m, f, rng: m.__setitem__(_pick(rng, ["extra", "weight", "epsilon", "n"]), 1.0)),
    "count-lie": _set("num-examples", lambda m, f: [m["num-examples"] + d for d in (-1, 1, 0.5, 1e15)]),
    "partition-out-of-range": _set("partition-id", lambda m, f: [-1, f.partitions, f.partitions + 3, 2**40]),
    "partition-not-integer": _set("partition-id", lambda m, f: [m["partition-id"] + d for d in (0.5, 1e-9, -0.25)]),
    "steal-partition": _metric(_steal),
    "out-of-range": _metric(_out_of_range),
    "large-loss": _metric(lambda m, f, rng: m.__setitem__(next(k for k in LOSSES if k in m), _pick(rng, LARGE))),
    "edge-accuracy": _set("accuracy", lambda m, f: [0.0, 1.0]),
    "epsilon-zero": _set("epsilon-spent", lambda m, f: [0.0]),
    "epsilon-lower": _set("epsilon-spent", lambda m, f: [0.5 * f.epsilon_one]),
    "epsilon-higher": _set("epsilon-spent", lambda m, f: [m["epsilon-spent"] * r for r in (1.5, 1.01)]),
    "noise-multiplier-zero": _set("noise-multiplier", lambda m, f: [0.0]),
    "noise-multiplier-halved": _set("noise-multiplier", lambda m, f: [m["noise-multiplier"] / 2]),
    "noise-std-zero": _set("noise-std", lambda m, f: [0.0]),
    "noise-std-halved": _set("noise-std", lambda m, f: [m["noise-std"] / 2]),
    "extra-record": _extra_record,
    "missing-record": _missing_record,
    "array-dtype": _arrays(_dtype),
    "array-shape": _arrays(_shape),
    "non-finite-array": _arrays(_poke(NON_FINITE)),
    "array-keys": _arrays(_keys),
    "absurd-weights": _arrays(_poke([3.0e38, -3.4e38, 1e6, -2e3])),  # beyond any honest round
    "shrunk-update": _arrays(_shrunk),
    "absurd-latents": _arrays(_absurd_latents),
    "absurd-latents-unbounded": _arrays(_absurd_latents),
    "label-out-of-range": _arrays(_bad_label),
    "jittered-latents": _arrays(_jitter),
    "relabelled": _arrays(lambda a, name, f, rng: a.__setitem__("labels", rng.permutation(a["labels"]))),
    "garbage-bytes": _garbage,
    "lying-metadata": _lying_metadata,
}


def mutate(kind: str, content: RecordDict, facts: Facts, rng: np.random.Generator) -> RecordDict | Error:
    """A copy of ``content`` changed by one mutation of ``kind`` (``error``: an Error in its place)."""
    if kind == "error":  # a short reason, a long one, or one with terminal escapes and line breaks
        n = int(rng.integers(1000))
        reason = _pick(rng, [f"hostile client error {n}", f"error {n} " * 20_000, f"\x1b[31mred {n}\x1b[0m\n\rline"])
        return Error(code=int(rng.integers(0, 5)), reason=reason)
    content = wire(content)
    metrics = dict(content[P.METRICS])
    MUTATIONS[kind](content, metrics, facts, rng)  # type: ignore[arg-type]
    if metrics:
        content[P.METRICS] = MetricRecord(metrics)  # type: ignore[arg-type]
    return content
