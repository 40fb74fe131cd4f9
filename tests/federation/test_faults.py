"""Failing clients, the min-clients floor and seeded sampling, through the real server code.

The floor runs as a real Flower simulation (a crash is Flower's error reply, the run's FAILED
marker is the ServerApp's); failing clients and sampling are the server's logic alone and run it
with in-process ClientApps (``bench.server_fuzz.honest_run``): 10 s instead of 160 s.

``fail-fraction`` (fault injection, for tests) makes a seeded share of the clients crash in
every training round: the run must finish on the others, count every crash as a rejected
reply, and stay close to the run without failures; below ``min-clients`` it must stop with a
clear reason and a ``FAILED`` marker. With ``fraction-train`` < 1 the same seed must train the
same clients (Flower's own sampling is unseeded and node ids differ per run).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST

from fedlatent.bench.server_fuzz import honest_run
from fedlatent.config import RunConfig
from fedlatent.launch.superlink import FederationError, LocalSuperLink
from fedlatent.runs import app_dir

pytestmark = pytest.mark.slow

BASE = {**FAST, "mode": "raw", "num-clients": 10, "rounds": 3}


def _run(link: LocalSuperLink, out: Path, **keys: Any) -> dict[str, Any]:
    cache = out.parent / "faults-cache"
    link.run(app_dir(), run_config={**BASE, **keys, "out-dir": str(out), "cache-dir": str(cache)}, num_supernodes=10,
             timeout=900)  # fmt: skip
    return json.loads((out / "results.json").read_text())


def _in_process(out: Path, **keys: Any) -> dict[str, Any]:
    """The real server code with in-process ClientApps: node ids drawn from ``out``'s name."""
    cfg = RunConfig.from_run_config({**BASE, **keys, "cache-dir": str(out.parent / "faults-cache")})
    honest_run(cfg, out, seed=sum(out.name.encode()))
    return json.loads((out / "results.json").read_text())


def test_thirty_percent_failing_clients_leave_the_run_going(tmp_path: Path) -> None:
    # In-process: a ClientApp's exception becomes an error reply, as Flower makes it (the real
    # federation's error path is the min-clients test's below).
    clean = _in_process(tmp_path / "clean")
    faulty = _in_process(tmp_path / "faulty", **{"fail-fraction": 0.3})
    crashes = 3 * 3  # 30% of 10 clients in each of 3 rounds
    assert clean["rejected_replies"]["total"] == 0
    assert faulty["rejected_replies"]["total"] == crashes
    assert faulty["rejected_replies"]["by_phase"] == {"classifier": crashes}
    assert all("fault injection" in reason for reason in faulty["rejected_replies"]["by_reason"])
    assert len(faulty["history"]) == 3
    assert abs(faulty["accuracy"] - clean["accuracy"]) <= 0.02, (faulty["accuracy"], clean["accuracy"])


def test_a_round_below_min_clients_stops_the_run_with_its_reason(link: LocalSuperLink, tmp_path: Path) -> None:
    out = tmp_path / "below"
    with pytest.raises(FederationError, match="below min-clients=9"):
        _run(link, out, **{"fail-fraction": 0.3, "min-clients": 9})
    assert not (out / "results.json").exists()
    assert "RoundFailed" in (out / "FAILED").read_text() and "min-clients=9" in (out / "FAILED").read_text()


def test_sampling_half_the_clients_is_reproducible_from_the_seed(tmp_path: Path) -> None:
    # The real server code with in-process clients (bench.server_fuzz.honest_run): sampling is the
    # server's; the two runs' node ids differ, as two Flower runs' do.
    runs = [_in_process(tmp_path / f"half-{i}", **{"fraction-train": 0.5}) for i in range(2)]
    assert runs[0]["num_clients"] == 10 and len(runs[0]["records"]["per_client"]) == 10
    assert len(list((tmp_path / "half-0" / "private_index").glob("client_*.npy"))) == 10
    trained = []
    for i in range(2):
        lines = (tmp_path / f"half-{i}" / "server_view" / "metrics.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines]
        trained.append(sorted((r["round"], r["metrics"]["partition-id"]) for r in rows if r["phase"] == "classifier"))
    assert trained[0] == trained[1] and len(trained[0]) == 3 * 5  # 5 of 10 clients in each of 3 rounds
    assert len({pid for _, pid in trained[0]}) > 5  # the draw changes with the round
    assert _timeless(runs[0]) == _timeless(runs[1])  # the same results.json but for wall times and paths


def _timeless(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` without what differs between two runs of one config: wall times and the run's paths."""
    out = {k: v for k, v in results.items() if k not in ("wall_seconds", "phase_seconds")}
    out["history"] = [{k: v for k, v in row.items() if k != "seconds"} for row in results["history"]]
    out["config"] = {k: v for k, v in results["config"].items() if k not in ("out-dir", "client-state-dir")}
    return out
