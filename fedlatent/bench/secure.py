"""The cost of SecAgg+ in ``fedlatent bench``: distributed-DP rounds beside plain FedAvg rounds of the same model.

Each client count runs twice on the same data and model (ScatterNet features, a linear
classifier): distributed DP-SGD through Flower's SecAgg+ (four message exchanges a round:
setup, key shares, masked vectors, unmasking) and plain FedAvg without DP (one exchange). Their
seconds per round (the median after the first round, which pays for starting Ray actors) and
bytes uploaded per client and round give the overhead. The plain round also trains a local
epoch where the secure one computes one clipped gradient sum, so the ratio is the protocol's
cost plus that difference, measured rather than modelled.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

SECURE = {
    "mode": "latent-fedavg", "encoder": "scatternet", "latent-classifier": "linear", "rounds": 4, "epsilon": 3.0,
    "dp-mode": "distributed", "secagg": True, "batch-size": 8192, "optimizer": "sgd", "lr": 16.0,
    "max-grad-norm": 0.1, "public-fraction": 0.01,
}  # fmt: skip
PLAIN = {
    "mode": "latent-fedavg", "encoder": "scatternet", "latent-classifier": "linear", "rounds": 4, "local-epochs": 1,
    "batch-size": 256, "public-fraction": 0.01,
}  # fmt: skip


def per_round(results: dict[str, Any]) -> float:
    """Median seconds of a run's rounds after the first."""
    seconds = [row["seconds"] for row in results["history"] if "seconds" in row]
    return statistics.median(seconds[1:] or seconds)


def secagg_cost(bench: Any, *, clients: Sequence[int] = (10, 100)) -> list[dict[str, Any]]:
    """Seconds and bytes per round with and without SecAgg+ at each client count (module docstring)."""
    rows = []
    cache = {"cache-dir": str(bench.out / "cache")}  # ScatterNet features computed once, not every round
    for n in clients:
        secure = bench.federation(f"secagg-{n}", {**SECURE, **cache, "num-clients": n, "round-timeout": 600.0})
        plain = bench.federation(f"plain-{n}", {**PLAIN, **cache, "num-clients": n})
        s, p = per_round(secure), per_round(plain)
        rows.append(
            {
                "clients": n, "secure_seconds_per_round": s, "plain_seconds_per_round": p, "ratio": s / p,
                "secure_bytes_up_per_client_round": secure["bytes_uploaded"] / n / secure["rounds"],
                "plain_bytes_up_per_client_round": plain["bytes_uploaded"] / n / plain["rounds"],
                "secure_accuracy": secure["accuracy"], "epsilon": secure["epsilon"],
            }
        )  # fmt: skip
    return rows


def markdown_rows(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the bench report's SecAgg+ table."""
    header = ["clients", "SecAgg+ s / round", "plain s / round", "ratio", "kB up / client / round (secure, plain)"]
    body = [
        [str(r["clients"]), f"{r['secure_seconds_per_round']:.2f}", f"{r['plain_seconds_per_round']:.2f}",
         f"{r['ratio']:.2f}", f"{r['secure_bytes_up_per_client_round'] / 1e3:.0f}, "
         f"{r['plain_bytes_up_per_client_round'] / 1e3:.0f}"]
        for r in rows
    ]  # fmt: skip
    return header, body
