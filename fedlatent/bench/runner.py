"""Run a sweep's points, resumably: one fresh run directory per point, finished ones skipped.

What: ``run_sweep(spec, out, run_point=...)`` writes ``out/sweep.json`` (the spec and its
points), then for each point not yet finished runs it into ``out/points/<id>/`` — the
federation (``run_point``, the CLI's ``flwr run`` on a private SuperLink), then the attacks of
the spec — and writes ``out/points/<id>/point.json`` last, atomically. A point is finished
exactly when that file exists: an interrupted point (a directory without it) is resumed from
its checkpoint when its federation left one (``resume_config``), else removed and redone;
Ctrl-C stops after writing nothing partial as finished; a point whose federation (or whose
attacks) fails is recorded in ``out/failed.json``, the sweep goes on, and the next invocation
retries it. A point's attacks run while the next point's federation does (one worker thread). Every
point shares ``out/.cache`` (data and the public autoencoder) unless the spec sets
``cache-dir``. Progress goes to the ``fedlatent`` log: points done, elapsed, ETA.

Why the points run in one process with one SuperLink: starting Flower costs seconds per point
(``cli``'s ``compare`` does the same); the attacks run between points, while the SuperLink idles.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fedlatent.bench.sweep import Point, SweepSpec, points
from fedlatent.config import ConfigError, RunConfig
from fedlatent.federation.rundir import CHECKPOINT, write_json_atomic
from fedlatent.jsonable import jsonable
from fedlatent.learning.progress import bar, clock

RunPoint = Callable[[RunConfig], dict[str, Any]]
AttackPoint = Callable[[Path, SweepSpec], dict[str, Any]]
_log = logging.getLogger("fedlatent")


def write_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as strict JSON to ``path`` through a temporary file and a rename."""
    write_json_atomic(path, jsonable(data))


def point_dir(out: Path, point: Point) -> Path:
    """Where a point's run directory lives."""
    return out / "points" / point.id


def is_finished(out: Path, point: Point) -> bool:
    """True when the point's ``point.json`` (written last) exists."""
    return (point_dir(out, point) / "point.json").is_file()


def point_config(spec: SweepSpec, out: Path, point: Point, *, run_config: Callable[..., RunConfig]) -> RunConfig:
    """The validated config of one point: its keys, its own run directory, the shared cache."""
    overrides = dict(point.overrides)
    overrides.setdefault("cache-dir", str(out / ".cache"))
    overrides["out-dir"] = str(point_dir(out, point))
    return run_config(overrides, default_out=str(point_dir(out, point)))


def _resumed(where: Path, resume_config: Callable[..., RunConfig] | None) -> RunConfig | None:
    """The config that resumes an interrupted point from its checkpoint, or None (then it is redone)."""
    if resume_config is None or not (where / CHECKPOINT / "state.json").is_file():
        return None
    try:
        cfg = resume_config(where, {})
    except ConfigError as err:  # e.g. a checkpoint of another fedlatent: redo the point
        _log.info(f"sweep: {where.name} cannot be resumed ({err})")
        return None
    _log.info(f"sweep: {where.name} was interrupted; resuming it from its checkpoint")
    return cfg


def federated(out: Path, point: Point) -> dict[str, Any] | None:
    """The results of a point whose federation finished (its attacks did not), else None.

    ``results.json`` is written whole and only by a finished run, so such a point keeps its
    federation and only its attacks run again.
    """
    path = point_dir(out, point) / "results.json"
    try:
        results = dict(json.loads(path.read_text()))
    except (OSError, ValueError):  # absent, or not this contract's (then the point is redone)
        return None
    _log.info(f"sweep: {point.id}: its federation finished before; running its attacks")
    return results


def prepare(
    spec: SweepSpec,
    out: Path,
    point: Point,
    *,
    run_config: Callable[..., RunConfig],
    resume_config: Callable[..., RunConfig] | None,
) -> RunConfig:
    """The config that runs an unfinished ``point``: resumed from its checkpoint, or afresh.

    An interrupted point that cannot be resumed is removed first: its partial files must not
    mix with the rerun.
    """
    where = point_dir(out, point)
    cfg = _resumed(where, resume_config) if where.exists() else None
    if where.exists() and cfg is None:
        _log.info(f"sweep: {point.id} was interrupted; removing it and running it again")
        shutil.rmtree(where)
    return cfg or point_config(spec, out, point, run_config=run_config)


def write_point(
    out: Path, point: Point, spec: SweepSpec, results: dict[str, Any], *, seconds: float, has_attacks: bool
) -> dict[str, Any]:
    """Write the point's ``point.json`` (last: it marks the point finished) and return it."""
    record = {"id": point.id, "overrides": point.overrides, "public_only": point.public_only, "seconds": seconds}
    record |= {"accuracy": results.get("accuracy"), "attacks": spec.attacks or None, "has_attacks": has_attacks}
    write_atomic(point_dir(out, point) / "point.json", record)
    return record


def write_spec(out: Path, spec: SweepSpec, todo: list[Point]) -> None:
    """``out/sweep.json``: the spec and its points (what ``fedlatent report`` reads)."""
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(
        out / "sweep.json", {"spec": dataclasses.asdict(spec), "points": [dataclasses.asdict(p) for p in todo]}
    )


def progress_line(done: int, total: int, elapsed: float, eta: float, point: str, accuracy: Any, seconds: float) -> str:
    """One progress line of a sweep: bar, points done, elapsed < ETA, and the point just finished."""
    acc = float("nan") if accuracy is None else accuracy
    return (
        f"sweep {bar(done, total)}  {done}/{total} points  {clock(elapsed)} < {clock(eta)}  "
        f"({point}: accuracy {acc:.4f}, {seconds:.0f} s)"
    )


def _eta(durations: dict[bool, list[float]], left: list[Point]) -> float:
    """Seconds left: each remaining point at the mean time of its kind so far (bar or federation)."""
    seen = durations[True] + durations[False]
    mean = {k: sum(v) / len(v) if v else sum(seen) / max(len(seen), 1) for k, v in durations.items()}
    return sum(mean[p.is_public_only] for p in left)


def run_sweep(
    spec: SweepSpec,
    out: Path,
    *,
    run_point: RunPoint,
    attack_point: AttackPoint | None,
    run_config: Callable[..., RunConfig],
    resume_config: Callable[..., RunConfig] | None = None,
) -> dict[str, Any]:
    """Run every unfinished point of ``spec`` into ``out`` (see module docstring).

    ``resume_config(run_dir, {})`` (``runs.resume_config``), when given, continues an interrupted
    point whose federation left a checkpoint instead of redoing it.

    Returns ``{"points": n, "finished": n, "skipped": n, "failed": [ids], "seconds": s}``.
    """
    todo = points(spec)  # every point validated before anything is written or started
    write_spec(out, spec, todo)
    skipped = [p for p in todo if is_finished(out, p)]
    remaining = [p for p in todo if not is_finished(out, p)]
    _log.info(f"sweep: {len(todo)} points, {len(skipped)} already finished, {len(remaining)} to run -> {out}")
    failed: dict[str, str] = {}
    start = time.monotonic()
    durations: dict[bool, list[float]] = {True: [], False: []}  # by is_public_only: a bar takes seconds
    # A point's attacks run in one worker thread while the next federation runs: a federation leaves
    # a core idle while Flower starts and stops, and the attacks fill it. point.json is written
    # when its attacks end, so a point is finished only with them.
    attacker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attacks")
    pending: list[Future[None]] = []

    def finish(point: Point, results: dict[str, Any], federation_seconds: float, attacks: bool) -> None:
        where, began = point_dir(out, point), time.monotonic()
        try:
            done_attacks = attack_point(where, spec) if attacks and attack_point is not None else None
        except Exception as err:  # the federation stands; the point is retried (attacks included) next time
            failed[point.id] = f"attacks: {type(err).__name__}: {err}"
            _log.info(f"sweep: attacks on {point.id} FAILED ({failed[point.id]}); going on")
            return
        seconds = federation_seconds + time.monotonic() - began  # its own work, not its wait in the queue
        durations[point.is_public_only].append(seconds)
        write_point(out, point, spec, results, seconds=seconds, has_attacks=bool(done_attacks))
        done = len(skipped) + sum(is_finished(out, p) for p in remaining)
        eta = _eta(durations, [p for p in remaining if not is_finished(out, p) and p.id not in failed])
        elapsed = time.monotonic() - start
        _log.info(progress_line(done, len(todo), elapsed, eta, point.id, results.get("accuracy"), seconds))

    try:
        for i, point in enumerate(remaining):
            began = time.monotonic()
            _log.info(f"sweep: [{len(skipped) + i + 1}/{len(todo)}] {point.id}")
            try:
                if (results := federated(out, point)) is None:
                    results = run_point(prepare(spec, out, point, run_config=run_config, resume_config=resume_config))
            except KeyboardInterrupt:
                _log.info(f"sweep: interrupted during {point.id}; rerun the same command to resume (it is redone)")
                raise
            except Exception as err:  # one failed point must not end the sweep; it is retried next time
                failed[point.id] = f"{type(err).__name__}: {err}"
                _log.info(f"sweep: point {point.id} FAILED ({failed[point.id]}); going on")
                continue
            attacks = bool(spec.attacks) and not point.is_public_only
            pending.append(attacker.submit(finish, point, results, time.monotonic() - began, attacks))
        for future in pending:
            future.result()
    finally:
        attacker.shutdown(wait=True, cancel_futures=True)
    write_atomic(out / "failed.json", failed)
    summary = {"points": len(todo), "finished": len(todo) - len(failed), "skipped": len(skipped)}
    return summary | {"failed": sorted(failed), "seconds": time.monotonic() - start}
