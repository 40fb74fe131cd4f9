"""``fedlatent sweep FILE --ray ADDRESS``: a sweep's points as tasks on an existing Ray cluster.

What: ``run_sweep_on_ray(spec, out, address=..., cpus=...)`` connects to the cluster, checks
that every node sees ``out`` (a shared file system), and submits one Ray task per unfinished
point, declaring ``cpus`` CPUs. The driver decides, as ``runner.run_sweep`` does, whether
an unfinished point resumes from its checkpoint or starts afresh (``runner.prepare``); the
task runs the point's federation on a private SuperLink on its node, its attacks, and writes
``point.json`` last (``runner.write_point``). The driver gathers the outcomes as they come, logs progress and
writes ``failed.json``: the same directory, resume and failure rules as a sweep on one
machine. A task is never retried by Ray (``max_retries=0``): a point that fails, or whose
worker or node dies, is recorded as failed and the next invocation resumes or redoes it.

How a point shares its node: the point's Flower simulation starts a Ray instance of its own
(``RAY_ADDRESS=local`` in every Flower process, ``launch.processes.flower_env``), never
joining the cluster, and that instance is capped at the task's ``cpus``
(``init-args-num-cpus``); torch in each ClientApp uses ``client-threads`` threads. The cluster
therefore runs at most ``node CPUs ÷ cpus`` points per node, and each point uses the cores it
declared.

Each point's output goes to ``out/ray/<id>.log``, and ``out/ray/<id>.json`` says which
node and process run it (beside the run directory, which holds the run's files only).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from fedlatent.bench.runner import federated, point_dir, prepare, progress_line, write_atomic, write_point, write_spec
from fedlatent.bench.sweep import Point, SweepSpec, points
from fedlatent.config import ConfigError, RunConfig

_log = logging.getLogger("fedlatent")


def _sees(path: str, token: str) -> tuple[str, bool]:
    """On a node: its host name, and whether ``path`` holds ``token`` there."""
    try:
        return socket.gethostname(), Path(path).read_text() == token
    except OSError:
        return socket.gethostname(), False


def check_reachable(address: str, *, timeout: float = 10.0) -> None:
    """Raise ``ConfigError`` unless ``host:port`` accepts a TCP connection (Ray itself retries for minutes).

    Other addresses (``auto``, ``ray://...``) are left to Ray.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in address:
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConfigError(
            f"sweep --ray: no Ray cluster answers at {address} ({err}); start one with `ray start --head` "
            "and give its address (HEAD_IP:6379)"
        ) from err


def check_shared(out: Path) -> int:
    """Raise ``ConfigError`` unless every alive node of the cluster reads ``out`` as this process does.

    Returns the number of nodes checked.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe, token = out / f".ray-probe-{uuid.uuid4().hex}", uuid.uuid4().hex
    probe.write_text(token)
    try:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        task = ray.remote(num_cpus=0, max_retries=0)(_sees)
        seen = ray.get(
            [
                task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
                    str(probe), token
                )
                for n in nodes
            ]
        )
    finally:
        probe.unlink(missing_ok=True)
    blind = [f"{host} ({n['NodeManagerAddress']})" for n, (host, ok) in zip(nodes, seen, strict=True) if not ok]
    if blind:
        raise ConfigError(
            f"sweep --ray: node(s) {', '.join(blind)} cannot read {out}; the sweep directory must be on a file "
            "system that every node mounts at the same path (e.g. NFS), since points write there"
        )
    return len(nodes)


def run_point_task(
    spec: SweepSpec, out: str, point: Point, cfg: RunConfig | None, cpus: int, verbose: bool, timeout: float
) -> dict:
    """One point on a worker node (see module docstring); returns its ``point.json`` record.

    ``cfg`` None: the point's federation finished before (``runner.federated``); its attacks run.
    """
    from fedlatent.attacks.run import run_attacks
    from fedlatent.launch.superlink import LocalSuperLink
    from fedlatent.runs import echo_lines, run_one

    began, root = time.monotonic(), Path(out)
    where, tasks = point_dir(root, point), root / "ray"
    tasks.mkdir(exist_ok=True)
    write_atomic(tasks / f"{point.id}.json", {"host": socket.gethostname(), "pid": os.getpid(), "cpus": cpus})
    with (tasks / f"{point.id}.log").open("a") as log:

        def write(line: str) -> None:
            log.write(line.rstrip() + "\n")
            log.flush()

        echo = echo_lines(verbose, write)  # Flower's output: what `fedlatent run` would show
        if cfg is None:
            results = json.loads((where / "results.json").read_text())
        else:
            with tempfile.TemporaryDirectory(prefix="fedlatent-flwr-") as home:
                with LocalSuperLink(flwr_home=Path(home)) as link:
                    results = run_one(link, cfg, verbose=verbose, timeout=timeout, cpus=cpus, echo=echo)
        attacks = bool(spec.attacks) and not point.is_public_only
        done = run_attacks(where, only=spec.families, preset=spec.attacks, progress=write) if attacks else None
    return write_point(root, point, spec, results, seconds=time.monotonic() - began, has_attacks=bool(done))


def run_sweep_on_ray(
    spec: SweepSpec, out: Path, *, address: str, cpus: int = 2, verbose: bool = False, timeout: float = 86400.0
) -> dict[str, Any]:
    """Run every unfinished point of ``spec`` into ``out`` as tasks on the Ray cluster at ``address``.

    Returns what ``runner.run_sweep`` returns, plus ``nodes`` (how many the cluster had).
    """
    import ray

    from fedlatent.runs import resume_config, run_config

    todo = points(spec)  # every point validated before anything is written or started
    write_spec(out, spec, todo)
    remaining = [p for p in todo if not (point_dir(out, p) / "point.json").is_file()]
    skipped = len(todo) - len(remaining)
    check_reachable(address)
    ray.init(address=address, log_to_driver=verbose, configure_logging=False)
    try:
        nodes = check_shared(out)
        most = max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"]), default=0.0)
        if most < cpus:  # Ray would queue every task forever
            raise ConfigError(f"sweep --ray-cpus {cpus}: no node of the cluster has that many CPUs (most: {most:g})")
        _log.info(f"sweep: {len(todo)} points, {skipped} already finished, {len(remaining)} to run on "
                  f"{nodes} Ray node(s), {cpus} CPU(s) each -> {out}")  # fmt: skip
        task = ray.remote(max_retries=0)(run_point_task).options(num_cpus=cpus)
        futures = {}
        for p in remaining:  # cfg None: its federation finished before, only its attacks run
            done_before = federated(out, p) is not None
            cfg = None if done_before else prepare(spec, out, p, run_config=run_config, resume_config=resume_config)
            futures[task.remote(spec, str(out), p, cfg, cpus, verbose, timeout)] = p
        failed: dict[str, str] = {}
        start, seconds = time.monotonic(), []
        while futures:
            [ready], _ = ray.wait(list(futures), num_returns=1)
            point = futures.pop(ready)
            try:
                record = ray.get(ready)
            except Exception as err:  # the task raised, or its worker or node died: retried next invocation
                cause = getattr(err, "cause", None) or err  # a RayTaskError carries the task's own exception
                failed[point.id] = f"{type(cause).__name__}: {(str(cause).strip() or '?').splitlines()[0][:500]}"
                _log.info(f"sweep: point {point.id} FAILED ({failed[point.id]}); going on")
                continue
            seconds.append(record["seconds"])
            done = len(todo) - len(futures) - len(failed)
            per_slot = sum(seconds) / len(seconds) / max(1, int(ray.cluster_resources().get("CPU", cpus)) // cpus)
            elapsed = time.monotonic() - start
            _log.info(progress_line(done, len(todo), elapsed, per_slot * len(futures), point.id,
                                    record.get("accuracy"), record["seconds"]))  # fmt: skip
    finally:
        ray.shutdown()
    write_atomic(out / "failed.json", failed)
    summary = {"points": len(todo), "finished": len(todo) - len(failed), "skipped": skipped}
    return summary | {"failed": sorted(failed), "seconds": time.monotonic() - start, "nodes": nodes}


def task_of(out: Path, point_id: str) -> dict[str, Any] | None:
    """Where a point runs or ran (``out/ray/<id>.json``), or None."""
    path = out / "ray" / f"{point_id}.json"
    return json.loads(path.read_text()) if path.is_file() else None
