"""What every phase of a run shares.

``RunContext`` carries one run's grid, nodes, config, plan, recorders and checkpointer;
``make_contract`` derives the run's reply contract from facts the server knows;
``wait_for_nodes`` waits for the federation's SuperNodes. How messages reach the nodes is
``rounds``.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Collection
from dataclasses import dataclass, field

from flwr.app import ConfigRecord, Context
from flwr.serverapp import Grid

from fedlatent import casting as C
from fedlatent.config import RunConfig
from fedlatent.federation import payloads as P
from fedlatent.federation.bounds import update_bounds
from fedlatent.federation.checkpoint import Checkpoint, Checkpointer
from fedlatent.federation.contract import Contract
from fedlatent.federation.report import RunRecord
from fedlatent.federation.server_epsilon import ServerAccountant
from fedlatent.federation.server_view import ServerView
from fedlatent.federation.strategy import Inbox, Traffic
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
    contract: Contract
    checkpoint: Checkpointer
    resumed: Checkpoint | None = None  # the checkpoint this run continues, if any
    silent: set[int] = field(default_factory=set)  # nodes that missed a deadline: left out from then on
    flower: Context | None = None  # the ServerApp's Flower context (Flower's SecAgg+ workflow keeps state in it)

    @property
    def inbox(self) -> Inbox:
        """Every reply goes through here: the contract, then the server view."""
        return Inbox(self.contract, self.view, self.traffic)

    def stamp(self, config: ConfigRecord) -> ConfigRecord:
        """``config`` plus what every message carries: the run key (clients file their stores under it), resumed."""
        config["run-key"] = self.checkpoint.run_key
        config["resumed"] = self.resumed is not None
        return config


def make_contract(cfg: RunConfig, plan: DataPlan, record: RunRecord | None = None) -> Contract:
    """The run's reply contract from what the server knows: partition sizes, budget, DP phases.

    Updates are bounded (``bounds.update_bounds``); with the run's ``record``, a DP reply's
    privacy figures are checked against the server's own accounting of it (``server_epsilon``).
    """
    dp_phases = {P.PHASE_ENCODER} if cfg.encoder_dp else set()
    labels = cfg.mode == "latent-share" and math.isfinite(cfg.label_epsilon)
    if cfg.dp:
        dp_phases.add("share-latents" if cfg.mode == "latent-share" else P.PHASE_CLASSIFIER)
    contract = Contract(
        sizes=tuple(len(c) for c in plan.client_idx),
        test_size=len(plan.dataset.y_test),
        num_classes=plan.dataset.num_classes,
        latent_dim=cfg.feature_dim,
        # a latent-share client's ledger also holds the labels' randomized response (basic composition)
        epsilon=cfg.epsilon + (cfg.label_epsilon if labels else 0.0),
        dp_phases=frozenset(dp_phases),
    )
    sizes = contract.sizes
    bounds = functools.lru_cache(maxsize=256)(  # keyed by size: partitions mostly share one
        lambda n, phase: update_bounds(cfg, n, encoder=phase == P.PHASE_ENCODER)
    )
    contract.update_bounds = lambda pid, phase: bounds(sizes[pid], phase)
    if cfg.partition_owners:  # a deployment with registered keys: no claim can take another's partition
        contract.register(C.parse_owners(cfg.partition_owners))
    if record is not None and cfg.dp_mode == "local" and dp_phases:
        accountant = ServerAccountant(cfg, sizes)
        contract.claims = lambda pid, phase, values: accountant.check(pid, phase, values, record.privacy)
    return contract


class FederationTooSmall(RuntimeError):
    """The federation has fewer SuperNodes than ``num-clients`` asks for, and will not get more."""


def wait_for_nodes(
    grid: Grid,
    n: int,
    *,
    timeout: float = 600.0,
    simulation: bool = False,
    settle: float = 3.0,
    every: float = 10.0,
    only: Collection[int] = (),
) -> list[int]:
    """Block until ``n`` SuperNodes are connected (``n = 0``: all, once their count settles).

    With ``only`` (the node ids of ``partition-owners``), other connected nodes are not counted,
    nor ever asked anything: a registered key that owns no partition takes no client's place.

    A simulation registers every SuperNode at its start: once the count has settled below ``n``
    the wait cannot succeed, so it fails at once, naming both numbers and both fixes. A
    deployment's SuperNodes may come later: "k of N SuperNodes connected" is logged every
    ``every`` seconds, and after ``timeout`` (``node-wait-timeout``) the error names the nodes
    that did connect.

    Raises
    ------
    FederationTooSmall
        In a simulation, fewer SuperNodes than ``n``.
    TimeoutError
        In a deployment, fewer than ``n`` SuperNodes after ``timeout`` seconds.
    """
    start = time.time()
    seen, since, told = -1, start, start
    while True:
        nodes = sorted(set(grid.get_node_ids()) & set(only) if only else grid.get_node_ids())
        now = time.time()
        if len(nodes) != seen:
            seen, since = len(nodes), now
        settled = bool(nodes) and now - since >= settle
        if (n and len(nodes) >= n) or (not n and settled):
            return nodes[:n] if n else nodes
        if simulation and settled:
            raise FederationTooSmall(
                f"num-clients={n} but the simulation has {len(nodes)} SuperNodes: give it {n} "
                f'(flwr run . --federation-config "num-supernodes={n}"), or set num-clients=0 to use every SuperNode'
            )
        if now - told >= every:
            told = now
            log.info("%d of %s SuperNodes connected (waiting up to %.0f s)", len(nodes), n or "all", timeout)
        if now - start > timeout:
            raise TimeoutError(
                f"only {len(nodes)} of num-clients={n} SuperNodes connected in {timeout:.0f} s (node-wait-timeout); "
                f"connected node ids: {nodes or 'none'}"
            )
        time.sleep(0.5)
