"""The reply contract: what the server accepts from each client, checked whole before any use.

``Contract.check`` validates a reply completely: exactly the records and metric keys its phase
sends (``REPLIES``), every value finite and in range, weights of the global model's keys, shapes
and dtype, the partition id an integer in range, the node's own and unique in its round,
``num-examples`` equal to the partition size the server recomputes from the plan, latent rows
and labels, and (``claims``) a DP reply's privacy figures against the server's own accounting
(``server_epsilon``). A reply that fails raises ``payloads.PayloadError``. The server view on
disk is, by construction, exactly what passed these checks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, Message

from fedlatent.casting import ConfigError
from fedlatent.federation.payloads import (
    ARRAYS,
    LATENTS,
    METRICS,
    UNIT_WEIGHT,
    PayloadError,
    _decode,
    _finite,
    check_arrays,
    plain_text,
)

# The replies each phase may send: (ArrayRecord names, MetricRecord keys); a reply matches one
# exactly. Keys: "plain" without DP, "dp" with it, "refused" when a DP client's budget is spent.
_ID = frozenset({"num-examples", "partition-id"})
_TRAIN = _ID | {UNIT_WEIGHT}
_REFUSED = frozenset({"refused", "epsilon-spent"})
_DP_TRAIN = frozenset({"epsilon-spent", "noise-multiplier"})
REPLIES: dict[str, dict[str, tuple[frozenset[str], frozenset[str]]]] = {
    "train": {
        "plain": (frozenset({ARRAYS}), _TRAIN | {"train-loss"}),
        "dp": (frozenset({ARRAYS}), _TRAIN | _DP_TRAIN),
        "refused": (frozenset(), _TRAIN | _REFUSED),
    },
    "evaluate": {"plain": (frozenset(), _ID | {"loss", "accuracy"})},
    "set-encoder": {"plain": (frozenset(), _ID)},
    "identify": {"plain": (frozenset(), _ID)},
    "local-encoder": {"plain": (frozenset(), _ID | {"recon-loss"})},
    "share-latents": {
        "plain": (frozenset({LATENTS}), _ID),
        "dp": (frozenset({LATENTS}), _ID | _DP_TRAIN | {"noise-std"}),
        "refused": (frozenset(), _ID | _REFUSED),
    },
}
REPLIES["final-evaluate"] = REPLIES["evaluate"]  # the last evaluation, after the rounds: its own answers
EVALUATE_PHASES = frozenset({"evaluate", "final-evaluate"})  # they count the test split, not a partition
_NON_NEGATIVE = frozenset({"train-loss", "loss", "recon-loss", "noise-multiplier", "noise-std"})


CONTESTED = "contested"  # the reason's first word when a node claims a partition another node holds
NOT_OWNER = "not-owner"  # ... when that partition belongs to another node's registered key (partition-owners)


@dataclass
class Contract:
    """What the server accepts from clients in one run, and who already answered.

    Built once per run from facts the server knows (``sizes``: the records of every partition,
    recomputed from the plan; the test split's size; the budget; which phases run DP-SGD); ``check`` validates one
    reply and, when it passes, binds its node to its partition and marks the partition as
    answered in that round. Binding is first come (trust on first use): a node keeps its
    partition for the run and no other node may report it. With ``registered``, ``owner`` is
    fixed before the run (each partition's node, by the key the SuperLink registered for it) and
    no claim can move it.
    """

    sizes: tuple[int, ...]
    num_classes: int
    latent_dim: int
    test_size: int = 0  # records of the test split, which federated evaluation scores
    epsilon: float = math.inf
    dp_phases: frozenset[str] = frozenset()
    owner: dict[int, int] = field(default_factory=dict)  # partition -> node
    registered: bool = False  # owner was fixed before the run (partition-owners), not by first claims
    bound: dict[int, int] = field(default_factory=dict)  # node -> partition: owner inverted, read for every reply
    # A DP phase's privacy figures against the server's own accounting (server_epsilon.ServerAccountant.check):
    # called with (partition, phase, metric values); raises PayloadError when they disagree.
    claims: Callable[[int, str, Mapping[str, float]], None] | None = None
    # (partition, phase) -> (L∞, L2) bounds of an honest update (bounds.update_bounds); None: unbounded.
    update_bounds: Callable[[int, str], tuple[float, float]] | None = None
    latent_bound: float = math.inf  # largest |coordinate| of an honest released latent (bounds.latent_bound)
    answered: set[tuple[str, int, int]] = field(default_factory=set)  # (phase, round, partition)

    def register(self, owners: Mapping[int, int]) -> None:
        """Fix every partition's node before the run (``casting.parse_owners``: partition -> node id).

        Raises
        ------
        ConfigError
            Unless ``owners`` names exactly the partitions ``0 .. len(sizes) - 1``.
        """
        if sorted(owners) != list(range(len(self.sizes))):
            raise ConfigError(
                f"partition-owners names partitions {sorted(owners)}; this run has {len(self.sizes)}: name each once"
            )
        self.owner, self.bound, self.registered = dict(owners), {n: p for p, n in owners.items()}, True

    def partition_of(self, node: int) -> int | None:
        """The partition a node is bound to, or None before its first accepted reply."""
        return self.bound.get(node)

    def unanswered(self, nodes: list[int], answered: set[int]) -> list[int]:
        """Partitions of ``nodes`` that did not answer: a node not bound yet stands for every unowned partition."""
        out = set()
        for node in nodes:
            pid = self.partition_of(node)
            out |= {pid} if pid is not None else set(range(len(self.sizes))) - set(self.owner)
        return sorted(out - answered)

    def check(
        self,
        msg: Message,
        *,
        phase: str,
        rnd: int,
        weights: Mapping[str, tuple[int, ...]] | None = None,
        sent: Mapping[str, np.ndarray] | None = None,
    ) -> tuple[int, dict[str, np.ndarray]]:
        """Validate one reply of ``phase``; return ``(partition id, decoded arrays)`` or raise PayloadError.

        ``weights``: key -> shape of the model a train reply updates (FedAvg phases); ``sent``: the
        weights the server sent that round, against which the update is bounded (``update_bounds``).
        """
        if msg.has_error():
            # Ray and Flower wrap the client's exception in a long preamble: its own words come last.
            text = plain_text(msg.error.reason, limit=100_000).rsplit("Message: ", 1)[-1].removesuffix("'>")
            raise PayloadError(f"client error: {text if len(text) <= 400 else '...' + text[-397:]}")
        content, kind = msg.content, "train" if weights is not None else phase
        if content.config_records:
            raise PayloadError(f"unexpected ConfigRecord(s) {sorted(content.config_records)}")
        if list(content.metric_records) != [METRICS]:
            raise PayloadError(f"expected exactly one MetricRecord '{METRICS}', got {sorted(content.metric_records)}")
        metrics, names = content.metric_records[METRICS], frozenset(content.array_records)
        dp = phase in self.dp_phases  # a DP phase never sends a plain reply, a plain one never a DP one
        allowed = {k: v for k, v in REPLIES[kind].items() if (k != "plain") == dp}
        match = [k for k, (arrays, keys) in allowed.items() if names == arrays and frozenset(metrics) == keys]
        if not match:
            expected = " or ".join(f"arrays {sorted(a)} + metrics {sorted(m)}" for a, m in allowed.values())
            raise PayloadError(f"reply holds arrays {sorted(names)} + metrics {sorted(metrics)}; expected {expected}")
        values = {k: _finite(k, v) for k, v in metrics.items()}
        pid = self._partition(values, node=msg.metadata.src_node_id, phase=phase, rnd=rnd)
        self._values(values)
        if self.claims is not None and dp:
            self.claims(pid, phase, values)
        decoded: dict[str, np.ndarray] = {}
        if ARRAYS in names:
            decoded = check_arrays(content.array_records[ARRAYS], weights or {})
            if sent is not None and self.update_bounds is not None:
                self._bounded(decoded, sent, *self.update_bounds(pid, phase))
        if LATENTS in names:
            decoded = self._latents(content.array_records[LATENTS], rows=self.sizes[pid])
        self.owner[pid] = msg.metadata.src_node_id
        self.bound[msg.metadata.src_node_id] = pid
        self.answered.add((phase, rnd, pid))
        return pid, decoded

    def _partition(self, values: Mapping[str, float], *, node: int, phase: str, rnd: int) -> int:
        raw = values["partition-id"]
        if not raw.is_integer() or not 0 <= raw < len(self.sizes):
            raise PayloadError(f"partition-id {raw!r} is not an integer in [0, {len(self.sizes)})")
        pid = int(raw)
        if self.owner.get(pid, node) != node:  # trust on first use: the first claim, at identify, binds
            if self.registered:  # the thief is refused and is no participant: it does not count for the floor
                raise PayloadError(f"{NOT_OWNER}: partition-id {pid} is node {self.owner[pid]}'s (partition-owners)")
            raise PayloadError(f"{CONTESTED}: partition-id {pid} was claimed first by node {self.owner[pid]}")
        if (bound := self.partition_of(node)) not in (None, pid):
            raise PayloadError(f"node {node} reported partition {bound} before, now {pid}")
        if (phase, rnd, pid) in self.answered:
            raise PayloadError(f"partition-id {pid} already answered {phase} round {rnd}")
        records, of = (
            (self.test_size, "the test split") if phase in EVALUATE_PHASES else (self.sizes[pid], f"partition {pid}")
        )
        if values["num-examples"] != records:
            raise PayloadError(f"num-examples {values['num-examples']:g} != {records} records of {of}")
        return pid

    @staticmethod
    def _bounded(decoded: Mapping[str, np.ndarray], sent: Mapping[str, np.ndarray], linf: float, l2: float) -> None:
        """An update (weights received minus sent) within the L∞ and L2 bounds of an honest round."""
        with np.errstate(over="ignore", invalid="ignore"):  # finite float32 extremes overflow: then out of range
            delta = np.concatenate([(decoded[k].astype(np.float64) - sent[k]).ravel() for k in decoded])
        largest, norm = float(np.abs(delta).max(initial=0.0)), float(np.linalg.norm(delta))
        if not largest <= linf:
            raise PayloadError(f"update moves a weight by {largest:.4g}, beyond the {linf:.4g} an honest round can")
        if not norm <= l2:
            raise PayloadError(f"update has L2 norm {norm:.4g} > max-update-norm {l2:g}")

    def _values(self, values: Mapping[str, float]) -> None:
        for key, value in values.items():
            if key in (UNIT_WEIGHT, "refused") and value != 1:
                raise PayloadError(f"metrics['{key}'] must be 1, got {value:g}")
            if key == "accuracy" and not 0.0 <= value <= 1.0:
                raise PayloadError(f"accuracy {value:g} is outside [0, 1]")
            if key == "epsilon-spent" and not 0.0 <= value <= self.epsilon * (1 + 1e-6):
                raise PayloadError(f"epsilon-spent {value:g} is outside [0, budget {self.epsilon:g}]")
            if key in _NON_NEGATIVE and value < 0:
                raise PayloadError(f"metrics['{key}'] must be >= 0, got {value:g}")

    def _latents(self, record: ArrayRecord, *, rows: int) -> dict[str, np.ndarray]:
        if sorted(record.keys()) != ["labels", "latents"]:
            raise PayloadError(f"latent payload must hold exactly 'latents' and 'labels', got {sorted(record.keys())}")
        latents, labels = _decode(record, "latents"), _decode(record, "labels")
        if latents.dtype != np.float32 or labels.dtype != np.int64:
            raise PayloadError(f"latents/labels have dtype {latents.dtype}/{labels.dtype}, expected float32/int64")
        if latents.shape != (rows, self.latent_dim) or labels.shape != (rows,):
            raise PayloadError(
                f"latents/labels have shape {latents.shape}/{labels.shape}, "
                f"expected ({rows}, {self.latent_dim})/({rows},)"
            )
        if not np.isfinite(latents).all():
            raise PayloadError("latents must be finite floats")
        if rows and not (largest := float(np.abs(latents).max())) <= self.latent_bound:
            raise PayloadError(f"a latent coordinate of {largest:.4g} is beyond the {self.latent_bound:.4g} bound")
        if rows and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise PayloadError(f"labels must be integers in [0, {self.num_classes})")
        return {"latents": latents, "labels": labels}
