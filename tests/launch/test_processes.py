"""Process plumbing: what "every process fedlatent started" may and may not include."""

from __future__ import annotations

import os

import pytest

from fedlatent.launch import processes


def test_sessions_of_a_tree_never_include_init_an_exiting_process_or_the_callers(monkeypatch) -> None:
    me = os.getsid(0)
    table = [
        (1, 0, 0, "Ss"),  # init: session 0 here
        (500, 1, 500, "Ss"),  # the root fedlatent started, leading its own session
        (501, 500, 501, "Ss"),  # a child that called setsid
        (502, 500, 0, "R"),  # a child in the middle of exiting: ps reports session 0
        (503, 500, me, "S"),  # a child still in the caller's session (e.g. flwr run)
        (600, 1, 600, "S"),  # unrelated
    ]
    monkeypatch.setattr(processes, "_process_table", lambda: table)
    assert processes.tree_sessions(500) == {500, 501}
    assert processes.live_members({0, 1, me, 500}) == [500]


@pytest.mark.parametrize("pid", [0, 1])
def test_init_is_never_a_member(monkeypatch, pid: int) -> None:
    monkeypatch.setattr(processes, "_process_table", lambda: [(pid, 0, 77, "S"), (78, 1, 77, "S")])
    assert processes.live_members({77}) == [78]


def test_the_simulation_config_caps_the_simulations_own_ray_only_when_asked() -> None:
    from fedlatent.launch.processes import simulation_config

    assert simulation_config(3) == "num-supernodes=3 client-resources-num-cpus=1"
    assert simulation_config(3, cpus_per_client=2, cpus=4) == (
        "num-supernodes=3 client-resources-num-cpus=2 init-args-num-cpus=4"
    )
    with pytest.raises(ValueError, match="positive whole numbers"):
        simulation_config(2, cpus_per_client=1.5)
