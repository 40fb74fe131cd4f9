"""Whatever fedlatent starts dies with it, even on SIGKILL (``launch.guard``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedlatent.launch.processes import tree_sessions

pytestmark = pytest.mark.slow

HOLDER = """
import sys, time
from pathlib import Path
from fedlatent.launch.superlink import LocalSuperLink
link = LocalSuperLink(flwr_home=Path(sys.argv[1]))
link.start()
print(link.pid, flush=True)
time.sleep(600)
"""
DEPLOYMENT_HOLDER = """
import sys, time
from pathlib import Path
from fedlatent.launch.deployment import LocalDeployment
deployment = LocalDeployment(flwr_home=Path(sys.argv[1]), num_supernodes=2).__enter__()
print(*deployment.pids, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return bool(state) and not state.startswith("Z")


def test_sigkill_of_the_process_that_started_a_superlink_ends_the_superlink_and_superexec(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "home")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    superlink = int(holder.stdout.readline())
    time.sleep(2.0)  # let the guard record the SuperExec's session
    started = {pid for pid in _members(tree_sessions(superlink))}
    assert superlink in started and len(started) >= 2, started  # the SuperLink and its SuperExec at least
    holder.send_signal(signal.SIGKILL)  # no finally, no atexit: only the guard can clean up
    holder.wait()
    deadline = time.monotonic() + 30
    while (left := [p for p in started if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"processes left behind after SIGKILL: {left}"


def test_sigkill_of_the_process_that_started_a_deployment_ends_its_supernodes_too(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", DEPLOYMENT_HOLDER, str(tmp_path / "home")], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    roots = [int(pid) for pid in holder.stdout.readline().split()]
    assert len(roots) == 3  # the SuperLink and two SuperNodes
    time.sleep(2.0)  # let the guards record the SuperExecs' sessions
    started = {pid for root in roots for pid in _members(tree_sessions(root))}
    assert set(roots) <= started and len(started) >= 5, started  # each with its SuperExec at least
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    deadline = time.monotonic() + 30
    while (left := [p for p in started if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"processes left behind after SIGKILL: {left}"


def _members(sessions: set[int]) -> list[int]:
    out = subprocess.run(["ps", "-A", "-o", "pid=", "-o", "sess="], capture_output=True, text=True).stdout
    return [int(f[0]) for f in map(str.split, out.splitlines()) if len(f) == 2 and int(f[1]) in sessions]
