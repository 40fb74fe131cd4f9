"""FedAvg that checks, records and counts every message, on top of Flower's own FedAvg.

Aggregation stays Flower's. What this subclass adds is the server's bookkeeping: each reply
is checked against the wire contract (``payloads``) before it can reach aggregation, an
invalid or failed reply is logged and left out while the round goes on with the others,
every accepted upload is written to the server view, and bytes are counted both ways.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg

from fedlatent.federation import payloads as P
from fedlatent.federation.contract import CONTESTED, Contract
from fedlatent.federation.privacy_log import PrivacyLog
from fedlatent.federation.server_view import ServerView

log = logging.getLogger("fedlatent")


@dataclass
class Traffic:
    """Bytes of array payloads sent to (down) and received from (up) clients."""

    up: int = 0
    down: int = 0

    def sent(self, messages: Iterable[Message]) -> list[Message]:
        """Count outgoing messages and pass them through."""
        messages = list(messages)
        self.down += sum(P.payload_bytes(m.content) for m in messages)
        return messages


@dataclass
class ClientEval:
    """Per-round, per-partition accuracy reported by clients in federated evaluation."""

    rounds: dict[int, dict[int, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Inbox:
    """Where every reply of a run goes through: the contract, the server view, the byte count."""

    contract: Contract
    view: ServerView
    traffic: Traffic

    def accept(
        self,
        msg: Message,
        *,
        phase: str,
        rnd: int,
        weights: Mapping[str, tuple[int, ...]] | None = None,
        sent: Mapping[str, np.ndarray] | None = None,
    ) -> tuple[int, dict[str, np.ndarray]] | None:
        """Check one reply completely (``Contract.check``); ``(partition id, arrays)``, or None if rejected.

        Nothing a reply holds can raise out of here: any failure is a logged, counted rejection.
        """
        node = msg.metadata.src_node_id
        try:
            if not msg.has_error():
                self.traffic.up += P.payload_bytes(msg.content)
            pid, arrays = self.contract.check(msg, phase=phase, rnd=rnd, weights=weights, sent=sent)
        except Exception as err:  # noqa: BLE001 - a hostile reply must never end the run
            reason = P.plain_text(err) if isinstance(err, P.PayloadError) else f"malformed reply: {P.plain_text(err)}"
            log.warning("rejected %s reply from node %s in round %s: %s", phase, node, rnd, reason)
            self.view.rejected(phase, rnd, node, reason)
            return None
        self.view.metrics(phase, rnd, node, dict(msg.content.metric_records[P.METRICS]))
        return pid, arrays


def client_floor(min_clients: int, sampled: int) -> int:
    """Valid replies a round of ``sampled`` clients needs: ``min_clients``, or (0) half of them rounded up."""
    return min(sampled, min_clients) if min_clients else max(1, math.ceil(sampled / 2))


class RoundFailed(RuntimeError):
    """Fewer clients than the run's floor (``min-clients``) took part in a round: the run stops here."""


class RecordingFedAvg(FedAvg):
    """Flower's FedAvg plus complete reply checks, seeded sampling, a floor, recording and byte counting.

    Sampling is fedlatent's, not Flower's (``sample_nodes`` waits forever for ``min_available_nodes``
    and draws with the unseeded global ``random``): the live nodes, ordered by the partition each
    is bound to, are drawn with a generator seeded from the run seed, phase and round; below
    ``min_clients`` live or valid clients the round raises ``RoundFailed`` instead of hanging.
    """

    def __init__(
        self,
        *,
        phase: str,
        shapes: Mapping[str, tuple[int, ...]],
        inbox: Inbox,
        num_clients: int,
        seed: int = 0,
        min_clients: int = 1,
        fraction_train: float = 1.0,
        federated_evaluation: bool = False,
        privacy: PrivacyLog | None = None,
        weighted_by_key: str = "num-examples",
        silent: set[int] | None = None,
        nodes: Iterable[int] | None = None,
    ) -> None:
        sample = max(1, round(fraction_train * num_clients))
        super().__init__(
            weighted_by_key=weighted_by_key,
            fraction_train=fraction_train,
            fraction_evaluate=1.0 if federated_evaluation else 0.0,
            min_train_nodes=sample,
            min_evaluate_nodes=1,
            min_available_nodes=1,
        )
        self.phase, self.shapes, self.inbox, self.seed = phase, dict(shapes), inbox, seed
        self.min_clients = client_floor(min_clients, sample)
        self.client_eval = ClientEval()
        self.screened = False  # True while a wrapper hands over replies it has screened already
        self.privacy = privacy if privacy is not None else PrivacyLog()
        self.round_seconds: dict[int, float] = {}  # from sending a round's messages to its aggregate
        self._round_start: dict[int, float] = {}
        self._sampled: dict[int, list[int]] = {}
        self._sent: tuple[int, dict[str, np.ndarray]] = (0, {})  # the last round's global weights, to bound updates
        self.silent = silent if silent is not None else set()  # the run's nodes that missed a deadline
        self.nodes = None if nodes is None else frozenset(nodes)  # the run's nodes (None: every connected one)

    def live(self, grid: Grid) -> set[int]:
        """The run's connected nodes that met every deadline; a node that joined later is never asked."""
        live = set(grid.get_node_ids()) - self.silent
        return live if self.nodes is None else live & self.nodes

    def sample(self, nodes: Iterable[int], server_round: int) -> list[int]:
        """The nodes of a training round: all of them, or a seeded draw of ``min_train_nodes``."""
        contract = self.inbox.contract

        def rank(node: int) -> tuple[int, int]:
            pid = contract.partition_of(node)
            return (0, pid) if pid is not None else (1, node)  # unbound nodes last (ids differ per run)

        ordered = sorted(nodes, key=rank)
        if self.fraction_train >= 1.0 or len(ordered) <= self.min_train_nodes:
            return ordered
        rng = random.Random(f"{self.seed}:{self.phase}:{server_round}")
        return sorted(rng.sample(ordered, self.min_train_nodes), key=rank)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One train message per sampled live node, tagged with the phase, recorded and counted."""
        chosen = self.sample(self.live(grid), server_round)
        if len(chosen) < self.min_clients:
            raise RoundFailed(
                f"{self.phase} round {server_round}: {len(chosen)} live node(s), below min-clients={self.min_clients}"
            )
        config["phase"], config["server-round"] = self.phase, server_round
        self._round_start[server_round] = time.monotonic()
        self._sampled[server_round] = chosen
        self.inbox.view.sent(self.phase, server_round, arrays)
        self._sent = (server_round, P.record_numpy(arrays))
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self.inbox.traffic.sent(self._construct_messages(record, chosen, MessageType.TRAIN))

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate only the replies that pass the checks (``screen``)."""
        accepted = list(replies) if self.screened else self.screen(server_round, replies)
        try:
            if not accepted:
                log.warning("round %s of %s: no valid update; the global model is kept", server_round, self.phase)
                return None, None
            return super().aggregate_train(server_round, accepted)
        finally:
            if server_round in self._round_start:
                self.round_seconds[server_round] = time.monotonic() - self._round_start[server_round]

    def screen(self, server_round: int, replies: Iterable[Message]) -> list[Message]:
        """The replies that pass the contract; each one is recorded, each rejection logged.

        Raises ``RoundFailed`` when fewer than ``min_clients`` sampled clients answered validly
        (a budget refusal counts as an answer: the client is alive and keeps its promise). The
        accepted replies come in partition order, not arrival order: floating-point sums depend
        on their order, and a run must aggregate the same way every time (resumes included).
        """
        replies = list(replies)
        accepted: list[tuple[int, Message]] = []
        refused, answered = 0, set()
        dp = self.phase in self.inbox.contract.dp_phases
        for msg in replies:
            sent = self._sent[1] if self._sent[0] == server_round else None
            checked = self.inbox.accept(msg, phase=self.phase, rnd=server_round, weights=self.shapes, sent=sent)
            if checked is None:
                continue
            pid, _ = checked
            answered.add(pid)
            if self.privacy.note(msg, pid=pid, phase=self.phase, rnd=server_round, dp=dp):
                refused += 1
                continue
            self.inbox.view.received(self.phase, server_round, pid, P.arrays(msg.content))
            accepted.append((pid, msg))
        if dp:  # asked, no accepted answer: the client may have trained all the same
            self.privacy.missed(
                self.inbox.contract.unanswered(self._sampled.get(server_round, []), answered), self.phase
            )
        rejected = [r["reason"] for r in self.inbox.view.manifest["rejected"]
                    if r["phase"] == self.phase and r["round"] == server_round]  # fmt: skip
        # A node refused because another claimed its partition first may be the honest owner: it
        # counts for the floor, so that one node's lie cannot stop the run.
        contested = sum(reason.startswith(CONTESTED) for reason in rejected)
        if len(accepted) + refused + contested < self.min_clients:
            reasons = Counter(reason[:200] for reason in rejected)
            why = "; ".join(f"{n} x {reason}" for reason, n in reasons.most_common(3)) or "no reply"
            raise RoundFailed(
                f"{self.phase} round {server_round}: {len(accepted)} valid update(s), {refused} refusal(s) and "
                f"{contested} contested claim(s) "
                f"of {len(self._sampled.get(server_round, replies))} sampled, below min-clients={self.min_clients}; "
                f"rejected: {why}"
            )
        return [msg for _, msg in sorted(accepted, key=lambda pair: pair[0])]

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Evaluate messages to every live node (federated evaluation only), counted."""
        if self.fraction_evaluate == 0.0:
            return []
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        nodes = sorted(self.live(grid))
        return self.inbox.traffic.sent(self._construct_messages(record, nodes, MessageType.EVALUATE))

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Mean of the valid clients' metrics; keep every client's accuracy."""
        accepted = []
        for msg in replies:
            checked = self.inbox.accept(msg, phase="evaluate", rnd=server_round)
            if checked is not None:
                self.client_eval.rounds.setdefault(server_round, {})[checked[0]] = P.metric(msg.content, "accuracy")
                accepted.append(msg)
        return super().aggregate_evaluate(server_round, accepted) if accepted else None


class ClientLevelDP(DifferentialPrivacyServerSideFixedClipping):
    """Flower's server-side fixed-clipping DP, fed only replies that passed fedlatent's checks.

    Flower clips each update to ``clipping_norm`` around the global model, averages (with
    equal weights: the inner strategy weighs by ``UNIT_WEIGHT``) and adds Gaussian noise of
    std ``noise_multiplier * clipping_norm / num_sampled_clients``. Here ``num_sampled_clients``
    is set, every round, to the updates actually averaged: with fewer than planned (dead
    nodes, refusals, rejections) a fixed planned count would make the noise too small for the
    mean of fewer updates. ``multipliers`` keeps the multiplier of every release, for the
    accounting (``report.client_level_summary``).
    """

    def __init__(self, strategy: RecordingFedAvg, *, noise_multiplier: float, clipping_norm: float) -> None:
        super().__init__(strategy, noise_multiplier, clipping_norm, strategy.min_train_nodes)
        self.inner = strategy
        self.multipliers: list[float] = []

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen the replies, then clip, average and noise them the Flower way."""
        accepted = self.inner.screen(server_round, replies)
        if not accepted:
            log.warning("round %s: no valid update; nothing released", server_round)
            return None, None
        self.inner.screened = True
        self.num_sampled_clients = len(accepted)  # noise for the mean of the updates really averaged
        try:
            arrays, metrics = super().aggregate_train(server_round, accepted)
        finally:
            self.inner.screened = False
        if arrays is not None:
            self.multipliers.append(self.noise_multiplier)
        return arrays, metrics
