"""The reply contract (``payloads.Contract``): every malformed or lying reply is named and refused.

Each case is one thing a hostile or broken client can send; the issue's list of replies that
used to abort a run or slip through is covered one by one, through Flower's own records.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, MetricRecord, RecordDict

from fedlatent.casting import ConfigError
from fedlatent.federation import payloads as P
from fedlatent.federation.contract import Contract
from tests.federation.replies import SHAPES, SIZES, D, K, contract, evaluation, latents, reply_from, update

GOOD = np.ones((2, 3), np.float32)


def check(content: RecordDict, *, phase: str = "classifier", node: int = 1, c: Contract | None = None, rnd: int = 1):
    weights = SHAPES if phase in ("classifier", "encoder") else None
    return (c or contract()).check(reply_from(node, content), phase=phase, rnd=rnd, weights=weights)


def with_metrics(content: RecordDict, **changes: object) -> RecordDict:
    values = {**dict(content[P.METRICS]), **changes}
    content[P.METRICS] = MetricRecord({k: v for k, v in values.items() if v is not None})  # type: ignore[misc]
    return content


def test_valid_replies_of_every_phase_pass_and_bind_their_node() -> None:
    c = contract()
    pid, arrays = check(update(GOOD, pid=2), node=7, c=c)
    assert pid == 2 and arrays["weight"].dtype == np.float32 and c.partition_of(7) == 2
    assert check(evaluation(1, 0.5), phase="evaluate", node=8, c=c)[0] == 1
    z, y = np.zeros((20, D), np.float32), np.arange(20) % K
    pid, arrays = check(latents(z, y, pid=3), phase="share-latents", node=9, c=c)
    assert pid == 3 and arrays["latents"].shape == (20, D) and arrays["labels"].dtype == np.int64


def float_record(dtype: type) -> ArrayRecord:
    return ArrayRecord({"weight": Array(GOOD.astype(dtype)), "bias": Array(np.zeros(2, dtype))})


def replaced(content: RecordDict, key: str, record: object) -> RecordDict:
    content[key] = record  # type: ignore[assignment]
    return content


def bad_bytes() -> RecordDict:
    content = update(GOOD, pid=0)
    array = content[P.ARRAYS]["weight"]
    content[P.ARRAYS] = ArrayRecord({"weight": Array(array.dtype, array.shape, array.stype, b"\x93NUMPY garbage"),
                                     "bias": content[P.ARRAYS]["bias"]})  # fmt: skip
    return content


def foreign_stype() -> RecordDict:
    content = update(GOOD, pid=0)
    array = content[P.ARRAYS]["weight"]
    content[P.ARRAYS] = ArrayRecord({"weight": Array(array.dtype, array.shape, "torch", array.data),
                                     "bias": content[P.ARRAYS]["bias"]})  # fmt: skip
    return content


CASES = {
    "extra metric key": (lambda: with_metrics(update(GOOD, pid=0), extra=1.0), "metrics"),
    "missing metric key": (lambda: with_metrics(update(GOOD, pid=0), **{"train-loss": None}), "metrics"),
    "extra MetricRecord": (lambda: replaced(update(GOOD, pid=0), "more", MetricRecord({"a": 1})), "MetricRecord"),
    "extra ArrayRecord": (lambda: replaced(update(GOOD, pid=0), "more", float_record(np.float32)), "arrays"),
    "a ConfigRecord": (lambda: replaced(update(GOOD, pid=0), "cfg", ConfigRecord({"a": 1})), "ConfigRecord"),
    "bytes that do not decode": (bad_bytes, "does not decode"),
    "non-numpy array type": (foreign_stype, "does not decode"),
    "huge float partition-id": (lambda: update(GOOD, pid=0, **{"partition-id": 1e300}), "partition-id"),
    "negative partition-id": (lambda: update(GOOD, pid=0, **{"partition-id": -1}), "partition-id"),
    "fractional partition-id": (lambda: update(GOOD, pid=0, **{"partition-id": 0.5}), "partition-id"),
    "float64 weights": (lambda: replaced(update(GOOD, pid=0), P.ARRAYS, float_record(np.float64)), "dtype"),
    "float16 weights": (lambda: replaced(update(GOOD, pid=0), P.ARRAYS, float_record(np.float16)), "dtype"),
    "long-double weights": (lambda: replaced(update(GOOD, pid=0), P.ARRAYS, float_record(np.longdouble)), "dtype"),
    "NaN weights": (lambda: update(np.full((2, 3), np.nan, np.float32), pid=0), "NaN"),
    "claims 1e15 records": (lambda: update(GOOD, pid=0, n=1e15), "num-examples"),
    "claims fewer records": (lambda: update(GOOD, pid=1, n=10), "num-examples"),
    "unit weight 1000": (lambda: update(GOOD, pid=0, **{P.UNIT_WEIGHT: 1000}), "must be 1"),
    "NaN loss": (lambda: update(GOOD, pid=0, **{"train-loss": float("nan")}), "finite"),
    "list metric": (lambda: update(GOOD, pid=0, **{"train-loss": [0.1, 0.2]}), "finite"),
    "client error": (None, "client error"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_train_replies_are_refused_with_their_reason(case: str) -> None:
    make, match = CASES[case]
    c = contract()
    with pytest.raises(P.PayloadError, match=match):
        if make is None:
            c.check(
                reply_from(1, error=Error(code=3, reason="\x1b[31mdied\x1b[0m")),
                phase="classifier",
                rnd=1,
                weights=SHAPES,
            )
        else:
            check(make(), c=c)
    assert c.owner == {} and c.answered == set()  # a refused reply binds nothing


def test_partition_ids_are_unique_per_round_and_the_nodes_own() -> None:
    c = contract()
    check(update(GOOD, pid=0), node=1, c=c)
    with pytest.raises(P.PayloadError, match="contested: partition-id 0 was claimed first by node 1"):
        check(update(GOOD, pid=0), node=2, c=c)  # a duplicate would overwrite node 1's upload
    with pytest.raises(P.PayloadError, match="already answered"):
        check(update(GOOD, pid=0), node=1, c=c)
    with pytest.raises(P.PayloadError, match="reported partition 0 before"):
        check(update(GOOD, pid=3), node=1, c=c, rnd=2)
    assert check(update(GOOD, pid=0), node=1, c=c, rnd=2)[0] == 0


def test_registered_owners_cannot_be_displaced_by_any_claim() -> None:
    # Under --auth the launcher knows each partition's registered key (partition-owners): the thief
    # may answer first, at identify, and is refused every time; the owner is never locked out.
    c = contract()
    c.register({p: 100 + p for p in range(len(SIZES))})
    identify = RecordDict({P.METRICS: MetricRecord({"num-examples": SIZES[1], "partition-id": 1})})
    with pytest.raises(P.PayloadError, match=r"^not-owner: partition-id 1 is node 101's \(partition-owners\)"):
        c.check(reply_from(9, identify), phase="identify", rnd=0)  # a stranger, first
    with pytest.raises(P.PayloadError, match="not-owner: partition-id 1 is node 101's"):
        check(update(GOOD, pid=1), node=100, c=c)  # an owner of another partition
    assert check(update(GOOD, pid=1), node=101, c=c)[0] == 1 and c.partition_of(9) is None
    with pytest.raises(ConfigError, match=r"names partitions \[0, 1\]; this run has 6"):
        contract().register({0: 5, 1: 6})


@pytest.mark.parametrize(
    "content, match",
    [
        (evaluation(0, 1.5), "outside"),
        (evaluation(0, -0.1), "outside"),
        (with_metrics(evaluation(0, 0.5), accuracy=None), "metrics"),
        (evaluation(0, float("nan")), "finite"),
        (evaluation(0, 0.5, n=10), "num-examples 10 != 50 records of the test split"),
    ],
    ids=["above-1", "negative", "missing", "nan", "not-the-test-split"],
)
def test_evaluations_out_of_range_are_refused(content: RecordDict, match: str) -> None:
    with pytest.raises(P.PayloadError, match=match):
        check(content, phase="final-evaluate")


def dp_contract() -> Contract:
    return contract(epsilon=3.0, dp_phases=frozenset({"classifier", "share-latents"}))


def test_dp_phases_take_dp_replies_and_refusals_only() -> None:
    dp = {"epsilon-spent": 1.0, "noise-multiplier": 1.2}
    plain = update(GOOD, pid=0)
    private = with_metrics(update(GOOD, pid=0), **{"train-loss": None}, **dp)
    with pytest.raises(P.PayloadError, match="expected"):
        check(plain, c=dp_contract())  # a DP phase never sends a plain reply
    assert check(private, c=dp_contract())[0] == 0
    for spent in (-0.5, 3.5):
        with pytest.raises(P.PayloadError, match="epsilon-spent"):
            check(
                with_metrics(update(GOOD, pid=0), **{"train-loss": None}, **{**dp, "epsilon-spent": spent}),
                c=dp_contract(),
            )
    refusal = RecordDict({P.METRICS: MetricRecord({"num-examples": 10, P.UNIT_WEIGHT: 1, "partition-id": 0,
                                                   "refused": 1, "epsilon-spent": 3.0})})  # fmt: skip
    assert check(refusal, c=dp_contract())[1] == {}


@pytest.mark.parametrize(
    "z, y, match",
    [
        (np.zeros((20 * 40, D), np.float32), np.zeros(20 * 40, np.int64), "shape"),  # 40x the partition
        (np.zeros((20, D + 1), np.float32), np.zeros(20, np.int64), "shape"),
        (np.zeros((20, 28 * 28), np.float32), np.zeros(20, np.int64), "shape"),  # images where latents belong
        (np.full((20, D), np.nan, np.float32), np.zeros(20, np.int64), "finite"),
        (np.zeros((20, D), np.float32), np.full(20, K, np.int64), "labels"),
        (np.zeros((20, D), np.float32), np.full(20, -1, np.int64), "labels"),
    ],
    ids=["40x-rows", "wrong-dim", "images", "nan", "label-too-big", "label-negative"],
)
def test_latent_payloads_are_checked_against_the_partition(z: np.ndarray, y: np.ndarray, match: str) -> None:
    with pytest.raises(P.PayloadError, match=match):
        check(latents(z, y, pid=2), phase="share-latents")


def test_latents_in_another_dtype_are_refused() -> None:
    content = latents(np.zeros((20, D), np.float32), np.zeros(20, np.int64), pid=2)
    content[P.LATENTS] = ArrayRecord({"latents": Array(np.zeros((20, D))), "labels": Array(np.zeros(20, np.int32))})
    with pytest.raises(P.PayloadError, match="dtype"):
        check(content, phase="share-latents")


def test_reasons_are_plain_text() -> None:
    assert P.plain_text("\x1b[1;31mError:\x1b[0m bad\nthing\t!") == "Error: bad thing !"
    assert len(P.plain_text("x" * 1000)) == 500
    assert SIZES[0] == 10 and torch.float32 is torch.float32  # the helpers' sizes the cases rely on


def test_the_run_contract_knows_sizes_test_split_budget_and_dp_phases() -> None:
    from fedlatent.config import RunConfig
    from fedlatent.federation.context import make_contract
    from fedlatent.plan import make_plan

    cfg = RunConfig.from_run_config({"mode": "latent-share", "num-clients": 3, "epsilon": 3.0, "label-epsilon": 2.0})
    plan = make_plan(cfg)
    c = make_contract(cfg, plan)
    assert c.sizes == tuple(len(p) for p in plan.client_idx) and c.test_size == len(plan.dataset.y_test)
    assert c.epsilon == 5.0  # the labels' randomized response is in the same ledger
    assert c.dp_phases == {"share-latents"}
    raw = make_contract(RunConfig.from_run_config({"mode": "raw", "num-clients": 3, "epsilon": 3.0}), plan)
    assert raw.epsilon == 3.0 and raw.dp_phases == {"classifier"}
