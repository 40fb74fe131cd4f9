"""Run a Flower app as a real simulation, through ``flwr run``, on a private SuperLink.

fedlatent's CLI and integration tests run the Flower app as a user would, with ``flwr run``
(Flower 1.42; the deprecated ``run_simulation`` is not used). This module makes that robust:

* ``flwr run`` on the ``:local:`` address starts a *detached* SuperLink on fixed ports that
  outlives the command. :class:`LocalSuperLink` starts its own ``flower-superlink
  --simulation`` on a free loopback port instead, as a child it owns, and on exit ends it with
  everything it spawned (SuperExec, ``flwr-simulation``, Ray).
* Flower would build a per-run environment with ``uv sync`` (slow, needs the network); that
  is disabled, so the apps run in this interpreter with its packages.
* ``flwr run --stream`` exits 0 even when the ServerApp raises, so the outcome is read with
  ``flwr list --format json``; anything but ``finished:completed`` raises FederationError.
* With ``tls`` (``security.make_tls``) every API is served over TLS, and with
  ``supernode_auth`` only registered SuperNode keys may connect (the deployment path).

ServerApp and ClientApps run in the SuperLink's working directory (the caller's unless
``workdir`` is given) and import the app from the FAB copy that Flower installs under
``$FLWR_HOME/apps``, which precedes site-packages on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fedlatent.launch.guard import start_guard
from fedlatent.launch.processes import (
    HOST,
    TAIL_LINES,
    ConfigValue,
    FederationError,
    FederationResult,
    find_tool,
    flower_env,
    format_run_config,
    free_ports,
    log_tail,
    simulation_config,
    stop_sessions,
    stream_command,
    tree_sessions,
)
from fedlatent.launch.security import TLSFiles, connection_trust, health_opener, superlink_flags

CONNECTION = "fedlatent"  # the connection written to $FLWR_HOME/config.toml
COMPLETED = "finished:completed"
_RUN_ID = re.compile(r"Successfully started run (\d+)")


class LocalSuperLink:
    """A private ``flower-superlink --simulation`` on a free loopback port (a context manager).

    Parameters
    ----------
    flwr_home : Path
        Directory of ``config.toml`` (rewritten on entry), the database ``state.db``, the
        log ``superlink.log`` and the installed apps; best dedicated to this use.
    startup_timeout : float
        Seconds to wait for the SuperLink's health check to pass.
    workdir : Path | None
        Working directory of the SuperLink, hence of ServerApp and ClientApps (default: the
        caller's), against which the apps resolve relative paths.
    simulation : bool
        Start the SuperLink with ``--simulation`` (default). Without it the SuperLink serves
        real SuperNodes, as :class:`fedlatent.launch.deployment.LocalDeployment` uses it.
    tls : TLSFiles | None
        Serve every API over TLS with these files (``security.make_tls``); the ``flwr`` CLI
        then trusts their CA. None: ``--insecure`` (loopback only).
    supernode_auth : bool
        ``--enable-supernode-auth``: only SuperNodes whose public key was registered
        (``LocalDeployment.register``) may connect. Flower requires TLS for it.
    """

    def __init__(
        self,
        *,
        flwr_home: Path,
        startup_timeout: float = 60.0,
        workdir: Path | None = None,
        simulation: bool = True,
        tls: TLSFiles | None = None,
        supernode_auth: bool = False,
    ) -> None:
        if supernode_auth and tls is None:
            raise ValueError("SuperNode authentication needs TLS")
        self.flwr_home = Path(flwr_home).resolve()
        self.simulation = simulation
        self.tls, self.supernode_auth = tls, supernode_auth
        self.startup_timeout = startup_timeout
        self.workdir = Path(workdir or Path.cwd()).resolve()
        self.log_file = self.flwr_home / "superlink.log"
        self.env = flower_env(self.flwr_home)
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._guard: subprocess.Popen[bytes] | None = None
        # Sessions we own: the SuperLink's and SuperExec's (Flower detaches them with setsid, a process
        # group would miss them), recorded while the tree is intact: orphans lose their parent links.
        self._sessions: set[int] = set()

    @property
    def address(self) -> str:
        """``host:port`` of the SuperLink's HTTP API."""
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running SuperLink (it leads its own session), else None."""
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        """Start the SuperLink and wait for its health check (``FederationError`` if it fails)."""
        if self._proc is not None:
            raise RuntimeError("LocalSuperLink is already running")
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        self.port = free_ports()[0]
        trust = connection_trust(self.tls)
        (self.flwr_home / "config.toml").write_text(
            f'# Written by fedlatent.launch.superlink.\n[superlink]\ndefault = "{CONNECTION}"\n\n'
            f'[superlink.{CONNECTION}]\naddress = "{self.address}"\n{trust}\n'
        )
        command = [
            find_tool("flower-superlink", self.env), *superlink_flags(self.tls, supernode_auth=self.supernode_auth),
            *(["--simulation"] if self.simulation else []),
            "--isolation", "subprocess",  # as flwr's own local SuperLink
            "--host", HOST, "--port", str(self.port), "--database", str(self.flwr_home / "state.db"),
            "--disable-runtime-dependency-installation",
        ]  # fmt: skip
        with self.log_file.open("wb") as log:
            self._proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, cwd=self.workdir, start_new_session=True,
            )  # fmt: skip
        self._sessions = {self._proc.pid}
        self._guard = start_guard([self._proc.pid])  # ends them all should this process die, even by SIGKILL
        try:
            self._wait_healthy()
            self._sessions |= tree_sessions(self._proc.pid)  # SuperExec is up by now
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> LocalSuperLink:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _wait_healthy(self) -> None:
        assert self._proc is not None
        scheme, opener = health_opener(self.tls)
        deadline = time.monotonic() + self.startup_timeout
        while (code := self._proc.poll()) is None:
            with contextlib.suppress(OSError), opener.open(f"{scheme}://{self.address}/health", timeout=1.0) as reply:
                if reply.status == 200:
                    return
            if time.monotonic() > deadline:
                raise self.error(f"flower-superlink not healthy after {self.startup_timeout:.0f} s")
            time.sleep(0.2)
        raise self.error(f"flower-superlink exited with code {code} during startup")

    def stop(self) -> None:
        """End the SuperLink and every process of the sessions it created: TERM, then KILL."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        self._sessions |= tree_sessions(proc.pid)
        stop_sessions(self._sessions)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5.0)  # reap our child
        if self._guard is not None:  # our watchdog: nothing left to guard
            self._guard.kill()
            self._guard.wait()

    def error(self, headline: str, output: str = "") -> FederationError:
        """A FederationError quoting the tails of ``output`` and of the SuperLink's log."""
        log = ""
        with contextlib.suppress(OSError), self.log_file.open("rb") as file:
            file.seek(max(0, file.seek(0, os.SEEK_END) - 256_000))  # only the end is quoted
            log = file.read().decode(errors="replace")
        parts = [headline] + ([f"--- flwr output (last {TAIL_LINES} lines) ---", log_tail(output)] if output else [])
        parts += [f"--- superlink log (last {TAIL_LINES} lines) ---", log_tail(log, skip="uvicorn.access")]
        return FederationError("\n".join(parts))

    def flwr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run the ``flwr`` CLI with ``args`` in this SuperLink's environment and capture its output."""
        command = [find_tool("flwr", self.env), *args]
        return subprocess.run(command, capture_output=True, text=True, env=self.env, timeout=timeout)

    def status(self, run_id: int) -> tuple[str, str]:
        """Return ``(status, details)`` of a run, e.g. ``("finished:failed", "Simulation failed ...")``."""
        done = self.flwr("list", CONNECTION, "--run-id", str(run_id), "--format", "json")
        try:
            run: dict[str, Any] = json.loads(done.stdout[done.stdout.index("{") :])["runs"][0]
            return str(run["status"]), str(run.get("status-details", ""))
        except (ValueError, LookupError, TypeError) as err:
            raise self.error(f"cannot read the status of run {run_id}: {err}", done.stdout + done.stderr) from None

    def run(
        self,
        app_dir: Path,
        *,
        run_config: Mapping[str, ConfigValue],
        num_supernodes: int,
        cpus_per_client: float = 1.0,
        cpus: int | None = None,
        timeout: float = 3600.0,
        echo: Callable[[str], None] | None = None,
    ) -> FederationResult:
        """Run the Flower app in ``app_dir`` as a simulation on this SuperLink and wait for it.

        Parameters
        ----------
        app_dir : Path
            Directory of the app's ``pyproject.toml``.
        run_config : Mapping[str, str | int | float | bool]
            Overrides of ``[tool.flwr.app.config]``; Flower refuses unknown keys.
        num_supernodes : int
            Number of simulated SuperNodes (clients).
        cpus_per_client, cpus : float, int | None
            Ray's CPUs per ClientApp and in all (``processes.simulation_config``).
        timeout : float
            Seconds after which the run is stopped (``flwr stop``) and the call fails.
        echo : Callable[[str], None] | None
            Called with each output line as it arrives (progress for users).

        Returns the run id, final status, captured output and wall time (``FederationResult``);
        raises ``FederationError`` if the run is refused, does not complete, or times out.
        """
        if self._proc is None:
            raise RuntimeError("LocalSuperLink.run() must be called inside its `with` block")
        federation = simulation_config(num_supernodes, cpus_per_client=cpus_per_client, cpus=cpus)
        return self.stream_run(
            app_dir, run_config=run_config, extra_args=["--federation-config", federation], timeout=timeout, echo=echo
        )

    def stream_run(
        self,
        app_dir: Path,
        *,
        run_config: Mapping[str, ConfigValue],
        extra_args: Sequence[str] = (),
        timeout: float = 3600.0,
        echo: Callable[[str], None] | None = None,
    ) -> FederationResult:
        """``flwr run app_dir --stream [extra_args]`` on this SuperLink, then check the final status.

        :meth:`run` for a simulation; as is (no ``--federation-config``) for a deployment whose
        SuperNodes are connected. Parameters, result and errors as :meth:`run`.
        """
        if self._proc is None:
            raise RuntimeError("LocalSuperLink.stream_run() must be called inside its `with` block")
        command = [find_tool("flwr", self.env), "run", str(Path(app_dir).resolve()), CONNECTION, "--stream"]
        command += list(extra_args)
        if overrides := format_run_config(run_config):
            command += ["--run-config", overrides]
        start = time.monotonic()
        deadline = start + timeout
        run_ids: list[int] = []

        def seen(line: str) -> None:
            if not run_ids and (match := _RUN_ID.search(line)):
                run_ids.append(int(match.group(1)))
            if echo is not None:
                echo(line)

        lines, code = stream_command(command, env=self.env, deadline=deadline, echo=seen)
        run_id = run_ids[0] if run_ids else None
        if code is None:
            raise self._timeout(run_id, timeout, "\n".join(lines))
        log = "\n".join(lines)
        if run_id is None:
            raise self.error(f"flwr run exited with code {code} without starting a run", log)
        while not (status := self.status(run_id))[0].startswith("finished"):  # in case it lags
            if time.monotonic() > deadline:
                raise self._timeout(run_id, timeout, log)
            time.sleep(5.0)
        if status[0] != COMPLETED:
            raise self.error(f"run {run_id} ended with status {status[0]} ({status[1]})", log)
        return FederationResult(run_id=run_id, status=status[0], log=log, seconds=time.monotonic() - start)

    def _timeout(self, run_id: int | None, timeout: float, log: str) -> FederationError:
        if run_id is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.flwr("stop", str(run_id), CONNECTION, timeout=60.0)
        return self.error(f"run {run_id} timed out after {timeout:.0f} s and was stopped", log)
