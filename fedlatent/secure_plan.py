"""The public plan of distributed DP-SGD, derived from the RunConfig alone (as ``plan.py`` does for the rest).

Every party recomputes it: the server to decode and account, each client to make its share,
the attacker to know the noise. Calibration takes a fraction of a second, so it is kept per
process, keyed on every setting it reads.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

from fedlatent.config import RunConfig
from fedlatent.plan import DataPlan, build_classifier
from fedlatent.privacy.distributed import DistributedPlan, plan_distributed
from fedlatent.privacy.statistics import statistics_dim


def distributed_plan(cfg: RunConfig, plan: DataPlan) -> DistributedPlan:
    """The public settings of distributed DP-SGD (``privacy.distributed``): every party recomputes them.

    latent-share sends one release of sufficient statistics (``privacy.statistics``: sensitivity
    √3 · ``stat-clip``, no sampling). Otherwise one round is one step over the union of the
    clients' records: sampling rate
    ``batch-size / records``, clip ``max-grad-norm``, ``rounds`` steps, shares calibrated for
    ``num-clients - secagg-max-dropouts`` survivors; the classifier's size sets the dimension.
    """
    sizes = [len(c) for c in plan.client_idx]
    if cfg.mode == "latent-share":  # one release of sufficient statistics (privacy.statistics), no sampling
        dim = statistics_dim(plan.dataset.num_classes, cfg.statistics_dim)
        return _distributed_plan(cfg.epsilon, cfg.delta, math.sqrt(3) * cfg.stat_clip, dim, 1.0, 1, cfg.num_clients,
                                 cfg.min_survivors, max(sizes))  # fmt: skip
    dim = sum(p.numel() for p in build_classifier(cfg, plan.dataset).parameters())
    return _distributed_plan(cfg.epsilon, cfg.delta, cfg.max_grad_norm, dim, min(1.0, cfg.batch_size / sum(sizes)),
                             cfg.rounds, cfg.num_clients, cfg.min_survivors, max(sizes))  # fmt: skip


@functools.lru_cache(maxsize=8)  # keyed on every argument; a client asks once per process, not per round
def _distributed_plan(*args: float) -> DistributedPlan:
    keys = ("epsilon", "delta", "clip", "dim", "sample_rate", "rounds", "clients", "min_survivors", "max_records")
    return plan_distributed(**dict(zip(keys, args, strict=True)))  # type: ignore[arg-type]


def secure_privacy(cfg: RunConfig, plan: DataPlan, rounds: Mapping[int, list[int]]) -> dict[str, Any]:
    """The privacy fields of a distributed-DP run, computed by the server from its own record of each round.

    ``rounds`` maps each round to the partitions whose shares its sum held. A client's ε against
    the server composes the rounds it was in, each at the noise of that round's survivors (at
    least the planned minimum: SecAgg+ halts below the threshold); ``epsilon_local`` is what its
    own share alone guarantees if secure aggregation is broken. No figure comes from a reply.
    """
    dplan = distributed_plan(cfg, plan)
    took_part = {pid: [len(ps) for ps in rounds.values() if pid in ps] for pid in range(cfg.num_clients)}
    server = {str(pid): dplan.epsilon(counts, delta=cfg.delta) for pid, counts in took_part.items()}
    local = {str(pid): dplan.epsilon_local(len(counts), delta=cfg.delta) for pid, counts in took_part.items()}
    note = (
        f"Distributed DP: each round is one DP-SGD step over the union of the clients' records (add/remove one "
        f"record, Poisson rate {dplan.sample_rate:.4g}, clip {dplan.clip:g}); each client adds Skellam noise and "
        f"Flower's SecAgg+ reveals only the sum, whose noise multiplier is >= {dplan.noise_multiplier:.4g} "
        f"(Agarwal, Kairouz & Liu 2021; RDP with Poisson amplification in both directions, delta={cfg.delta}). "
        f"epsilon holds against the server if it follows the protocol, colludes with fewer than the threshold "
        f"and at most secagg-max-dropouts={cfg.secagg_max_dropouts} clients drop; Flower 1.42's masks come from "
        "32-bit seeds expanded by NumPy's Mersenne Twister, not a cryptographic generator. epsilon_local is what "
        "a client's own noise share guarantees if secure aggregation is broken."
    )
    return {
        "epsilon": max(server.values()),
        "epsilon_per_client": server,
        "epsilon_local": max(local.values()),
        "epsilon_local_per_client": local,
        "noise_multiplier": dplan.noise_multiplier,
        "noise_multiplier_per_client": None,
        "dp_mode": "distributed",
        "secagg": {
            "threshold": cfg.secagg_threshold or cfg.min_survivors,
            "max_dropouts": cfg.secagg_max_dropouts,
            "min_survivors": dplan.min_survivors,
            "scale": dplan.scale,
            "range": dplan.bound,
            "modulus_bits": 32,
            "share_variance": dplan.share_variance,
            "sample_rate": dplan.sample_rate,
            "l2_sensitivity": dplan.l2,
            "survivors_per_round": [len(rounds[r]) for r in sorted(rounds)],
        },
        "privacy_note": note,
    }
