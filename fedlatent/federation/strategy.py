"""FedAvg that checks, records and counts every message, on top of Flower's own FedAvg.

Aggregation stays Flower's. What this subclass adds is the server's bookkeeping: each reply
is checked against the wire contract (``payloads``) before it can reach aggregation, an
invalid or failed reply is logged and left out while the round goes on with the others,
every accepted upload is written to the server view, and bytes are counted both ways.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg

from fedlatent.federation import payloads as P
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
class PrivacyLog:
    """What clients reported of their DP accounting: latest epsilon spent, noise, refusals."""

    epsilon: dict[int, float] = field(default_factory=dict)
    noise_multiplier: dict[int, float] = field(default_factory=dict)
    refusals: list[dict[str, object]] = field(default_factory=list)
    client_level: list[float] | None = None  # effective multiplier of each client-level DP release

    def note(self, msg: Message, *, pid: int, phase: str, rnd: int) -> bool:
        """Keep the reply's privacy metrics; return True when the client refused the round."""
        metrics = msg.content.metric_records[P.METRICS]
        if "epsilon-spent" in metrics:
            self.epsilon[pid] = P.metric(msg.content, "epsilon-spent")
        if "noise-multiplier" in metrics:
            self.noise_multiplier[pid] = P.metric(msg.content, "noise-multiplier")
        if "refused" not in metrics:
            return False
        refusal = {"phase": phase, "round": rnd, "partition": pid, "epsilon_spent": self.epsilon.get(pid, 0.0)}
        log.warning("partition %s refused %s round %s: its privacy budget would be exceeded", pid, phase, rnd)
        self.refusals.append(refusal)
        return True


@dataclass
class ClientEval:
    """Per-round, per-partition accuracy reported by clients in federated evaluation."""

    rounds: dict[int, dict[int, float]] = field(default_factory=dict)


def accept(msg: Message, *, phase: str, rnd: int, view: ServerView, traffic: Traffic) -> int | None:
    """Common checks on any reply; return its partition id, or None if rejected."""
    node = msg.metadata.src_node_id
    if msg.has_error():
        reason = f"client error: {msg.error.reason}"
    else:
        traffic.up += P.payload_bytes(msg.content)
        try:
            P.num_examples(msg.content)
            pid = int(P.metric(msg.content, "partition-id"))
            view.metrics(phase, rnd, node, dict(msg.content.metric_records[P.METRICS]))
            return pid
        except (P.PayloadError, KeyError, TypeError, ValueError) as err:
            reason = str(err)
    log.warning("rejected %s reply from node %s in round %s: %s", phase, node, rnd, reason)
    view.rejected(phase, rnd, node, reason)
    return None


class RecordingFedAvg(FedAvg):
    """Flower's FedAvg plus reply checks, server-view recording and byte counting."""

    def __init__(
        self,
        *,
        phase: str,
        shapes: Mapping[str, tuple[int, ...]],
        view: ServerView,
        traffic: Traffic,
        num_clients: int,
        fraction_train: float = 1.0,
        federated_evaluation: bool = False,
        privacy: PrivacyLog | None = None,
        weighted_by_key: str = "num-examples",
    ) -> None:
        super().__init__(
            weighted_by_key=weighted_by_key,
            fraction_train=fraction_train,
            fraction_evaluate=1.0 if federated_evaluation else 0.0,
            min_train_nodes=max(1, round(fraction_train * num_clients)),
            min_evaluate_nodes=num_clients,
            min_available_nodes=num_clients,
        )
        self.phase, self.shapes, self.view, self.traffic = phase, dict(shapes), view, traffic
        self.client_eval = ClientEval()
        self.screened = False  # True while a wrapper hands over replies it has screened already
        self.privacy = privacy if privacy is not None else PrivacyLog()
        self.round_seconds: dict[int, float] = {}  # from sending a round's messages to its aggregate
        self._round_start: dict[int, float] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's messages, tagged with the phase, recorded and counted."""
        config["phase"] = self.phase
        self._round_start[server_round] = time.monotonic()
        self.view.sent(self.phase, server_round, arrays)
        return self.traffic.sent(super().configure_train(server_round, arrays, config, grid))

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
        """The replies that pass the checks; each one is recorded, each rejection logged."""
        accepted = []
        for msg in replies:
            pid = accept(msg, phase=self.phase, rnd=server_round, view=self.view, traffic=self.traffic)
            if pid is None:
                continue
            try:
                if self.privacy.note(msg, pid=pid, phase=self.phase, rnd=server_round):
                    continue
                P.check_arrays(P.arrays(msg.content), self.shapes)
            except (P.PayloadError, KeyError, TypeError) as err:
                log.warning("rejected %s update of partition %s: %s", self.phase, pid, err)
                self.view.rejected(self.phase, server_round, msg.metadata.src_node_id, str(err))
                continue
            self.view.received(self.phase, server_round, pid, P.arrays(msg.content))
            accepted.append(msg)
        return accepted

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's evaluate messages, counted."""
        return self.traffic.sent(super().configure_evaluate(server_round, arrays, config, grid))

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Mean of the valid clients' metrics; keep every client's accuracy."""
        accepted = []
        for msg in replies:
            pid = accept(msg, phase="evaluate", rnd=server_round, view=self.view, traffic=self.traffic)
            if pid is None:
                continue
            try:
                self.client_eval.rounds.setdefault(server_round, {})[pid] = P.metric(msg.content, "accuracy")
            except P.PayloadError as err:
                log.warning("rejected evaluation of partition %s: %s", pid, err)
                self.view.rejected("evaluate", server_round, msg.metadata.src_node_id, str(err))
                continue
            accepted.append(msg)
        return super().aggregate_evaluate(server_round, accepted) if accepted else None


class ClientLevelDP(DifferentialPrivacyServerSideFixedClipping):
    """Flower's server-side fixed-clipping DP, fed only replies that passed fedlatent's checks.

    Flower clips each update to ``clipping_norm`` around the global model, averages (with
    equal weights: the inner strategy weighs by ``UNIT_WEIGHT``) and adds Gaussian noise of
    std ``noise_multiplier * clipping_norm / num_sampled_clients``. When fewer updates than
    planned arrive (refusals, rejections) that noise is smaller relative to one client's
    influence; ``multipliers`` keeps the effective multiplier of every release so that the
    accounting (``client_level_epsilon``) uses what really happened.
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
        try:
            arrays, metrics = super().aggregate_train(server_round, accepted)
        finally:
            self.inner.screened = False
        if arrays is not None:
            self.multipliers.append(self.noise_multiplier * len(accepted) / self.num_sampled_clients)
        return arrays, metrics
