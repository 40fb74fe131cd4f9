"""fedlatent as a local deployment: a real SuperLink and two SuperNodes on loopback.

Unlike the simulation, each message a SuperNode receives runs in a fresh ``flwr-clientapp``
process, so the ``local`` encoder a client trains in its first message reaches its later
train and evaluate messages only through ``context.state``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fedlatent.cli import build_parser
from fedlatent.federation.server_view import load_server_view
from fedlatent.launch.deployment import LocalDeployment
from fedlatent.launch.processes import live_members, tree_sessions
from fedlatent.launch.superlink import FederationError
from fedlatent.runs import app_dir

CONFIG = {
    "dataset": "digits",
    "num-clients": 2,
    "rounds": 1,  # each message is a fresh process here (~5 s each): keep them few
    "ae-epochs": 20,
    "local-epochs": 2,
    "server-epochs": 5,
    "mode": "latent-fedavg",
    "encoder": "local",
}


def _live_processes() -> list[tuple[int, int, str]]:
    """(pid, session id, command line) of every live, non-zombie process."""
    out = subprocess.run(
        ["ps", "-ww", "-A", "-o", "pid=", "-o", "sess=", "-o", "stat=", "-o", "args="],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rows = [line.split(None, 3) for line in out.splitlines()]
    return [(int(r[0]), int(r[1]), r[3] if len(r) > 3 else "") for r in rows if not r[2].startswith("Z")]


def _mentions(command: str, ports: list[int]) -> bool:
    return any(re.search(rf"127\.0\.0\.1:{port}\b", command) for port in ports)


def test_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LocalDeployment(flwr_home=tmp_path, num_supernodes=0)
    with pytest.raises(RuntimeError, match="with"):
        LocalDeployment(flwr_home=tmp_path, num_supernodes=2).run(app_dir(), run_config={})


def test_cli_has_a_deployment_flag() -> None:
    for verb in ("run", "compare"):
        assert build_parser().parse_args([verb, "--deployment"]).deployment is True
        assert build_parser().parse_args([verb]).deployment is False


@pytest.mark.slow
def test_local_encoder_survives_fresh_clientapp_processes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    deployment = LocalDeployment(flwr_home=tmp_path / "home", num_supernodes=2, workdir=tmp_path)
    with deployment:
        pids, ports = deployment.pids, deployment.ports
        assert len(pids) == 3 and len(set(ports)) == 3
        with pytest.raises(FederationError, match="no-such-key") as refused:  # and the nodes stay usable
            deployment.run(app_dir(), run_config={"no-such-key": 1}, timeout=120)
        assert "supernode 1 log" in str(refused.value)
        result = deployment.run(app_dir(), run_config={**CONFIG, "out-dir": str(out)}, timeout=600)
        assert result.status == "finished:completed"
        assert "--federation-config" not in result.log
        # Every process we own: the sessions of SuperLink and SuperNodes, and anything that
        # talks to one of our ports (the SuperLink's SuperExec leads a session of its own).
        sessions = set(pids) | {p for p, sid, cmd in _live_processes() if p == sid and _mentions(cmd, ports)}
        assert len(sessions) >= 4

    res = json.loads((out / "results.json").read_text())
    assert res["mode"] == "latent-fedavg" and res["encoder"] == "local" and res["num_clients"] == 2
    assert res["accuracy"] > 0.5, res
    assert set(res["accuracy_per_client"]) == {"0", "1"}
    view = load_server_view(out / "server_view")
    assert not view["manifest"]["rejected"]  # every train/evaluate found its encoder in state
    assert "encoder.npz" not in view  # the server never held a local encoder

    for log_file in deployment.node_logs:  # one fresh ClientApp process per message
        log = log_file.read_text()
        received = [line.split("Receiving: ")[1].split()[0] for line in log.splitlines() if "Receiving: " in line]
        # Every run binds nodes to partitions first (identify), then the local encoders are trained.
        assert received[:2] == ["query.identify", "query.local_encoder"] and received.count("train") == 1, received
        assert "evaluate" in received
        assert log.count("Start `flwr-clientapp` process") == len(received)

    assert deployment.pids == [] and deployment.ports == []
    leftovers = [(p, cmd) for p, sid, cmd in _live_processes() if sid in sessions or _mentions(cmd, ports)]
    assert leftovers == []


@pytest.mark.slow
def test_a_supernode_killed_mid_run_is_left_out_after_one_round_timeout(tmp_path: Path) -> None:
    """A dead SuperNode costs one round-timeout, is named in the log, and the run ends on the others."""
    # The timeout must exceed round 1's cold start: each SuperNode installs the app and starts a fresh
    # ClientApp process (Flower, torch, the data plan), ~15 s for three nodes on 2 cores; 15 s failed.
    out, timeout = tmp_path / "out", 45.0
    cfg = {"dataset": "digits", "mode": "raw", "num-clients": 3, "rounds": 3, "local-epochs": 1,
           "round-timeout": timeout, "out-dir": str(out)}  # fmt: skip
    deployment = LocalDeployment(flwr_home=tmp_path / "home", num_supernodes=3, workdir=tmp_path)
    killed_at: list[float] = []

    def echo(line: str) -> None:
        if "[ROUND 2/3]" in line and not killed_at:  # node 2 dies as round 2 begins
            node = deployment.pids[3]  # the SuperLink, then SuperNodes 0, 1, 2
            for pid in live_members(tree_sessions(node)):
                os.kill(pid, signal.SIGKILL)
            killed_at.append(time.monotonic())

    with deployment:
        result = deployment.run(app_dir(), run_config=cfg, timeout=600, echo=echo)
    assert killed_at and result.status == "finished:completed"
    after_kill = time.monotonic() - killed_at[0]
    res = json.loads((out / "results.json").read_text())
    assert len(res["history"]) == 3 and res["accuracy"] > 0.3, res["history"]
    rows = [json.loads(line) for line in (out / "server_view" / "metrics.jsonl").read_text().splitlines()]
    trained = {(r["round"], r["metrics"]["partition-id"]) for r in rows if r["phase"] == "classifier"}
    assert {(1, 0), (1, 1), (1, 2)} <= trained and (3, 2) not in trained
    assert {(rnd, p) for rnd in (2, 3) for p in (0, 1)} <= trained  # the others trained every round
    # The dead node is named once its round-timeout passes. One full-suite run (2026-12-07) lacked that
    # line, its log not kept; the likeliest cause is Flower answering for the node first with an error
    # reply, which is rejected and logged. Either way it is left out; on failure the log tail shows.
    silent = re.search(r"no reply from node\(s\) \[\d+\] within round-timeout=45s; left out", result.log)
    rejected = re.search(r"rejected classifier reply from node \d+ in round [23]: client error", result.log)
    assert silent or rejected, result.log[-4000:]
    # At most one round-timeout for the dead node, then rounds at the others' pace (each a fresh process).
    assert after_kill < timeout + 120, after_kill
    assert after_kill >= timeout or not silent, after_kill
