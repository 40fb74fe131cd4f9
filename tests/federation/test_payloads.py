"""Tests for fedlatent.payloads: the wire contract, on real Flower records."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from flwr.app import DEFAULT_TTL, Array, ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict

from fedlatent.federation import payloads as P
from fedlatent.learning.models import LatentClassifier

D, K = 4, 10


def model(seed: int) -> LatentClassifier:
    torch.manual_seed(seed)
    return LatentClassifier(latent_dim=D, num_classes=K, hidden=(8,))


def record_of(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def numpy_state(m: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}


# --- weights -------------------------------------------------------------------------------


def test_module_arrays_round_trip():
    src, dst = model(0), model(1)
    assert not torch.equal(src.state_dict()["net.0.weight"], dst.state_dict()["net.0.weight"])
    record = P.module_to_arrays(src)
    assert list(record.keys()) == list(src.state_dict().keys())
    assert P.load_arrays(dst, record) is dst
    for key, value in src.state_dict().items():
        assert torch.equal(dst.state_dict()[key], value), key


def test_module_to_arrays_is_a_copy():
    m = model(0)
    record = P.module_to_arrays(m)
    before = record["net.0.weight"].numpy().copy()
    with torch.no_grad():
        m.net[0].weight.add_(1.0)
    assert np.array_equal(record["net.0.weight"].numpy(), before)


def test_check_arrays_accepts_matching_record():
    m = model(0)
    P.check_arrays(P.module_to_arrays(m), P.shapes_of(m))
    assert P.shapes_of(m)["net.0.weight"] == (8, D)


def test_check_arrays_rejects_missing_key():
    m = model(0)
    state = numpy_state(m)
    del state["net.2.bias"]
    with pytest.raises(P.PayloadError, match="net.2.bias"):
        P.check_arrays(record_of(state), P.shapes_of(m))


def test_check_arrays_rejects_extra_key():
    m = model(0)
    state = numpy_state(m) | {"backdoor": np.zeros(3, np.float32)}
    with pytest.raises(P.PayloadError, match="backdoor"):
        P.check_arrays(record_of(state), P.shapes_of(m))


def test_check_arrays_rejects_wrong_shape():
    m = model(0)
    state = numpy_state(m)
    state["net.0.weight"] = np.zeros((8, D + 1), np.float32)
    with pytest.raises(P.PayloadError, match="net.0.weight"):
        P.check_arrays(record_of(state), P.shapes_of(m))
    with pytest.raises(P.PayloadError, match="net.0.weight"):
        P.load_arrays(m, record_of(state))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_arrays_rejects_non_finite(bad):
    m = model(0)
    state = numpy_state(m)
    state["net.2.weight"][1, 2] = bad
    with pytest.raises(P.PayloadError, match="net.2.weight"):
        P.check_arrays(record_of(state), P.shapes_of(m))
    # load_arrays checks before loading: the model is untouched.
    before = numpy_state(m)
    with pytest.raises(P.PayloadError):
        P.load_arrays(m, record_of(state))
    assert all(np.array_equal(before[k], v) for k, v in numpy_state(m).items())


def test_check_arrays_rejects_integer_weights():
    m = model(0)
    state = numpy_state(m)
    state["net.0.bias"] = np.zeros(8, np.int64)
    with pytest.raises(P.PayloadError, match="net.0.bias"):
        P.check_arrays(record_of(state), P.shapes_of(m))


def test_check_arrays_rejects_non_record():
    with pytest.raises(P.PayloadError, match="ArrayRecord"):
        P.check_arrays(ConfigRecord({"a": 1}), {"a": ()})  # type: ignore[arg-type]


# --- bytes, replies (the checks of replies: test_contract.py) -----------------------------


def metrics(**values) -> RecordDict:
    return RecordDict({P.METRICS: MetricRecord(values)})


def array_content(n: int) -> RecordDict:
    return RecordDict({P.ARRAYS: record_of({"w": np.ones(n, np.float32), "b": np.ones(3, np.float64)})})


def test_payload_bytes():
    small, large = array_content(10), array_content(1000)
    raw_small = 10 * 4 + 3 * 8
    assert P.payload_bytes(small) > raw_small
    assert P.payload_bytes(large) > 1000 * 4 + 3 * 8
    assert P.payload_bytes(large) - P.payload_bytes(small) >= 990 * 4
    # Metrics and configs are not counted; several ArrayRecords add up.
    assert P.payload_bytes(metrics(**{"num-examples": 3})) == 0
    both = RecordDict({"a": record_of({"w": np.ones(10, np.float32)}), "b": record_of({"w": np.ones(10, np.float32)})})
    one = RecordDict({"a": record_of({"w": np.ones(10, np.float32)})})
    assert P.payload_bytes(both) == 2 * P.payload_bytes(one)


def incoming(message_type: str = "train") -> Message:
    """A message as a SuperNode receives it (full metadata, as delivered by the SuperLink)."""
    meta = Metadata(
        run_id=11,
        message_id="msg-1",
        src_node_id=0,
        dst_node_id=1,
        reply_to_message_id="",
        group_id="2",
        created_at=time.time(),
        ttl=DEFAULT_TTL,
        message_type=message_type,
    )
    content = RecordDict({P.CONFIG: ConfigRecord({"phase": P.PHASE_CLASSIFIER, "server-round": 2})})
    return Message(content=content, metadata=meta)


def test_reply_holds_metrics_and_arrays():
    msg = incoming()
    m = model(0)
    out = P.reply(msg, metrics={"num-examples": 12, "loss": 0.25}, arrays={P.ARRAYS: P.module_to_arrays(m)})
    assert dict(out.content[P.METRICS]) == {"num-examples": 12, "loss": 0.25}
    assert P.metric(out.content, "num-examples") == 12
    P.check_arrays(out.content[P.ARRAYS], P.shapes_of(m))
    assert out.metadata.reply_to_message_id == "msg-1"
    assert out.metadata.message_type == "train"
    assert out.metadata.dst_node_id == 0 and out.metadata.src_node_id == 1
    assert out.metadata.run_id == 11


def test_reply_without_arrays():
    out = P.reply(incoming("query.share_latents"), metrics={"num-examples": 1})
    assert list(out.content.array_records) == []
    assert out.metadata.message_type == P.Q_SHARE_LATENTS


def test_config_of_and_accessors():
    assert P.config_of(incoming())["phase"] == P.PHASE_CLASSIFIER
    meta = incoming().metadata
    bare = Message(content=RecordDict(), metadata=meta)
    assert dict(P.config_of(bare)) == {}
    record = record_of({"w": np.arange(6, dtype=np.float32).reshape(2, 3)})
    content = RecordDict({P.ARRAYS: record, P.METRICS: MetricRecord({"loss": 0.5, "bad": float("nan")})})
    assert P.arrays(content) is record
    with pytest.raises(P.PayloadError, match="latents"):
        P.arrays(content, P.LATENTS)
    assert P.metric(content, "loss") == 0.5
    for key in ("bad", "missing"):
        with pytest.raises(P.PayloadError, match=key):
            P.metric(content, key)
