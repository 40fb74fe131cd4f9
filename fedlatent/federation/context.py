"""What every phase of a run shares, and how the server reaches the nodes.

``RunContext`` carries one run's grid, nodes, config, plan and recorders; ``make_contract``
derives the run's reply contract from facts the server knows; ``broadcast`` sends a query to
every live node and waits at most ``round-timeout`` for the replies, naming silent nodes;
``identify`` binds nodes to partitions before seeded sampling.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedlatent.config import RunConfig
from fedlatent.federation import payloads as P
from fedlatent.federation.report import RunRecord
from fedlatent.federation.server_view import ServerView
from fedlatent.federation.strategy import Inbox, Traffic
from fedlatent.learning.progress import Progress
from fedlatent.plan import DataPlan

log = logging.getLogger("fedlatent")


@dataclass(frozen=True, eq=False)
class RunContext:
    """What every phase of one run needs: Flower's grid and nodes, the config and plan, the recorders."""

    grid: Grid
    nodes: list[int]
    cfg: RunConfig
    plan: DataPlan
    view: ServerView
    traffic: Traffic
    record: RunRecord
    contract: P.Contract

    @property
    def inbox(self) -> Inbox:
        """Every reply goes through here: the contract, then the server view."""
        return Inbox(self.contract, self.view, self.traffic)


def make_contract(cfg: RunConfig, plan: DataPlan) -> P.Contract:
    """The run's reply contract from what the server knows: partition sizes, budget, DP phases."""
    dp_phases = {P.PHASE_ENCODER} if cfg.encoder_dp else set()
    labels = cfg.mode == "latent-share" and math.isfinite(cfg.label_epsilon)
    if cfg.dp:
        dp_phases.add("share-latents" if cfg.mode == "latent-share" else P.PHASE_CLASSIFIER)
    return P.Contract(
        sizes=tuple(len(c) for c in plan.client_idx),
        test_size=len(plan.dataset.y_test),
        num_classes=plan.dataset.num_classes,
        latent_dim=cfg.feature_dim,
        # a latent-share client's ledger also holds the labels' randomized response (basic composition)
        epsilon=cfg.epsilon + (cfg.label_epsilon if labels else 0.0),
        dp_phases=frozenset(dp_phases),
    )


def wait_for_nodes(grid: Grid, n: int, timeout: float = 600.0, settle: float = 3.0) -> list[int]:
    """Block until ``n`` SuperNodes are connected (``n = 0``: all, once their count settles)."""
    deadline = time.time() + timeout
    seen, since = -1, time.time()
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) != seen:
            seen, since = len(nodes), time.time()
        if (n and len(nodes) >= n) or (not n and nodes and time.time() - since >= settle):
            return nodes[:n] if n else nodes
        if time.time() > deadline:
            raise TimeoutError(f"only {len(nodes)} of num-clients={n} SuperNodes connected in {timeout:.0f}s")
        time.sleep(0.5)


def broadcast(run: RunContext, message_type: str, content: RecordDict, *, poll: float = 0.5) -> list[Message]:
    """Send one body to every live node of the run and return their replies, logging progress.

    Flower's ``send_and_receive`` does the same silently (and polls every 3 s); with 1,000
    clients a broadcast takes minutes, so the replies are pulled here and counted as they come.
    A node silent after ``round-timeout`` seconds is named in the log and left out.
    """
    name = message_type.removeprefix("query.")
    alive = set(run.grid.get_node_ids())
    nodes = [n for n in run.nodes if n in alive]
    messages = (Message(content=content, message_type=message_type, dst_node_id=n) for n in nodes)
    replies: list[Message] = []
    deadline = time.monotonic() + run.cfg.round_timeout
    with run.record.timed(name):
        sent = dict(zip(run.grid.push_messages(run.traffic.sent(messages)), nodes, strict=True))
        pending = set(sent)
        progress = Progress(name, len(pending), unit="replies", after=10)
        while pending and time.monotonic() < deadline:
            pulled = list(run.grid.pull_messages(pending))
            replies += pulled
            pending -= {m.metadata.reply_to_message_id for m in pulled}
            if pulled:
                progress(len(replies))
            if pending:
                time.sleep(poll)
    if silent := sorted(sent[m] for m in pending):
        log.warning("%s: no reply from node(s) %s within round-timeout=%gs", name, silent, run.cfg.round_timeout)
    return replies


def identify(run: RunContext) -> None:
    """Ask every node for its partition once, so that seeded sampling draws partitions, not node ids."""
    for m in broadcast(run, P.Q_IDENTIFY, RecordDict({P.CONFIG: ConfigRecord()})):
        run.inbox.accept(m, phase="identify", rnd=0)
