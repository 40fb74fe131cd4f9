"""Process plumbing shared by the simulation launcher and the local deployment.

What: the environment every Flower process gets (isolated ``FLWR_HOME``, offline, loopback,
our interpreter's tools), ``--run-config`` formatting, log tails for error messages, free
ports, and ending whole process sessions (Flower detaches its helpers with ``setsid``, so a
process group would miss them). Nothing here starts Flower; ``launcher.py`` and
``deployment.py`` do.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sysconfig
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ConfigValue = str | int | float | bool

HOST = "127.0.0.1"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # Flower colours its log lines even when piped
_KEY = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")  # TOML bare key, dotted allowed
TAIL_LINES = 40  # lines of each log quoted in a FederationError


class FederationError(RuntimeError):
    """A federation could not start, did not complete, or timed out (message has log tails)."""


@dataclass(frozen=True)
class FederationResult:
    """A run that finished with status ``finished:completed``."""

    run_id: int
    status: str
    log: str  # captured ``flwr run --stream`` output, without ANSI colours
    seconds: float


def simulation_config(num_supernodes: int, *, cpus_per_client: float = 1.0, cpus: int | None = None) -> str:
    """The ``--federation-config`` argument of a simulation's ``flwr run``.

    ``cpus_per_client``: CPUs Ray reserves per ClientApp (Flower 1.42 takes whole numbers only);
    ``cpus``: CPUs of the simulation's own Ray instance (``init-args-num-cpus``; None: every core).
    """
    if num_supernodes < 1 or cpus_per_client < 1 or cpus_per_client != int(cpus_per_client):
        raise ValueError("num_supernodes and cpus_per_client must be positive whole numbers")
    federation = f"num-supernodes={num_supernodes} client-resources-num-cpus={int(cpus_per_client)}"
    return federation + (f" init-args-num-cpus={int(cpus)}" if cpus else "")


def format_run_config(values: Mapping[str, ConfigValue]) -> str:
    """Format run-config overrides as the ``--run-config`` argument of ``flwr run``.

    Parameters
    ----------
    values : Mapping[str, str | int | float | bool]
        Overrides; keys are TOML bare keys (dots allowed for nested tables).

    Returns
    -------
    str
        Space-separated ``key=value`` pairs with TOML values: strings quoted and escaped,
        booleans lowercase, floats by ``repr`` (``inf``, ``-inf``, ``nan`` as TOML has them).

    Raises
    ------
    ValueError
        For a key that is not a bare key, or an integer beyond 64 bits.
    TypeError
        For a value of any other type.
    """
    pairs = []
    for key, value in values.items():
        if not _KEY.fullmatch(key):
            raise ValueError(f"run-config key {key!r} is not a TOML bare key")
        pairs.append(f"{key}={_toml_value(value)}")
    return " ".join(pairs)


def _toml_value(value: ConfigValue) -> str:
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise ValueError(f"integer {value} does not fit in 64 bits")
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return repr(value)  # shortest exact form, always a valid TOML float
    if isinstance(value, str):
        # Flower splits the overrides with a regex that ends a quoted value at the next '"',
        # escaped or not, so '"' is written as \u0022, like the control characters.
        escapes = {c: f"\\u{c:04x}" for c in (*range(0x20), 0x22, 0x7F)} | {0x5C: "\\\\"}
        return f'"{value.translate(escapes)}"'
    raise TypeError(f"run-config value {value!r} is not a str, int, float or bool")


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Environment of every Flower process: isolated, offline, loopback only."""
    env = dict(os.environ)
    # Flower starts its helpers (flower-superexec, flwr-simulation) from PATH: use ours.
    env["PATH"] = os.pathsep.join([sysconfig.get_path("scripts"), env.get("PATH", "")])
    env["FLWR_HOME"] = str(flwr_home)
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"  # no `uv sync` per run
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"  # no network
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    env["RAY_ADDRESS"] = "local"  # a private Ray, never a cluster left by `ray start`
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray then uses 127.0.0.1 as node IP
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY") or env.get("no_proxy"), HOST]))
    env["NO_PROXY"] = env["no_proxy"] = no_proxy  # the CLI's HTTP client must not use a proxy
    return env


def find_tool(name: str, env: Mapping[str, str]) -> str:
    """Path of the Flower executable ``name`` on the ``PATH`` of ``env``."""
    if (path := shutil.which(name, path=env["PATH"])) is None:
        raise FederationError(f"`{name}` not found; is flwr[simulation] installed?")
    return path


def log_tail(text: str, skip: str = "\0") -> str:
    """The last lines of a log without ANSI colours, leaving out lines that contain ``skip``."""
    return "\n".join([line for line in ANSI.sub("", text).splitlines() if skip not in line][-TAIL_LINES:])


def _process_table() -> list[tuple[int, int, int, str]]:
    """Return ``(pid, parent pid, session id, state)`` of every process, from ``ps``."""
    columns = ["-o", "pid=", "-o", "ppid=", "-o", "sess=", "-o", "stat="]
    out = subprocess.run(["ps", "-A", *columns], capture_output=True, text=True, check=True).stdout
    return [(int(f[0]), int(f[1]), int(f[2]), f[3]) for f in map(str.split, out.splitlines()) if len(f) >= 4]


def tree_sessions(root: int) -> set[int]:
    """Sessions of ``root`` and its descendants (a child that called setsid leads its own).

    Never session 0, 1 or the caller's own: ``ps`` reports session 0 for a process in the middle
    of exiting, and session 0 also holds init and kernel threads; stopping "every process of
    session 0" once ended this machine's init process. The caller's session is its terminal's.
    """
    table = _process_table()
    tree, grown = {root}, True
    while grown:  # add children of the tree until none is new
        size = len(tree)
        tree |= {pid for pid, ppid, _, _ in table if ppid in tree}
        grown = len(tree) > size
    return ({root} | {sid for pid, _, sid, _ in table if pid in tree}) - _protected_sessions()


def free_ports(count: int = 1) -> list[int]:
    """``count`` distinct loopback ports that are free now (all held open while picked)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:  # let the OS pick each port
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in socks]


def sessions_rss(sessions: set[int]) -> int:
    """Resident memory in bytes of every live process of ``sessions`` together (from ``ps``)."""
    out = subprocess.run(["ps", "-A", "-o", "sess=", "-o", "rss=", "-o", "stat="], capture_output=True, text=True)
    total = 0
    for fields in map(str.split, out.stdout.splitlines()):
        if len(fields) >= 3 and int(fields[0]) in sessions and not fields[2].startswith("Z"):
            total += int(fields[1]) * 1024
    return total


def _protected_sessions() -> set[int]:
    return {0, 1, os.getsid(0)}


def live_members(sessions: set[int]) -> list[int]:
    """Processes of ``sessions`` that are not zombies (those only await reaping), never init or the caller."""
    sessions = sessions - _protected_sessions()
    return [pid for pid, _, sid, state in _process_table()
            if sid in sessions and pid > 1 and pid != os.getpid() and not state.startswith("Z")]  # fmt: skip


def stop_sessions(sessions: set[int]) -> None:
    """End every live process of ``sessions``: TERM, up to 10 s, then KILL, up to 5 s."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        members = live_members(sessions)
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while members and (members := live_members(sessions)) and time.monotonic() < deadline:
            time.sleep(0.1)


def stream_command(
    command: list[str], *, env: Mapping[str, str], deadline: float, echo: Callable[[str], None]
) -> tuple[list[str], int | None]:
    """Run ``command``, handing each output line (ANSI colours removed) to ``echo`` as it arrives.

    Returns the lines and the exit code; the code is None when ``deadline`` (a
    ``time.monotonic()`` value) passed first, and the process is then killed. A reader thread
    lets the deadline pass while the stream is silent.
    """
    lines: list[str] = []
    proc = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=dict(env), text=True, errors="replace",
    )  # fmt: skip
    try:
        pending: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_pump, args=(proc.stdout, pending), daemon=True).start()
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = pending.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:  # end of stream: the command is done
                return lines, proc.wait()
            lines.append(line := ANSI.sub("", line.rstrip("\r\n")))
            echo(line)
        return lines, None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _pump(stream: IO[str], sink: queue.Queue[str | None]) -> None:
    for line in stream:
        sink.put(line)
    sink.put(None)
