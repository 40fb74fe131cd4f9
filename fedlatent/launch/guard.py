"""A watchdog that ends the processes fedlatent started when fedlatent itself dies, even by SIGKILL.

Why a process: the SuperLink (and the SuperExec, flwr-simulation and Ray under it) run in
sessions of their own (``start_new_session``; Flower calls ``setsid`` too), so neither a process
group nor a parent-death signal of one child reaches all of them, and a SIGKILL leaves no
``finally`` to run. The guard is started beside them, in its own session; once a second it
records the sessions under its roots (while the tree is intact) and checks its parent: when the
parent is gone (the guard is re-parented), it stops every recorded session (TERM, then KILL) and
exits; it also exits when every root has ended normally.

    python -m fedlatent.launch.guard ROOT_PID [ROOT_PID ...]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from fedlatent.launch.processes import stop_sessions, tree_sessions


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def watch(roots: list[int], *, parent: int, every: float = 1.0) -> None:
    """Until ``parent`` dies (then stop everything under ``roots``) or every root has ended."""
    sessions: set[int] = set(roots)
    while any(_alive(r) for r in roots):
        for root in roots:
            if _alive(root):
                sessions |= tree_sessions(root)
        if os.getppid() != parent:  # re-parented: whoever started us is gone
            stop_sessions(sessions)
            return
        time.sleep(every)


def start_guard(roots: list[int]) -> subprocess.Popen[bytes]:
    """Start a guard of ``roots`` for the calling process (stop it with ``terminate()`` when done)."""
    return subprocess.Popen(
        [sys.executable, "-m", "fedlatent.launch.guard", *map(str, roots)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


if __name__ == "__main__":
    watch([int(a) for a in sys.argv[1:]], parent=os.getppid())
