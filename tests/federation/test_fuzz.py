"""Fuzz of the server's reply handling: generated malformed replies through the real phases.

Each example starts from a valid reply of one phase, applies one mutation that makes it
invalid (or none), passes it through Flower's own wire encoding (protobuf and back), and hands
it with a valid reply of another client to the real server code: ``RecordingFedAvg``'s train
and evaluate aggregation (Flower's FedAvg after fedlatent's screen) and ``collect_latents``.
Asserted for every example: nothing raises, a malformed reply is never accepted, a valid one is
never rejected, and the aggregate is exactly that of the replies accepted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict
from flwr.supercore.task_identity import TaskIdentity
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedlatent.config import RunConfig
from fedlatent.federation import payloads as P
from fedlatent.federation.checkpoint import Checkpointer
from fedlatent.federation.context import RunContext, make_contract
from fedlatent.federation.phases import collect_latents
from fedlatent.federation.privacy_log import PrivacyLog
from fedlatent.federation.report import RunRecord
from fedlatent.federation.server_epsilon import ServerAccountant
from fedlatent.federation.server_view import ServerView
from fedlatent.federation.strategy import Inbox, RecordingFedAvg, Traffic
from fedlatent.plan import make_plan
from tests.federation.replies import SHAPES, SIZES, contract, evaluation, latents, reply_from, update

EXAMPLES = 400  # per phase: 3 phases, 1,200 generated replies in all

BAD_NUMBERS = st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 1e300, -1e300, 0.5, 2.0**53 + 1, 1e15])
NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_\x1b[0123456789", min_size=1, max_size=12)
DTYPES = st.sampled_from([np.float16, np.float64, np.longdouble, np.int32, np.int64, np.uint8, np.bool_, np.complex64])


def wire(content: RecordDict) -> RecordDict:
    """The content as the SuperLink delivers it: Flower's protobuf encoding and back."""
    return recorddict_from_proto(ProtoRecordDict.FromString(recorddict_to_proto(content).SerializeToString()))


def breaks(key: str, value: float) -> bool:
    """True when ``value`` is out of the contract for ``key`` (a large finite loss is legitimate)."""
    if not math.isfinite(value):
        return True
    if key == "accuracy":
        return not 0 <= value <= 1
    if key == P.UNIT_WEIGHT:
        return value != 1
    return value < 0


def mutate(draw: st.DrawFn, content: RecordDict, arrays_key: str | None) -> tuple[RecordDict | None, str]:
    """One mutation that breaks the contract; ``(None, reason)`` means "send a client error"."""
    metrics = dict(content[P.METRICS])
    kinds = ["extra-metric", "drop-metric", "extra-record", "error", "partition", "count"]
    if set(metrics) - {"num-examples", "partition-id"}:
        kinds.append("bad-value")
    if arrays_key:
        kinds += ["dtype", "shape", "non-finite", "array-keys", "garbage", "metadata"]
    if arrays_key == P.ARRAYS:  # finite but absurd weights: beyond any honest update (max-update-norm)
        kinds.append("absurd")
    kind = draw(st.sampled_from(kinds))
    if kind == "extra-metric":
        metrics[draw(NAMES.filter(lambda n: n not in metrics))] = draw(
            st.floats(allow_nan=True) | st.integers(-(2**63), 2**63 - 1)
        )
    elif kind == "drop-metric":
        metrics.pop(draw(st.sampled_from(sorted(metrics))))
    elif kind == "bad-value":
        key = draw(st.sampled_from(sorted(k for k in metrics if k not in ("num-examples", "partition-id"))))
        metrics[key] = draw(BAD_NUMBERS.filter(lambda v: breaks(key, v)))
    elif kind == "extra-record":
        name = draw(NAMES.filter(lambda n: n not in content))
        content[name] = draw(st.sampled_from([MetricRecord({"a": 1.0}), ConfigRecord({"a": "b"}),
                                              ArrayRecord({"a": Array(np.zeros(2, np.float32))})]))  # fmt: skip
    elif kind == "error":
        return None, draw(st.text(max_size=80))
    elif kind == "partition":
        metrics["partition-id"] = draw(st.sampled_from([-1, 6, 1e300, 0.5, math.nan, 0]))  # 0: another node's
    elif kind == "count":
        metrics["num-examples"] = metrics["num-examples"] + draw(st.sampled_from([-1, 1, 1e15, 0.5]))
    else:
        record = content[arrays_key]
        arrays = {k: record[k].numpy() for k in record}
        key = draw(st.sampled_from(sorted(arrays)))
        if kind == "dtype":
            dtype = draw(DTYPES.filter(lambda d: np.dtype(d) != arrays[key].dtype))
            arrays[key] = arrays[key].astype(dtype)
        elif kind == "shape":
            arrays[key] = np.concatenate([arrays[key].reshape(-1), arrays[key].reshape(-1)[:1]])
        elif kind == "non-finite":
            if arrays[key].dtype.kind != "f":
                arrays[key] = arrays[key].astype(np.float32)  # labels as floats: a dtype error
            flat = arrays[key].reshape(-1).copy()
            flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
            arrays[key] = flat.reshape(arrays[key].shape)
        elif kind == "absurd":
            flat = arrays[key].reshape(-1).copy()
            flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from([3.0e38, -3.4e38, 1e6, -2e3]))
            arrays[key] = flat.reshape(arrays[key].shape)
        elif kind == "array-keys":
            if draw(st.booleans()):
                arrays.pop(key)
            else:
                arrays[draw(NAMES.filter(lambda n: n not in arrays))] = arrays[key]
        content[arrays_key] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})
        if kind == "garbage":
            a = content[arrays_key][key]
            data = draw(st.binary(max_size=64))
            items = {k: content[arrays_key][k] for k in content[arrays_key]}
            items[key] = Array(a.dtype, a.shape, draw(st.sampled_from([a.stype, "torch", ""])), data)
            content[arrays_key] = ArrayRecord(items)
        if kind == "metadata":  # the declared dtype or shape disagrees with the bytes (which are valid)
            a = content[arrays_key][key]
            items = {k: content[arrays_key][k] for k in content[arrays_key]}
            lie = draw(st.sampled_from(["dtype", "shape"]))
            dtype = "float16" if lie == "dtype" else a.dtype
            shape = (*a.shape, 1) if lie == "shape" else a.shape
            items[key] = Array(dtype=dtype, shape=shape, stype=a.stype, data=a.data)
            content[arrays_key] = ArrayRecord(items)
        return content, kind
    content[P.METRICS] = MetricRecord(metrics)
    return content, kind


@st.composite
def candidate(draw: st.DrawFn, make: object, arrays_key: str | None) -> tuple[Message, bool, str]:
    """A reply from node 2 for partition 1: valid (``True``) or broken by one mutation."""
    content = make()  # type: ignore[operator]
    if draw(st.integers(0, 9)) == 0:
        return reply_from(2, wire(content)), True, "valid"
    broken, kind = mutate(draw, content, arrays_key)
    if broken is None:
        return reply_from(2, error=Error(code=0, reason=kind)), False, "error"
    return reply_from(2, wire(broken)), False, kind


GOOD = np.ones((2, 3), np.float32)
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


def fedavg(tmp_path: object) -> RecordingFedAvg:
    """The FedAvg of a run without DP: updates bounded by the default max-update-norm, from zero weights sent."""
    c = contract(update_bounds=lambda pid, phase: (math.inf, RunConfig().max_update_norm))
    inbox = Inbox(c, ServerView(tmp_path / "view", settings={}), Traffic())  # type: ignore[operator]
    strategy = RecordingFedAvg(phase="classifier", shapes=SHAPES, inbox=inbox, num_clients=6, min_clients=1)
    strategy._sent = (1, {k: np.zeros(s, np.float32) for k, s in SHAPES.items()})  # what configure_train keeps
    return strategy


@SETTINGS
@given(case=candidate(lambda: update(3 * GOOD, pid=1), P.ARRAYS))
def test_train_replies_never_crash_and_only_valid_ones_are_averaged(tmp_path_factory, case) -> None:
    msg, valid, kind = case
    strategy = fedavg(tmp_path_factory.mktemp("t"))
    arrays, _ = strategy.aggregate_train(1, [reply_from(1, wire(update(GOOD, pid=0))), msg])
    accepted = strategy.inbox.contract.partition_of(2) is not None
    assert accepted == valid, kind
    expected = (1 * 10 + 3 * 30) / 40 if valid else 1.0  # num-examples weighting: 10 and 30 records
    np.testing.assert_allclose(arrays["weight"].numpy(), expected, rtol=1e-6)
    assert len(strategy.inbox.view.manifest["rejected"]) == (0 if valid else 1)


@SETTINGS
@given(case=candidate(lambda: evaluation(1, 0.25), None))
def test_evaluate_replies_never_crash_and_only_valid_ones_count(tmp_path_factory, case) -> None:
    msg, valid, kind = case
    strategy = fedavg(tmp_path_factory.mktemp("e"))
    strategy.aggregate_evaluate(1, [reply_from(1, wire(evaluation(0, 0.75))), msg])
    assert strategy.client_eval.rounds[1] == ({0: 0.75, 1: 0.25} if valid else {0: 0.75}), kind


@dataclass
class Grid:
    """The two calls of Flower's Grid a broadcast makes, answering with prepared replies."""

    replies: list[Message]
    pushed: list[str] = field(default_factory=list)

    def get_node_ids(self) -> list[int]:
        return [1, 2]

    def push_messages(self, messages: list[Message]) -> list[str]:
        self.pushed = [f"to-{m.metadata.dst_node_id}" for m in messages]
        return self.pushed

    def pull_messages(self, ids: set[str]) -> list[Message]:
        return [m for m in self.replies if m.metadata.reply_to_message_id in ids]


@pytest.fixture(scope="module")
def share_run(tmp_path_factory):
    """A latent-share run on digits, inside a ServerApp's task identity (Flower's Message needs its run id)."""
    saved = TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = 1, 1, 0
    cfg = RunConfig.from_run_config({"mode": "latent-share", "num-clients": 2, "min-clients": 1, "round-timeout": 5})
    plan = make_plan(cfg)
    yield cfg, plan, tmp_path_factory
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def share_reply(plan: object, pid: int) -> RecordDict:
    n = len(plan.client_idx[pid])  # type: ignore[attr-defined]
    z = np.random.default_rng(pid).normal(size=(n, 32)).astype(np.float32)
    return latents(z, np.arange(n) % 10, pid=pid, n=n)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_latent_replies_never_crash_and_only_valid_ones_are_pooled(share_run, data) -> None:
    cfg, plan, factory = share_run
    msg, valid, kind = data.draw(candidate(lambda: share_reply(plan, 1), P.LATENTS))
    out = factory.mktemp("s")
    view, traffic, record = ServerView(out / "view", settings={}), Traffic(), RunRecord(cfg=cfg, out=out, plan=plan)
    checkpoint = Checkpointer(out, run_key="fuzz", cfg=cfg, record=record, traffic=traffic, view=view,
                              elapsed=lambda: 0.0)  # fmt: skip
    run = RunContext(grid=Grid([reply_from(1, wire(share_reply(plan, 0))), msg]), nodes=[1, 2], cfg=cfg, plan=plan,  # type: ignore[arg-type]
                     view=view, traffic=traffic, record=record, contract=make_contract(cfg, plan),
                     checkpoint=checkpoint)  # fmt: skip
    pooled = collect_latents(run, None)
    assert len(pooled) == (2 if valid else 1), kind
    assert all(len(z) == len(y) == len(plan.client_idx[p]) for p, (z, y) in pooled.items())


def test_one_clients_absurd_latents_are_dropped_and_the_fit_goes_on(share_run) -> None:
    # Issue 25: one row with half its coordinates at float32's maximum (finite, right shape) made the
    # server's fit diverge and stopped the run. With no bound to stop it (the server holds no encoder),
    # the fit drops that client's release, logs it, and finishes on the others.
    from fedlatent.federation.phases import share_phase

    cfg, plan, factory = share_run
    out = factory.mktemp("absurd")
    hostile = share_reply(plan, 1)
    z = hostile[P.LATENTS]["latents"].numpy().copy()
    z[0, ::2] = np.finfo(np.float32).max
    hostile[P.LATENTS] = P.pack_latents(z, hostile[P.LATENTS]["labels"].numpy())
    view, traffic, record = ServerView(out / "view", settings={}), Traffic(), RunRecord(cfg=cfg, out=out, plan=plan)
    checkpoint = Checkpointer(out, run_key="absurd", cfg=cfg, record=record, traffic=traffic, view=view,
                              elapsed=lambda: 0.0)  # fmt: skip
    replies = [reply_from(1, wire(share_reply(plan, 0))), reply_from(2, wire(hostile))]
    run = RunContext(grid=Grid(replies), nodes=[1, 2], cfg=cfg, plan=plan, view=view, traffic=traffic,  # type: ignore[arg-type]
                     record=record, contract=make_contract(cfg, plan), checkpoint=checkpoint)  # fmt: skip
    model = share_phase(run, None)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    (dropped,) = view.manifest["rejected"]
    assert dropped["node_id"] == 2 and "server fit diverged" in dropped["reason"]
    assert record.history and all(math.isfinite(row["train_loss"]) for row in record.history)


DP_CFG = RunConfig.from_run_config({"mode": "raw", "num-clients": 6, "epsilon": 3.0, "rounds": 4, "batch-size": 5})
ACCOUNTANT = ServerAccountant(DP_CFG, SIZES)  # one for every example: its plans take a second to calibrate


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(eps_factor=st.sampled_from([1.0, 1.0, 0.0, 0.5, 0.999, 1.001, 2.0, 1e-300]),
       z_factor=st.sampled_from([1.0, 1.0, 0.0, 0.5, 2.0]), rnd=st.integers(1, 4))  # fmt: skip
def test_dp_replies_with_lying_figures_are_refused_and_honest_ones_averaged(tmp_path_factory, eps_factor, z_factor,
                                                                           rnd) -> None:  # fmt: skip
    privacy = PrivacyLog(known={p: ["classifier"] * (rnd - 1) for p in (0, 1)})  # both trained every round before
    accountant = ACCOUNTANT
    c = contract(epsilon=3.0, dp_phases=frozenset({"classifier"}))
    c.claims = lambda pid, phase, values: accountant.check(pid, phase, values, privacy)
    inbox = Inbox(c, ServerView(tmp_path_factory.mktemp("dp") / "view", settings={}), Traffic())
    strategy = RecordingFedAvg(phase="classifier", shapes=SHAPES, inbox=inbox, num_clients=6, min_clients=1,
                               privacy=privacy)  # fmt: skip

    def dp_update(pid: int, weight: float, eps_factor: float, z_factor: float) -> RecordDict:
        honest = accountant.epsilon(pid, ["classifier"] * rnd)
        z = accountant.noise_multiplier("classifier", pid)
        content = update(weight * GOOD, pid=pid)
        metrics = {"num-examples": SIZES[pid], P.UNIT_WEIGHT: 1, "partition-id": pid}
        content[P.METRICS] = MetricRecord({**metrics, "epsilon-spent": honest * eps_factor,
                                           "noise-multiplier": z * z_factor})  # fmt: skip
        return wire(content)

    arrays, _ = strategy.aggregate_train(
        rnd, [reply_from(1, dp_update(0, 1.0, 1.0, 1.0)), reply_from(2, dp_update(1, 3.0, eps_factor, z_factor))]
    )
    valid = eps_factor == 1.0 and z_factor == 1.0
    np.testing.assert_allclose(arrays["weight"].numpy(), (10 + 3 * 30) / 40 if valid else 1.0, rtol=1e-6)
    assert privacy.known.get(1, []) == ["classifier"] * (rnd if valid else rnd - 1)  # only honest rounds count
    if not valid:
        reason = inbox.view.manifest["rejected"][0]["reason"]
        assert reason.startswith("dishonest") or "outside [0, budget" in reason, reason
