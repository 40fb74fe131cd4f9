"""The Ray sweep's throughput: points per hour on one and on two Ray nodes of this machine.

What: ``ray_throughput(out)`` starts a ``LocalRayCluster`` of each size in ``NODES`` (one CPU
per node), runs the same small sweep (``SPEC``: raw digits federations and their public-only
bars, no attacks) on it with ``fedlatent sweep --ray`` semantics (``run_sweep_on_ray``), and
reports wall seconds and points per hour. On a 2-core machine two one-CPU nodes are the most
that do not share a core, so the ratio of the two rows is the scaling one more node buys.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fedlatent.bench.ray_cluster import LocalRayCluster
from fedlatent.bench.ray_sweep import run_sweep_on_ray
from fedlatent.bench.sweep import SweepSpec

SPEC = {
    "base": {"dataset": "digits", "num-clients": 2, "rounds": 3, "local-epochs": 1, "mode": "raw"},
    "grid": {"seed": [0, 1, 2, 3]},
}
NODES = (1, 2)


def ray_throughput(
    out: Path, *, nodes: Sequence[int] = NODES, echo: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Points per hour of ``SPEC`` on a local cluster of each size in ``nodes`` (fresh sweep directory each)."""
    spec = SweepSpec.from_mapping(SPEC, source="fedlatent.bench.ray_bench")
    rows = []
    for n in nodes:
        where = out / f"ray-sweep-{n}-nodes"
        shutil.rmtree(where, ignore_errors=True)
        echo(f"bench: ray sweep on {n} node(s) ...")
        with LocalRayCluster(nodes=n, cpus_per_node=1) as cluster:
            done = run_sweep_on_ray(spec, where, address=cluster.address, cpus=1)
        if done["failed"]:
            raise RuntimeError(f"ray sweep bench: point(s) {', '.join(done['failed'])} failed; see {where}")
        rows.append({"nodes": n, "cpus_per_node": 1, "points": done["points"], "seconds": done["seconds"],
                     "points_per_hour": done["points"] / done["seconds"] * 3600})  # fmt: skip
        echo(f"bench: ray sweep on {n} node(s): {rows[-1]['points_per_hour']:.0f} points/hour")
    return rows


def markdown_rows(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the throughput table, with the speed-up over the first row."""
    first = rows[0]["points_per_hour"] if rows else 1.0
    return ["Ray nodes", "CPUs / node", "points", "wall s", "points / hour", "speed-up"], [
        [str(r["nodes"]), str(r["cpus_per_node"]), str(r["points"]), f"{r['seconds']:.0f}",
         f"{r['points_per_hour']:.0f}", f"{r['points_per_hour'] / first:.2f}"]
        for r in rows
    ]  # fmt: skip
