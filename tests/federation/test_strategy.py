"""RecordingFedAvg: bad replies are rejected and logged, good ones aggregated and recorded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedlatent.federation import payloads as P
from fedlatent.federation.server_view import ServerView, load_server_view
from fedlatent.federation.strategy import Inbox, RecordingFedAvg, RoundFailed, Traffic
from tests.federation.replies import SHAPES, SIZES, contract, evaluation, reply_from, update


@pytest.fixture
def strategy(tmp_path):
    inbox = Inbox(contract(), ServerView(tmp_path / "view", settings={}), Traffic())
    return RecordingFedAvg(phase="classifier", shapes=SHAPES, inbox=inbox, num_clients=6, min_clients=1)


def test_only_valid_updates_are_aggregated_and_recorded(strategy, tmp_path) -> None:
    good_a = np.ones((2, 3), np.float32)
    good_b = 3 * np.ones((2, 3), np.float32)
    nan = good_a.copy()
    nan[0, 0] = np.nan
    replies = [
        reply_from(1, update(good_a, pid=0)),  # 10 records
        reply_from(2, update(good_b, pid=1)),  # 30 records
        reply_from(3, update(nan, pid=2)),  # NaN weights
        reply_from(4, update(np.ones((3, 3), np.float32), pid=3)),  # wrong shape
        reply_from(5, error=Error(code=1, reason="client crashed")),  # failed client
        reply_from(6, update(good_a, pid=5, n=0)),  # non-positive example count
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    # Weighted mean of the two valid updates only: (1*10 + 3*30) / 40 = 2.5.
    np.testing.assert_allclose(arrays["weight"].numpy(), 2.5)
    strategy.inbox.view.close()
    view = load_server_view(tmp_path / "view")
    assert {k for k in view if k.startswith("received/")} == {
        "received/classifier-r001-p000.npz",
        "received/classifier-r001-p001.npz",
    }
    rejected = {r["node_id"]: r["reason"] for r in view["manifest"]["rejected"]}
    assert set(rejected) == {3, 4, 5, 6}
    assert "NaN" in rejected[3] and "shape" in rejected[4] and "crashed" in rejected[5]
    assert "num-examples 0 != 20" in rejected[6]
    assert strategy.inbox.traffic.up > 0


def test_a_round_below_the_floor_fails_but_refusals_count_as_answers(tmp_path) -> None:
    """Crashed and rejected clients are left out down to min-clients; a budget refusal is an answer."""
    inbox = Inbox(
        contract(dp_phases=frozenset({"classifier"}), epsilon=3.0), ServerView(tmp_path / "v", settings={}), Traffic()
    )
    strategy = RecordingFedAvg(phase="classifier", shapes=SHAPES, inbox=inbox, num_clients=6, min_clients=2)
    bad = reply_from(1, update(np.full((2, 3), np.inf, np.float32), pid=0))
    crashed = reply_from(2, error=Error(code=1, reason="\x1b[31mboom\x1b[0m"))
    with pytest.raises(RoundFailed, match="0 valid update.*below min-clients=2"):
        strategy.aggregate_train(1, [bad, crashed])
    refusal = {"num-examples": 20, P.UNIT_WEIGHT: 1, "partition-id": 2, "refused": 1, "epsilon-spent": 3.0}
    refusals = [
        reply_from(3 + i, RecordDict({P.METRICS: MetricRecord({**refusal, "partition-id": 2 + i})})) for i in range(2)
    ]
    assert strategy.aggregate_train(2, refusals) == (None, None)  # every client's budget is spent: model kept
    inbox.view.close()
    reasons = [r["reason"] for r in load_server_view(tmp_path / "v")["manifest"]["rejected"]]
    assert "client error: boom" in reasons  # plain text: no terminal colour codes


def test_a_node_that_claims_anothers_partition_cannot_stop_the_run(tmp_path) -> None:
    """Issue 25: a liar bound first to partition 1 locked its owner out, and the round fell below the floor."""
    inbox = Inbox(contract(), ServerView(tmp_path / "v", settings={}), Traffic())
    inbox.accept(reply_from(9, RecordDict({P.METRICS: MetricRecord({"num-examples": 30, "partition-id": 1})})),
                 phase="identify", rnd=0)  # fmt: skip  # the liar answers identify first
    strategy = RecordingFedAvg(phase="classifier", shapes=SHAPES, inbox=inbox, num_clients=2, min_clients=2)
    owner = reply_from(2, update(np.ones((2, 3), np.float32), pid=1))
    liar = reply_from(9, update(3 * np.ones((2, 3), np.float32), pid=1))
    arrays, _ = strategy.aggregate_train(1, [owner, liar])  # 1 update + 1 contested claim: the floor of 2 holds
    np.testing.assert_allclose(arrays["weight"].numpy(), 3.0)
    inbox.view.close()
    (reason,) = [r["reason"] for r in load_server_view(tmp_path / "v")["manifest"]["rejected"] if r["round"] == 1]
    assert reason == "contested: partition-id 1 was claimed first by node 9"


class Connected:
    """Flower's grid as sampling sees it: the connected nodes."""

    def __init__(self, *nodes: int) -> None:
        self.nodes = list(nodes)

    def get_node_ids(self) -> list[int]:
        return self.nodes


@pytest.fixture
def server_task():
    """A ServerApp's task identity: Flower's Message takes its run id from there."""
    saved = TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = 1, 1, 0
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


@pytest.mark.usefixtures("server_task")
def test_only_the_runs_nodes_are_asked_never_one_that_joined_later(tmp_path) -> None:
    # A node that connected after the run chose its nodes was asked to train: its first reply
    # would have bound a partition outside identify (and under partition-owners, a stranger).
    inbox = Inbox(contract(), ServerView(tmp_path / "v", settings={}), Traffic())
    strategy = RecordingFedAvg(phase="classifier", shapes=SHAPES, inbox=inbox, num_clients=2, nodes=[4, 7],
                               federated_evaluation=True, silent={7})  # fmt: skip
    arrays = ArrayRecord({k: Array(np.zeros(s, np.float32)) for k, s in SHAPES.items()})
    grid = Connected(4, 5, 7, 9)
    for messages in (strategy.configure_train(1, arrays, ConfigRecord(), grid),  # type: ignore[arg-type]
                     strategy.configure_evaluate(1, arrays, ConfigRecord(), grid)):  # type: ignore[arg-type]  # fmt: skip
        assert [m.metadata.dst_node_id for m in messages] == [4]  # 5 and 9 are not the run's, 7 missed a deadline


def test_a_refused_thief_of_a_registered_partition_does_not_count_for_the_floor(tmp_path) -> None:
    c = contract()
    c.register({p: 100 + p for p in range(len(SIZES))})
    inbox = Inbox(c, ServerView(tmp_path / "v", settings={}), Traffic())
    strategy = RecordingFedAvg(phase="classifier", shapes=SHAPES, inbox=inbox, num_clients=2, min_clients=2)
    owner = reply_from(101, update(np.ones((2, 3), np.float32), pid=1))
    thief = reply_from(9, update(3 * np.ones((2, 3), np.float32), pid=1))
    with pytest.raises(RoundFailed, match="1 valid update"):  # the thief is no participant: 1 < 2
        strategy.aggregate_train(1, [thief, owner])


def test_federated_evaluation_keeps_each_clients_accuracy(strategy) -> None:
    replies = [reply_from(1, evaluation(0, 0.8)), reply_from(2, evaluation(1, 0.6))]
    replies += [reply_from(3, evaluation(2, float("nan"))), reply_from(4, evaluation(3, 1.5))]
    agg = strategy.aggregate_evaluate(2, replies)
    assert strategy.client_eval.rounds[2] == {0: 0.8, 1: 0.6}
    assert agg is not None and agg["accuracy"] == pytest.approx(0.7)  # both scored the same test split


def test_client_level_dp_clips_averages_uniformly_and_accounts_what_was_released(tmp_path) -> None:
    from fedlatent.config import RunConfig
    from fedlatent.federation.privacy_log import PrivacyLog
    from fedlatent.federation.report import client_level_summary
    from fedlatent.federation.strategy import ClientLevelDP

    view = ServerView(tmp_path / "view", settings={})
    inner = RecordingFedAvg(
        phase="classifier",
        shapes=SHAPES,
        inbox=Inbox(contract(sizes=(10, 1000, 10, 10)), view, Traffic()),
        num_clients=4,
        min_clients=1,
        weighted_by_key=P.UNIT_WEIGHT,
    )
    dp = ClientLevelDP(inner, noise_multiplier=1e-6, clipping_norm=1.0)
    dp.current_arrays = ArrayRecord({"weight": torch.zeros(2, 3), "bias": torch.zeros(2)})

    def weighted(weight: float, pid: int, n: int) -> RecordDict:
        return update(np.full((2, 3), weight, np.float32), pid=pid, n=n)

    replies = [
        reply_from(1, weighted(10.0, 0, 10)),
        reply_from(2, weighted(10.0, 1, 1000)),  # a big client: no more weight under client-level DP
        reply_from(3, weighted(-10.0, 2, 10)),
        reply_from(4, update(np.full((2, 3), np.nan, np.float32), pid=3, n=10)),  # rejected before Flower sees it
    ]
    arrays, _ = dp.aggregate_train(1, replies)
    # Each update is clipped to norm 1 (6 equal entries: 1/sqrt(6) each), then the uniform mean.
    np.testing.assert_allclose(arrays["weight"].numpy(), (1 + 1 - 1) / 3 / np.sqrt(6), atol=1e-4)
    # 3 of 4 planned updates: the noise follows the 3 averaged (std z*C/3), so the multiplier stays z
    assert dp.num_sampled_clients == 3 and dp.multipliers == [1e-6]
    view.close()
    received = load_server_view(tmp_path / "view")["received/classifier-r001-p000.npz"]
    np.testing.assert_allclose(received["weight"], 10.0)  # the server saw the unclipped update
    cfg = RunConfig.from_run_config({"client-dp-noise": 1.0, "rounds": 2})
    summary = client_level_summary(cfg, PrivacyLog(client_level=[1.0, 0.75]))
    assert summary is not None and summary["releases"] == 2 and summary["epsilon"] > 0
    assert "NOT against the server" in summary["note"]
    assert client_level_summary(RunConfig(), PrivacyLog()) is None
