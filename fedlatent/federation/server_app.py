"""Flower ServerApp: build the run's context, run its phases, export the run directory.

The phases themselves (``phases.py``): encoder, federation (FedAvg or latent sharing),
evaluation; the export (``report.py``, ``server_view.py``): ``results.json``, ``server_view/``,
``private_index/``. This module only wires them to Flower's ``Grid`` and ``Context``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedlatent.baselines import train_public_only
from fedlatent.casting import ConfigError, parse_owners
from fedlatent.config import RunConfig
from fedlatent.federation import payloads as P
from fedlatent.federation.checkpoint import Checkpointer, load_checkpoint
from fedlatent.federation.context import RunContext, make_contract, wait_for_nodes
from fedlatent.federation.phases import central_accuracy, encoder_phase, fedavg_phase, federated_evaluation, share_phase
from fedlatent.federation.report import RunRecord
from fedlatent.federation.rounds import identify
from fedlatent.federation.rundir import mark_failed, resume_directory, run_directory
from fedlatent.federation.secure_rounds import distributed_phase, statistics_phase
from fedlatent.federation.server_view import ServerView
from fedlatent.federation.strategy import Traffic
from fedlatent.jsonable import jsonable
from fedlatent.learning.models import Encoder
from fedlatent.learning.progress import show_log
from fedlatent.plan import make_plan
from fedlatent.preflight import preflight

app = ServerApp()
log = logging.getLogger("fedlatent")


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run every phase and export the run directory; a failure's last log line is ``fedlatent: FAILED: <reason>``.

    ``flwr run --stream`` exits 0 even when the ServerApp fails, so the line is what a user
    reading the stream, or a script grepping it, can rely on (and no ``results.json`` is written).
    """
    show_log()
    try:
        _main(grid, context)
    except BaseException as err:
        log.error("FAILED: %s", f"{type(err).__name__}: {err}" if str(err) else type(err).__name__)
        raise


def _main(grid: Grid, context: Context) -> None:
    cfg = RunConfig.from_run_config(context.run_config)
    simulation = type(grid).__name__ == "InMemoryGrid"  # Flower's simulation grid: all SuperNodes register at once
    owners = parse_owners(cfg.partition_owners)  # partition -> node id, by registered key ({}: first claim binds)
    if owners and cfg.num_clients not in (0, len(owners)):
        raise ConfigError(f"num-clients={cfg.num_clients} but partition-owners names {len(owners)} partitions")
    nodes = wait_for_nodes(grid, len(owners) or cfg.num_clients, timeout=cfg.node_wait_timeout,
                           simulation=simulation, only=set(owners.values()))  # fmt: skip
    cfg = dataclasses.replace(cfg, num_clients=len(nodes))  # num-clients 0: every SuperNode
    preflight(cfg)  # as the CLI does, for flwr run users: no run directory for a run that cannot work
    out = resume_directory(cfg) if cfg.resume else run_directory(cfg)
    log.info("fedlatent run -> %s%s", out, " (resumed)" if cfg.resume else "")
    try:
        _run(grid, cfg, nodes, out, context)
    except BaseException as err:  # the directory must say the run failed, and why
        mark_failed(out, err)
        raise


def _run(grid: Grid, cfg: RunConfig, nodes: list[int], out: Path, flower: Context | None = None) -> None:
    """Every phase of one run into ``out``, from its start or from its checkpoint."""
    start = time.time()
    plan = make_plan(cfg)
    resumed = load_checkpoint(out, cfg) if cfg.resume else None
    record, traffic = RunRecord(cfg=cfg, out=out, plan=plan), Traffic()
    view = ServerView(out / "server_view", settings=jsonable(cfg.to_run_config()))
    before = resumed.restore(record, traffic, view) if resumed else 0.0
    if resumed is None:
        view.public_index(plan.public_idx)

    def elapsed() -> float:
        return before + time.time() - start

    checkpoint = Checkpointer(
        out, run_key=resumed.run_key if resumed else uuid.uuid4().hex, cfg=cfg, record=record, traffic=traffic,
        view=view, elapsed=elapsed, resumed=resumed,
    )  # fmt: skip
    run = RunContext(grid=grid, nodes=nodes, cfg=cfg, plan=plan, view=view, traffic=traffic, record=record,
                     contract=make_contract(cfg, plan, record), checkpoint=checkpoint, resumed=resumed,
                     flower=flower)  # fmt: skip
    try:
        _phases(run)
    finally:  # also when a round fails: the server view keeps what was received and rejected
        view.close()
    record.rejected = list(view.manifest["rejected"])
    record.finish(bytes_up=traffic.up, bytes_down=traffic.down, seconds=elapsed())
    log.info("accuracy %.4f, results in %s", record.accuracy, out / "results.json")


def _phases(run: RunContext) -> None:
    """The run's phases, in order; the final model goes to the server view."""
    cfg, record, view = run.cfg, run.record, run.view
    if cfg.mode != "public-only":
        # Bind every node to its partition before any data moves: seeded sampling draws partitions,
        # and the server accounts every DP round it asks for to a partition.
        identify(run)

    if cfg.mode == "public-only":  # the bar every federation must beat: no client is asked anything
        with record.timed("public-only"):
            model, record.public_only = train_public_only(cfg)
        record.accuracy = record.public_only["accuracy"]
        record.history.append({"round": 1, "accuracy": record.accuracy})
        view.final_model(P.module_to_arrays(model))  # the image classifier (public_only["image_classifier"])
    else:
        with record.timed("encoder"):
            encoder = encoder_phase(run) if cfg.is_latent else None
        with record.timed("federation"):
            if cfg.dp_mode == "distributed":
                secure = statistics_phase if cfg.mode == "latent-share" else distributed_phase
                model = secure(run, encoder)
            else:
                model = share_phase(run, encoder) if cfg.mode == "latent-share" else fedavg_phase(run, encoder)
        view.final_model(P.module_to_arrays(model))
        with record.timed("evaluation"):
            _final_accuracy(run, model, encoder)


def _final_accuracy(run: RunContext, model: torch.nn.Module, encoder: Encoder | None) -> None:
    """The final test accuracy: central when the server holds the encoder (or in raw), else federated."""
    cfg, record = run.cfg, run.record
    if cfg.is_latent and encoder is None:  # local encoders: only clients can evaluate
        last = record.history[-1] if record.history else {}
        if cfg.mode == "latent-fedavg" and last.get("round") == cfg.rounds and last.get("client_accuracy"):
            record.client_accuracy = last["client_accuracy"]  # the last round evaluated the final model
        else:
            record.client_accuracy = federated_evaluation(run, model, cfg.rounds)
        record.accuracy = float(np.mean(list(record.client_accuracy.values())))
    else:
        record.accuracy = central_accuracy(model, run.plan, encoder)
