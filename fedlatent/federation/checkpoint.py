"""Checkpoints: the server's state after every completed step, so that a killed run can be resumed.

When: after the encoder phase, after every FedAvg round (of the federated encoder and of the
classifier) and after latent-share's collection. What: the step reached (``Stage``), the
global model(s), history, traffic, the privacy log (ε reports, refusals, client-level
releases), phase timings, the server view's manifest and the length of its metrics log, the
run key the clients file their stores under (``client_store``), and the run's config (a
resume must run the same one). How: arrays go to new files first, then ``state.json`` is
replaced in one rename (the commit), then files it no longer names are removed; a run killed
at any moment leaves its last committed state.

Why no RNG state: every random draw of the server is named by (seed, phase, round)
(``seeding.generator``, the seeded sampling of ``strategy``), so there is no generator state to
carry; a round the clients already answered is answered again from their stores with the
same release, and a step after the checkpoint is redone from the same inputs. Flower's
client-level DP noise is the exception on purpose: it is secret, so a repeated round gets
fresh noise (the released global model is the checkpointed one, never a mix).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord

from fedlatent.config import ConfigError, RunConfig
from fedlatent.federation import payloads as P
from fedlatent.federation.privacy_log import PrivacyLog
from fedlatent.federation.report import RunRecord
from fedlatent.federation.rundir import CHECKPOINT, write_json_atomic
from fedlatent.federation.server_view import ServerView
from fedlatent.federation.strategy import Traffic
from fedlatent.jsonable import jsonable

FORMAT = 1
UNCHECKED = ("resume", "overwrite", "out-dir")  # keys a resume may set differently (a moved run directory)


@dataclass
class Stage:
    """How far a run got: each step is done once, and a resume starts after the last one done."""

    encoder_round: int = 0  # FedAvg rounds of the federated encoder done
    encoder_done: bool = False  # the encoder phase is over (its encoder, if the server holds one, is in the view)
    latents: bool = False  # latent-share: every valid latent release is in the server view
    classifier_round: int = 0  # FedAvg rounds of the classifier done


@dataclass
class Checkpoint:
    """A committed checkpoint, as loaded for a resume."""

    run_key: str
    stage: Stage
    arrays: dict[str, ArrayRecord]
    state: dict[str, Any] = field(repr=False)  # everything else, as saved

    def restore(self, record: RunRecord, traffic: Traffic, view: ServerView) -> float:
        """Put the saved history, privacy log, timings, traffic and view back; return the seconds run before."""
        s = self.state
        record.history = [_int_keys(row) for row in s["history"]]
        record.seconds = dict(s["seconds"])
        p = s["privacy"]
        record.privacy = PrivacyLog(
            known={int(k): list(v) for k, v in p["known"].items()},
            possible={int(k): list(v) for k, v in p["possible"].items()},
            refusals=list(p["refusals"]),
            client_level=p["client_level"],
        )
        record.resumes = [*s["resumes"], {"from": dataclasses.asdict(self.stage)}]
        traffic.up, traffic.down = int(s["traffic"]["up"]), int(s["traffic"]["down"])
        view.restore(s["view"], metrics_lines=int(s["metrics_lines"]))
        return float(s["elapsed"])


class Checkpointer:
    """Writes a run's checkpoints into ``out/checkpoint/`` (see module docstring)."""

    def __init__(
        self, out: Path, *, run_key: str, cfg: RunConfig, record: RunRecord, traffic: Traffic, view: ServerView,
        elapsed: Any, resumed: Checkpoint | None = None,
    ) -> None:  # fmt: skip
        self.root = out / CHECKPOINT
        self.run_key, self.cfg, self.record, self.traffic, self.view = run_key, cfg, record, traffic, view
        self.elapsed = elapsed  # () -> seconds the run has taken so far, earlier attempts included
        self.stage = dataclasses.replace(resumed.stage) if resumed else Stage()
        self.arrays: dict[str, ArrayRecord] = dict(resumed.arrays) if resumed else {}
        self.serial = int(resumed.state["serial"]) if resumed else 0

    def save(self, arrays: Mapping[str, ArrayRecord] | None = None, **stage: Any) -> None:
        """Commit the run's state with ``stage`` fields updated and ``arrays`` (name -> model) replaced."""
        self.stage = dataclasses.replace(self.stage, **stage)
        self.arrays.update(arrays or {})
        self.serial += 1
        self.root.mkdir(parents=True, exist_ok=True)
        files = {}
        for name, record in self.arrays.items():
            files[name] = f"{name}-{self.serial:05d}.npz"
            tmp = self.root / f".{files[name]}.tmp"
            with tmp.open("wb") as f:
                np.savez(f, **P.record_numpy(record))  # type: ignore[arg-type]
            os.replace(tmp, self.root / files[name])
        state = {
            "format": FORMAT,
            "serial": self.serial,
            "run_key": self.run_key,
            "config": jsonable(self.cfg.to_run_config()),
            "stage": dataclasses.asdict(self.stage),
            "arrays": files,
            "history": self.record.history,
            "seconds": self.record.seconds,
            "elapsed": self.elapsed(),
            "resumes": self.record.resumes,
            "privacy": dataclasses.asdict(self.record.privacy),
            "traffic": {"up": self.traffic.up, "down": self.traffic.down},
            "view": self.view.manifest,
            "metrics_lines": self.view.metrics_lines,
        }
        write_json_atomic(self.root / "state.json", jsonable(state))  # the commit
        for old in self.root.iterdir():
            if old.name != "state.json" and old.name not in files.values():
                old.unlink()


def load_checkpoint(out: Path, cfg: RunConfig) -> Checkpoint:
    """The committed checkpoint of the run in ``out``, checked against the config of the resume.

    ``out`` is a directory ``rundir.resumable`` accepted: it holds a checkpoint.

    Raises
    ------
    ConfigError
        An unknown format, or a config that differs from the run's (keys named).
    """
    path = out / CHECKPOINT / "state.json"
    state = json.loads(path.read_text())
    if state.get("format") != FORMAT:
        raise ConfigError(f"{path}: checkpoint format {state.get('format')!r}, this fedlatent reads {FORMAT}")
    saved, now = state["config"], jsonable(cfg.to_run_config())
    differ = sorted(k for k in set(saved) | set(now) if k not in UNCHECKED and saved.get(k) != now.get(k))
    if differ:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in differ[:6])
        raise ConfigError(f"a resume must run the same config as the run it continues; these differ: {shown}")
    arrays = {}
    for name, rel in state["arrays"].items():
        with np.load(out / CHECKPOINT / rel) as npz:
            arrays[name] = P.numpy_record({k: npz[k] for k in npz.files})
    return Checkpoint(run_key=str(state["run_key"]), stage=Stage(**state["stage"]), arrays=arrays, state=state)


def _int_keys(row: dict[str, Any]) -> dict[str, Any]:
    """A history row as the run made it: per-client values keyed by partition number, not by string."""
    if isinstance(row.get("client_accuracy"), dict):
        row = {**row, "client_accuracy": {int(k): v for k, v in row["client_accuracy"].items()}}
    return row
