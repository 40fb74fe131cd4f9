"""Checkpoints: what a run saves after every step, what a resume reads back, and what it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord

from fedlatent.cli import main
from fedlatent.config import ConfigError, RunConfig
from fedlatent.federation.checkpoint import Checkpointer, Stage, load_checkpoint
from fedlatent.federation.privacy_log import PrivacyLog
from fedlatent.federation.report import RunRecord
from fedlatent.federation.rundir import check_out_dir, resumable, resume_directory
from fedlatent.federation.server_view import ServerView
from fedlatent.federation.strategy import Traffic
from fedlatent.plan import make_plan

CFG = {"dataset": "digits", "mode": "raw", "num-clients": 2, "rounds": 3}


def _parts(out: Path, cfg: RunConfig) -> tuple[RunRecord, Traffic, ServerView]:
    plan = make_plan(cfg)
    return RunRecord(cfg=cfg, out=out, plan=plan), Traffic(), ServerView(out / "server_view", settings={})


def _model(value: float) -> ArrayRecord:
    return ArrayRecord({"w": torch.full((2, 3), value), "b": torch.zeros(2)})


def _saved_run(out: Path) -> RunConfig:
    """A run killed after round 2 of 3: two checkpoints, then files of the unfinished round 3."""
    cfg = RunConfig.from_run_config({**CFG, "out-dir": str(out)})
    record, traffic, view = _parts(out, cfg)
    view.public_index(np.arange(4))
    ckpt = Checkpointer(out, run_key="k1", cfg=cfg, record=record, traffic=traffic, view=view, elapsed=lambda: 12.5)
    for rnd in (1, 2):
        view.sent("classifier", rnd, _model(rnd - 1))
        view.received("classifier", rnd, 0, _model(rnd))
        view.metrics("classifier", rnd, 5, {"partition-id": 0})
        record.history.append({"round": rnd, "accuracy": 0.5 + rnd / 10, "client_accuracy": {0: 0.6, 10: 0.7}})
        record.privacy.known.setdefault(0, []).append("classifier")
        traffic.up, traffic.down = 100 * rnd, 50 * rnd
        ckpt.save({"classifier": _model(rnd)}, classifier_round=rnd)
    view.rejected("classifier", 2, 6, "bad")
    view.sent("classifier", 3, _model(2))  # round 3 had begun when the run was killed
    view.received("classifier", 3, 0, _model(3))
    view.metrics("classifier", 3, 5, {"partition-id": 0})
    return cfg


def test_a_checkpoint_restores_the_state_of_its_last_committed_step(tmp_path) -> None:
    cfg = _saved_run(tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == ["classifier-00002.npz", "state.json"]
    loaded = load_checkpoint(tmp_path, cfg)
    assert loaded.run_key == "k1" and loaded.stage == Stage(classifier_round=2)
    np.testing.assert_array_equal(loaded.arrays["classifier"]["w"].numpy(), np.full((2, 3), 2.0, np.float32))

    record, traffic, view = _parts(tmp_path, cfg)
    assert loaded.restore(record, traffic, view) == 12.5
    assert [row["round"] for row in record.history] == [1, 2]
    assert record.history[0]["client_accuracy"] == {0: 0.6, 10: 0.7}  # partition keys are numbers again
    assert record.privacy == PrivacyLog(known={0: ["classifier", "classifier"]})
    assert (traffic.up, traffic.down) == (200, 100)
    assert record.resumes == [{"from": {"encoder_round": 0, "encoder_done": False, "latents": False,
                                        "classifier_round": 2}}]  # fmt: skip
    # Round 3's files were received by the attempt that died; the resume redoes round 3, so they go.
    root = tmp_path / "server_view"
    assert not (root / "received" / "classifier-r003-p000.npz").exists()
    assert not (root / "sent" / "classifier-r003.npz").exists()
    assert (root / "received" / "classifier-r002-p000.npz").is_file()
    assert len((root / "metrics.jsonl").read_text().splitlines()) == 2 == view.metrics_lines
    assert view.manifest["rejected"] == []  # the rejection came after the last commit


def test_a_resume_must_run_the_same_config(tmp_path) -> None:
    cfg = _saved_run(tmp_path)
    same = RunConfig.from_run_config({**cfg.to_run_config(), "resume": True, "out-dir": str(tmp_path / "moved")})
    load_checkpoint(tmp_path, same)  # resume, overwrite and a moved out-dir may differ
    other = RunConfig.from_run_config({**cfg.to_run_config(), "rounds": 5, "lr": 0.01})
    with pytest.raises(ConfigError, match="lr: 0.001 -> 0.01, rounds: 3 -> 5"):
        load_checkpoint(tmp_path, other)


def test_only_an_unfinished_run_with_a_checkpoint_can_be_resumed(tmp_path) -> None:
    def resume(out: Path) -> RunConfig:
        return RunConfig.from_run_config({**CFG, "resume": True, "out-dir": str(out)})

    with pytest.raises(ConfigError, match="needs 'out-dir'"):
        resumable(RunConfig.from_run_config({**CFG, "resume": True}).out_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        resumable(str(tmp_path / "empty"))
    _saved_run(tmp_path / "run")
    (tmp_path / "run" / "FAILED").write_text("RoundFailed: ...\n")
    assert resume_directory(resume(tmp_path / "run")) == (tmp_path / "run").resolve()
    assert not (tmp_path / "run" / "FAILED").exists()
    (tmp_path / "link").symlink_to(tmp_path / "run")
    with pytest.raises(ConfigError, match="symbolic link"):
        resumable(str(tmp_path / "link"))
    with pytest.raises(ConfigError, match=r"fedlatent run --resume DIR"):  # a fresh run is pointed to the resume
        check_out_dir(tmp_path / "run", overwrite=False)
    (tmp_path / "run" / "results.json").write_text("{}")
    with pytest.raises(ConfigError, match="finished run"):
        resumable(str(tmp_path / "run"))


def test_the_cli_resumes_with_the_runs_own_settings_only(tmp_path, capsys) -> None:
    _saved_run(tmp_path / "run")
    assert main(["run", "--resume", str(tmp_path / "run"), "--rounds", "5"]) == 2
    assert "drop --rounds" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path / "nothing")]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert state["config"]["rounds"] == 3 and state["run_key"] == "k1"
