"""Secure aggregation: one round of Flower's own SecAgg+ (``SecAggPlusWorkflow``) from fedlatent's round loop.

What: ``secure_sum`` sends the global model to every live node, lets Flower's workflow run its
four stages (setup, share keys, collect masked vectors, unmask) with the clients'
``secaggplus_mod``, and returns the exact integer sum of the clients' vectors and which
partitions it holds. The server never sees a client's vector, only the sum.

Why the legacy strategy here: the workflow is built on Flower's legacy Strategy API; it asks a
strategy for ``FitIns`` and hands it the unmasked aggregate. ``_SumStrategy`` is the smallest
such strategy: it addresses the nodes the round loop chose and keeps what comes back.

How integers pass unchanged: the mod scales a vector by ``num_examples / max_weight`` (the
client sends ``num_examples = max_weight = 1``), clips to ±``clipping_range`` and quantizes into
[0, ``quantization_range``]; with ``quantization_range = 2·clipping_range`` the step is 1, so an
integer vector within the bound goes through exactly, and the modulus 2^32 holds the shifted sum
of ``n`` vectors when ``2·n·bound < 2^32`` (``privacy.distributed.DistributedPlan.bound``). The
workflow returns the mean over the survivors as float64; their count times it, rounded, is the sum.

Threat model (what the sum's privacy rests on): the server follows the protocol and colludes
with fewer than ``threshold`` clients; the round halts (nothing is revealed) when fewer than
``threshold`` clients survive. Flower 1.42 folds each mask seed to 32 bits and expands it with
NumPy's Mersenne Twister, not a cryptographic generator: a server able to search 2^32 seeds
per pair could strip masks. The survivor set and each client's plain metrics are not hidden.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.common import FitIns, Parameters, Scalar, parameters_to_ndarrays
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid

MODULUS = 2**32


class SecureRoundFailed(RuntimeError):
    """The SecAgg+ round halted: fewer clients than the threshold survived; nothing was revealed."""


class _SumStrategy(Strategy):  # type: ignore[misc]
    """The legacy strategy the workflow drives: fixed nodes, and the unmasked mean kept, not applied."""

    def __init__(self, grid: Grid, run_id: int, nodes: list[int], config: Mapping[str, Scalar]) -> None:
        self.proxies = [GridClientProxy(n, grid, run_id) for n in nodes]
        self.config = dict(config)
        self.result: tuple[np.ndarray, list[int]] | None = None

    def initialize_parameters(self, client_manager: object) -> None:
        return None

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: object) -> list:
        return [(p, FitIns(parameters, dict(self.config))) for p in self.proxies]

    def aggregate_fit(self, server_round: int, results: list, failures: list) -> tuple[None, dict]:
        if results:
            mean = np.asarray(parameters_to_ndarrays(results[0][1].parameters)[0], dtype=np.float64)
            total = np.rint(mean * len(results)).astype(np.int64)
            self.result = (total, [proxy.node_id for proxy, _ in results])
        return None, {}  # the workflow must not overwrite the run's state with the aggregate

    def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: object) -> list:
        return []

    def aggregate_evaluate(self, server_round: int, results: list, failures: list) -> tuple[None, dict]:
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters) -> None:
        return None


def workflow_for(*, clients: int, threshold: int, bound: int, timeout: float) -> SecAggPlusWorkflow:
    """Flower's SecAgg+ workflow for exact integer sums of ``clients`` vectors within ±``bound``.

    Every client shares with every other (``num_shares = clients``: the threshold then counts
    survivors of the whole round); ``threshold`` equal to ``clients`` is passed as 1.0 (all),
    the only form Flower accepts for it.
    """
    if clients < 3:
        raise ValueError(f"SecAgg+ needs at least 3 clients, got {clients}")
    if not (2 <= threshold <= clients and 2 * clients * bound < MODULUS):
        raise ValueError(f"need 2 <= threshold <= clients and 2*clients*bound < 2**32; got {threshold}, {bound}")
    return SecAggPlusWorkflow(
        num_shares=clients,
        reconstruction_threshold=1.0 if threshold == clients else threshold,
        max_weight=1.0,
        clipping_range=float(bound),
        quantization_range=2 * bound,
        modulus_range=MODULUS,
        timeout=timeout,
    )


def secure_sum(
    context: Context,
    grid: Grid,
    workflow: SecAggPlusWorkflow,
    *,
    rnd: int,
    nodes: list[int],
    model: ArrayRecord,
    config: Mapping[str, Scalar],
) -> tuple[np.ndarray, list[int]]:
    """One SecAgg+ round: ``(sum of the survivors' vectors, survivor node ids)``.

    ``context`` is the ServerApp's Flower context (the workflow keeps its per-round state in it).
    Raises ``SecureRoundFailed`` when the workflow halted (too few survivors).
    """
    strategy = _SumStrategy(grid, context.run_id, nodes, config)
    legacy = LegacyContext(context, strategy=strategy, client_manager=SimpleClientManager())
    legacy.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord([a.numpy() for a in model.values()])
    legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: rnd})
    workflow(grid, legacy)
    if strategy.result is None:
        raise SecureRoundFailed(f"secure aggregation of round {rnd} halted: fewer clients than the threshold survived")
    return strategy.result
