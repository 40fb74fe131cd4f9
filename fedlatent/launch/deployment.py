"""Run a Flower app as a local *deployment*: one SuperLink and N SuperNodes on localhost.

:class:`LocalDeployment` starts what a user starts in separate terminals (Flower 1.42):

* ``flower-superlink --insecure`` (no ``--simulation``) with a database in ``flwr_home``. In
  1.42 its Fleet, Control and ServerAppIo APIs all share one HTTP address, ``--host``/``--port``,
  which is a free loopback port here (the deprecated ``--fleet-api-address`` and
  ``--control-api-address`` are only bound when Flower's internal gRPC switches are set, and
  those are removed from the environment).
* ``flower-supernode --insecure --superlink 127.0.0.1:<port> --node-config "partition-id=i
  num-partitions=N"``, each with its ClientAppIo HTTP API (``--host``/``--port``) on a free
  loopback port and its own ``FLWR_HOME`` (``flwr_home/supernode-i``, where its ClientApps
  install the FAB), so concurrent installs of one FAB never race. Each SuperNode's processes
  get ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` = usable CPUs // N unless already set: torch
  otherwise starts one thread per core in every ClientApp, and N concurrent ClientApps then
  oversubscribe the CPUs many times over (the simulation avoids it as Ray gives each one CPU).

Unlike the simulation, every message a SuperNode receives runs in a fresh ``flwr-clientapp``
process; only ``context.state`` carries over. Runs go through ``flwr run --stream`` without
``--federation-config``; the final status is checked as :class:`LocalSuperLink` does, and the
SuperNodes' log tails are added to any FederationError. On exit every process started, with
its children (SuperExecs, ServerApp and ClientApp processes), is ended; should the process that
started them die without an exit (SIGKILL), a guard (``launch.guard``) ends them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fedlatent.launch.guard import start_guard
from fedlatent.launch.processes import (
    HOST,
    ConfigValue,
    FederationError,
    FederationResult,
    find_tool,
    flower_env,
    free_ports,
    log_tail,
    stop_sessions,
    tree_sessions,
)
from fedlatent.launch.security import NodeKey, TLSFiles, make_node_keys, make_tls, supernode_flags
from fedlatent.launch.superlink import CONNECTION, LocalSuperLink

# With these set, the SuperLink would also bind legacy gRPC APIs on fixed, public addresses.
_GRPC_SWITCHES = ("FLWR_INTERNAL_GRPC_FLEET_API", "FLWR_INTERNAL_GRPC_CONTROL_API")
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # torch's intra-op threads


@dataclass
class _SuperNode:
    partition_id: int
    port: int
    home: Path
    proc: subprocess.Popen[bytes]
    sessions: set[int] = field(default_factory=set)


class LocalDeployment:
    """A private SuperLink with ``num_supernodes`` SuperNodes on loopback (a context manager).

    Parameters
    ----------
    flwr_home : Path
        Directory of ``config.toml`` (rewritten on entry), the SuperLink's ``state.db`` and
        ``superlink.log``, and of ``supernode-<i>/`` (each SuperNode's ``FLWR_HOME`` and log).
    num_supernodes : int
        Number of SuperNodes; node ``i`` gets ``partition-id=i num-partitions=num_supernodes``.
    workdir : Path | None
        Working directory of every process, hence of ServerApp and ClientApps (default: the
        caller's).
    startup_timeout : float
        Seconds to wait for the SuperLink's health check, then again for every SuperNode to
        be registered and online.
    tls : bool
        Serve the SuperLink over TLS with a CA and certificate made for this deployment
        (``flwr_home/tls``, ``security.make_tls``); SuperNodes and the CLI trust that CA.
    auth : bool
        SuperNode authentication (needs ``tls``): a key pair per SuperNode (``flwr_home/keys``),
        each public key registered with the SuperLink before its SuperNode starts; a SuperNode
        with any other key is refused. The node id each key is registered under is its
        partition's owner: every run gets ``partition-owners``, so no node can claim another's
        partition (``owners``).
    """

    def __init__(
        self,
        *,
        flwr_home: Path,
        num_supernodes: int,
        workdir: Path | None = None,
        startup_timeout: float = 60.0,
        tls: bool = False,
        auth: bool = False,
    ) -> None:
        if num_supernodes < 1:
            raise ValueError("num_supernodes must be at least 1")
        if auth and not tls:
            raise ValueError("SuperNode authentication needs TLS (Flower refuses it on insecure connections)")
        self.flwr_home = Path(flwr_home).resolve()
        self.num_supernodes = num_supernodes
        self.workdir = Path(workdir or Path.cwd()).resolve()
        self.startup_timeout = startup_timeout
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.threads_per_node = max(1, cpus // num_supernodes)
        self.tls: TLSFiles | None = make_tls(self.flwr_home / "tls") if tls else None
        self.keys: list[NodeKey] = make_node_keys(self.flwr_home / "keys", num_supernodes) if auth else []
        self.link = LocalSuperLink(
            flwr_home=self.flwr_home, startup_timeout=startup_timeout, workdir=self.workdir, simulation=False,
            tls=self.tls, supernode_auth=auth,
        )  # fmt: skip
        for name in _GRPC_SWITCHES:
            self.link.env.pop(name, None)
        self._nodes: list[_SuperNode] = []
        self.owners: dict[int, int] = {}  # partition -> node id of its registered key (auth)
        self._guard: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``host:port`` of the SuperLink (Fleet, Control and ServerAppIo APIs)."""
        return self.link.address

    @property
    def pids(self) -> list[int]:
        """Process ids of the SuperLink and the SuperNodes while running (each leads a session)."""
        return ([] if self.link.pid is None else [self.link.pid]) + [node.proc.pid for node in self._nodes]

    @property
    def ports(self) -> list[int]:
        """Loopback ports in use: the SuperLink's, then each SuperNode's ClientAppIo API."""
        return ([self.link.port] if self.link.pid is not None else []) + [node.port for node in self._nodes]

    @property
    def node_logs(self) -> list[Path]:
        """Log file of each SuperNode, by partition id."""
        return [self.flwr_home / f"supernode-{i}" / "supernode.log" for i in range(self.num_supernodes)]

    def __enter__(self) -> LocalDeployment:
        if self._nodes or self.link.pid is not None:
            raise RuntimeError("LocalDeployment is already running")
        self.link.start()
        try:
            # only these SuperNodes may connect, and node i's key is partition i's
            self.owners = {i: self.register(key.public) for i, key in enumerate(self.keys)}
            for i, port in enumerate(free_ports(self.num_supernodes)):
                self._nodes.append(self._start_supernode(i, port))
            self._wait_online()
            for node in self._nodes:  # their SuperExecs are up by now
                node.sessions |= tree_sessions(node.proc.pid)
            self._guard = start_guard([node.proc.pid for node in self._nodes])  # they die with us, even by SIGKILL
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop()

    def register(self, public_key: Path) -> int:
        """Allow the SuperNode of ``public_key`` to connect (``flwr supernode register``); return its node id."""
        done = self.link.flwr("supernode", "register", str(public_key), CONNECTION, timeout=60.0)
        if done.returncode != 0 or not (found := re.search(r"SuperNode (\d+) registered successfully", done.stdout)):
            raise self._error(f"cannot register the SuperNode key {public_key}", done.stdout + done.stderr)
        return int(found.group(1))  # the id its messages carry: the SuperLink ties it to the key

    def _start_supernode(self, i: int, port: int) -> _SuperNode:
        home = self.flwr_home / f"supernode-{i}"
        home.mkdir(parents=True, exist_ok=True)
        env = flower_env(home)
        for name in _GRPC_SWITCHES:
            env.pop(name, None)
        for name in _THREAD_VARS:  # N nodes share this host: cap each one's threads, as Ray does
            env.setdefault(name, str(self.threads_per_node))
        command = [
            find_tool("flower-supernode", env), *supernode_flags(self.tls, self.keys[i] if self.keys else None),
            "--superlink", self.address,
            "--isolation", "subprocess", "--host", HOST, "--port", str(port),
            "--node-config", f"partition-id={i} num-partitions={self.num_supernodes}",
        ]  # fmt: skip
        with (home / "supernode.log").open("wb") as log:
            proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, cwd=self.workdir, start_new_session=True,
            )  # fmt: skip
        return _SuperNode(partition_id=i, port=port, home=home, proc=proc, sessions={proc.pid})

    def online_nodes(self) -> int:
        """Number of SuperNodes the SuperLink lists as online (``flwr supernode list``)."""
        done = self.link.flwr("supernode", "list", CONNECTION, "--format", "json", timeout=60.0)
        try:
            nodes = json.loads(done.stdout[done.stdout.index("{") :])["nodes"]
            return sum(node.get("status") == "online" for node in nodes)
        except (ValueError, LookupError, TypeError, AttributeError) as err:
            raise self._error(f"cannot list the SuperNodes: {err}", done.stdout + done.stderr) from None

    def _wait_online(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            for node in self._nodes:
                if (code := node.proc.poll()) is not None:
                    raise self._error(f"flower-supernode {node.partition_id} exited with code {code} during startup")
            if (online := self.online_nodes()) >= self.num_supernodes:
                return
            if time.monotonic() > deadline:
                raise self._error(
                    f"{online} of {self.num_supernodes} SuperNodes online after {self.startup_timeout:.0f} s"
                )
            time.sleep(0.5)

    def _stop(self) -> None:
        """End the SuperNodes (while the SuperLink still answers), then the SuperLink."""
        nodes, self._nodes = self._nodes, []
        guard, self._guard = self._guard, None
        try:
            sessions: set[int] = set()
            for node in nodes:
                with contextlib.suppress(subprocess.CalledProcessError, OSError):
                    node.sessions |= tree_sessions(node.proc.pid)
                sessions |= node.sessions
            stop_sessions(sessions)
            for node in nodes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.proc.wait(timeout=5.0)  # reap our children
        finally:
            if guard is not None:  # our watchdog: nothing left to guard
                guard.kill()
                guard.wait()
            self.link.stop()

    def _error(self, headline: str, output: str = "") -> FederationError:
        return FederationError(f"{self.link.error(headline, output)}\n{self._node_tails()}")

    def _node_tails(self) -> str:
        parts = []
        for i, path in enumerate(self.node_logs):
            text = ""
            with contextlib.suppress(OSError):
                text = path.read_bytes()[-256_000:].decode(errors="replace")
            parts += [f"--- supernode {i} log (last lines) ---", log_tail(text)]
        return "\n".join(parts)

    def run(
        self,
        app_dir: Path,
        *,
        run_config: Mapping[str, ConfigValue],
        num_supernodes: int | None = None,
        timeout: float = 3600.0,
        echo: Callable[[str], None] | None = None,
    ) -> FederationResult:
        """Run the Flower app in ``app_dir`` on this deployment and wait for it.

        Same signature as ``LocalSuperLink.run``; ``num_supernodes``, when given, must equal
        the deployment's SuperNode count (a deployment's nodes are fixed when it starts).

        Parameters
        ----------
        app_dir : Path
            Directory of the app's ``pyproject.toml``.
        run_config : Mapping[str, str | int | float | bool]
            Overrides of ``[tool.flwr.app.config]``; Flower refuses unknown keys.
        timeout : float
            Seconds after which the run is stopped (``flwr stop``) and the call fails.
        echo : Callable[[str], None] | None
            Called with each output line as it arrives.

        Returns
        -------
        FederationResult
            Run id, final status ``finished:completed``, captured output and wall time.

        Raises
        ------
        FederationError
            If the run is refused, does not complete, or times out (with SuperNode log tails).
        """
        if not self._nodes:
            raise RuntimeError("LocalDeployment.run() must be called inside its `with` block")
        if num_supernodes is not None and num_supernodes != len(self._nodes):
            raise ValueError(f"this deployment has {len(self._nodes)} SuperNodes, not {num_supernodes}")
        if self.owners and not run_config.get("partition-owners"):  # each node's key vouches for its partition
            run_config = {**run_config, "partition-owners": " ".join(f"{n}:{p}" for p, n in self.owners.items())}
        try:
            return self.link.stream_run(app_dir, run_config=run_config, timeout=timeout, echo=echo)
        except FederationError as err:
            raise FederationError(f"{err}\n{self._node_tails()}") from None
