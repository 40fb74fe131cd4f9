"""A Ray cluster of several nodes on this machine, for the Ray sweep's test and benchmark.

What: ``LocalRayCluster(nodes=2, cpus_per_node=1)`` runs ``ray start --head`` and then
``ray start --address`` for each further node, as a user would start a real cluster, and
yields the address to give ``fedlatent sweep --ray``. On exit it ends exactly its own
processes: those under its private temp dir, and the ones started with its address.

Why not ``ray stop``: it ends every Ray on the machine, including the private Ray instance of
any Flower simulation running beside (another sweep, another test).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from types import TracebackType

import psutil

from fedlatent.launch.processes import free_ports


class LocalRayCluster:
    """``nodes`` Ray nodes with ``cpus_per_node`` CPUs each on this machine (a context manager)."""

    def __init__(self, *, nodes: int = 2, cpus_per_node: int = 1) -> None:
        if nodes < 1 or cpus_per_node < 1:
            raise ValueError("a cluster needs at least one node with at least one CPU")
        self.nodes, self.cpus_per_node = nodes, cpus_per_node
        self.temp, self.port = "", 0

    @property
    def address(self) -> str:
        """``host:port`` of the head's GCS, for ``ray.init(address=...)`` and ``--ray``."""
        return f"127.0.0.1:{self.port}"

    def _start(self, *args: str) -> None:
        command = [sys.executable, "-m", "ray.scripts.scripts", "start", *args, f"--num-cpus={self.cpus_per_node}",
                   "--disable-usage-stats"]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=180, env={**os.environ})
        if done.returncode:
            raise RuntimeError(f"`ray start {' '.join(args)}` failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")

    def __enter__(self) -> LocalRayCluster:
        self.temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
        self.port, client = free_ports(2)
        try:
            self._start("--head", f"--port={self.port}", f"--ray-client-server-port={client}",
                        "--include-dashboard=false", f"--temp-dir={self.temp}")  # fmt: skip
            for _ in range(self.nodes - 1):
                self._start(f"--address={self.address}")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        """End every process of this cluster (and their children); leave every other Ray alone."""
        marks = (self.temp, f":{self.port} ")  # its temp dir, or its address (Ray's client server)
        for proc in psutil.process_iter(["cmdline"]):
            if any(m in " ".join(proc.info["cmdline"] or []) + " " for m in marks):
                try:
                    family = [*proc.children(recursive=True), proc]
                except psutil.NoSuchProcess:
                    continue
                for member in family:
                    try:
                        member.kill()
                    except psutil.NoSuchProcess:
                        pass
