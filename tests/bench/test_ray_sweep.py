"""``fedlatent sweep --ray``: points as tasks on a two-node Ray cluster started on this machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedlatent.bench.ray_cluster import LocalRayCluster
from fedlatent.bench.ray_sweep import _sees, check_reachable, task_of
from fedlatent.config import ConfigError
from fedlatent.launch.processes import free_ports

SWEEP = """
[sweep]
attacks = "quick"
families = ["membership"]

[base]
dataset = "digits"
num-clients = 2
rounds = 12
local-epochs = 1
mode = "raw"

[grid]
seed = [0]
"""


def test_a_node_sees_the_sweep_directory_only_with_the_right_token(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    probe.write_text("abc")
    assert _sees(str(probe), "abc")[1] and not _sees(str(probe), "abd")[1]
    assert not _sees(str(tmp_path / "absent"), "abc")[1]
    assert task_of(tmp_path, "p") is None


def test_an_address_where_no_cluster_answers_is_refused_at_once() -> None:
    with pytest.raises(ConfigError, match="no Ray cluster answers at 127.0.0.1:"):
        check_reachable(f"127.0.0.1:{free_ports()[0]}", timeout=2.0)
    check_reachable("auto")  # left to Ray


@pytest.fixture
def two_node_cluster() -> Iterator[str]:
    with LocalRayCluster(nodes=2, cpus_per_node=1) as cluster:
        yield cluster.address


def _sweep(spec: Path, out: Path, address: str, cpus: int = 1) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "fedlatent.cli", "sweep", str(spec), "--out", str(out), "--ray", address,
            "--ray-cpus", str(cpus)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


@pytest.mark.slow
def test_points_run_on_two_nodes_and_a_killed_point_resumes(tmp_path: Path, two_node_cluster: str) -> None:
    spec, out = tmp_path / "tiny.toml", tmp_path / "sweep"
    spec.write_text(SWEEP)
    proc = _sweep(spec, out, two_node_cluster)
    deadline, victim = time.monotonic() + 600, None
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        for state in out.glob("points/*/checkpoint/state.json"):
            point = state.parent.parent
            stage = json.loads(state.read_text())["stage"]
            if stage["classifier_round"] >= 2 and not (point / "results.json").exists() and task_of(out, point.name):
                victim = point.name
                os.kill(task_of(out, victim)["pid"], signal.SIGKILL)  # its Ray worker dies mid-run
                break
        time.sleep(0.2)
    log, _ = proc.communicate(timeout=600)
    assert victim is not None, log
    assert proc.returncode == 1 and "2 Ray node(s), 1 CPU(s) each" in log, log
    failed = json.loads((out / "failed.json").read_text())
    assert list(failed) == [victim], log
    finished = {p.parent.name for p in out.glob("points/*/point.json")}
    assert len(finished) == 1 and victim not in finished  # the public-only bar
    hosts = [task_of(out, name) for name in finished]
    assert all(h is not None and h["cpus"] == 1 for h in hosts)

    proc = _sweep(spec, out, two_node_cluster)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log
    assert "2 points, 1 already finished, 1 to run" in log
    assert f"{victim} was interrupted; resuming it from its checkpoint" in log
    results = json.loads((out / "points" / victim / "results.json").read_text())
    assert len([h for h in results["history"] if "accuracy" in h]) == 12 and results["rounds"] == 12
    assert json.loads((out / "failed.json").read_text()) == {}
    state = json.loads((out / "points" / victim / "checkpoint" / "state.json").read_text())
    assert len(state["resumes"]) == 1  # it went on from its checkpoint, not from round 1
    assert (out / "report.md").is_file() and len(list(out.glob("points/*/point.json"))) == 2

    proc = _sweep(spec, tmp_path / "greedy", two_node_cluster, cpus=2)  # more CPUs than any node has
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "no node of the cluster has that many CPUs (most: 1)" in log, log
