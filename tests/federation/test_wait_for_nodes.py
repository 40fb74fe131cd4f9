"""A federation smaller than num-clients: a simulation fails at once, a deployment says who came, then times out."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from fedlatent.federation.context import FederationTooSmall, wait_for_nodes
from fedlatent.launch.deployment import LocalDeployment
from fedlatent.launch.superlink import FederationError, LocalSuperLink
from fedlatent.runs import app_dir


class Grid:
    """The one call wait_for_nodes makes of Flower's grid."""

    def __init__(self, nodes: list[int]) -> None:
        self.nodes = nodes

    def get_node_ids(self) -> list[int]:
        return self.nodes


def test_a_simulation_with_fewer_supernodes_fails_once_their_count_settles() -> None:
    start = time.monotonic()
    with pytest.raises(FederationTooSmall) as err:
        wait_for_nodes(Grid([7, 8]), 3, timeout=600, simulation=True, settle=0.2)
    assert time.monotonic() - start < 5
    text = str(err.value)
    assert "num-clients=3 but the simulation has 2 SuperNodes" in text
    assert "num-supernodes=3" in text and "num-clients=0" in text
    assert wait_for_nodes(Grid([9, 7, 8]), 2, simulation=True) == [7, 8]
    assert wait_for_nodes(Grid([8, 7]), 0, simulation=True, settle=0.2) == [7, 8]
    # partition-owners: a connected node that owns no partition is neither counted nor asked
    assert wait_for_nodes(Grid([5, 9, 7, 8]), 2, simulation=True, only={8, 9}) == [8, 9]


def test_a_deployment_logs_who_connected_and_times_out_naming_them() -> None:
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append  # type: ignore[method-assign]  # fedlatent's logger may not propagate
    logger = logging.getLogger("fedlatent")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    try:
        with pytest.raises(TimeoutError, match=r"only 1 of num-clients=2 SuperNodes connected in 2 s .*\[42\]"):
            wait_for_nodes(Grid([42]), 2, timeout=2.0, every=0.5)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert sum("1 of 2 SuperNodes connected" in r.getMessage() for r in records) >= 2


@pytest.mark.slow
def test_flwr_run_with_more_clients_than_supernodes_fails_fast_and_says_why(tmp_path: Path) -> None:
    lines: list[str] = []
    with LocalSuperLink(flwr_home=tmp_path / "home") as link:
        start = time.monotonic()
        with pytest.raises(FederationError):
            link.run(app_dir(), run_config={"num-clients": 3, "rounds": 1}, num_supernodes=2, timeout=300,
                     echo=lines.append)  # fmt: skip
        seconds = time.monotonic() - start
    log = "\n".join(lines)
    assert "fedlatent: FAILED: FederationTooSmall: num-clients=3 but the simulation has 2 SuperNodes" in log, log
    assert "num-supernodes=3" in log and seconds < 60, seconds  # 30 s of it Flower's own start and stop


@pytest.mark.slow
def test_a_deployment_whose_second_supernode_never_comes_fails_after_node_wait_timeout(tmp_path: Path) -> None:
    lines: list[str] = []
    cfg = {"num-clients": 2, "rounds": 1, "node-wait-timeout": 12.0, "out-dir": str(tmp_path / "out")}
    with LocalDeployment(flwr_home=tmp_path / "home", num_supernodes=1, workdir=tmp_path) as deployment:
        with pytest.raises(FederationError):
            deployment.run(app_dir(), run_config=cfg, timeout=300, echo=lines.append)
    log = "\n".join(lines)
    assert "1 of 2 SuperNodes connected" in log, log
    assert "FAILED: TimeoutError: only 1 of num-clients=2 SuperNodes connected in 12 s" in log
    assert not (tmp_path / "out" / "results.json").exists()
