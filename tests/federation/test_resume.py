"""Kill and resume: a DP run killed mid-round by SIGKILL ends, once resumed, exactly as an uninterrupted run.

The kill lands after a client has answered a round that the server has not yet checkpointed,
so the resumed run must ask that round again: the client answers from its store with the same
release (no second charge to its ledger), and the final model, history and ε of every client
equal those of the run that was never interrupted. ``reproducible-noise`` makes the two runs
comparable bit for bit (and is reported as not DP, which this test does not care about).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST, Runs

from fedlatent.federation.client_store import ClientStore
from fedlatent.launch.processes import live_members, tree_sessions
from fedlatent.launch.superlink import LocalSuperLink
from fedlatent.runs import app_dir

pytestmark = pytest.mark.slow

ROUNDS = 6
KEYS = {"dataset": "digits", "mode": "raw", "num-clients": 2, "rounds": ROUNDS, "local-epochs": 2, "epsilon": 3.0,
        "reproducible-noise": True}  # fmt: skip
RUN = ["run", *(a for k, v in KEYS.items() for a in (f"--{k}", str(v).lower() if isinstance(v, bool) else str(v)))]


def _fedlatent(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedlatent.cli", *args]


def _checkpointed(out: Path) -> int:
    try:
        return int(json.loads((out / "checkpoint" / "state.json").read_text())["stage"]["classifier_round"])
    except (OSError, ValueError, KeyError):
        return 0


def _answered(out: Path) -> int:
    """The latest round any client has answered (and stored), 0 before the first."""
    rounds = [0]
    for key_dir in (out / "client_state").glob("*"):
        for p in (0, 1):
            release = ClientStore(out / "client_state", run_key=key_dir.name, partition=p).release("train-classifier")
            rounds.append(release.round if release else 0)
    return max(rounds)


def _power_cut(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the command and everything it started (SuperLink, ServerApp, Ray) in one sweep."""
    for pid in live_members(tree_sessions(proc.pid)):  # never init, nor this test's own session
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def _ledger_events(out: Path) -> list[int]:
    stores = [ClientStore(out / "client_state", run_key=d.parent.name, partition=int(d.name[1:]))
              for d in sorted((out / "client_state").glob("*/p*"))]  # fmt: skip
    return [len((store.ledger() or {})["steps"]) for store in stores]


def test_a_run_killed_mid_round_resumes_to_the_uninterrupted_result(link: LocalSuperLink, tmp_path: Path) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    # The uninterrupted run, on the session's SuperLink with the settings the CLI gives the killed one.
    keys = {**KEYS, "out-dir": str(whole), "client-state-dir": str(whole / "client_state")}
    link.run(app_dir(), run_config=keys, num_supernodes=2, timeout=600)

    proc = subprocess.Popen(
        _fedlatent(*RUN, "--out", str(killed)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        done = _checkpointed(killed)
        if 2 <= done < ROUNDS - 1 and _answered(killed) == done + 1:  # a reply the server has not checkpointed
            break
        time.sleep(0.02)
    _power_cut(proc)  # every process at once: no finally, no atexit, no FAILED marker, no step after it
    stopped_at = _checkpointed(killed)
    assert not (killed / "results.json").exists() and 2 <= stopped_at < ROUNDS, stopped_at
    assert _answered(killed) == stopped_at + 1  # the kill landed inside a round
    done = subprocess.run(_fedlatent("run", "--resume", str(killed)), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    a, b = (json.loads((d / "results.json").read_text()) for d in (whole, killed))
    assert b["resumes"] == [{"from": {"encoder_round": 0, "encoder_done": False, "latents": False,
                                      "classifier_round": stopped_at}}]  # fmt: skip
    assert a["resumes"] == []
    assert b["epsilon_per_client"] == a["epsilon_per_client"] and a["epsilon"] > 0
    assert [r["accuracy"] for r in b["history"]] == [r["accuracy"] for r in a["history"]]
    assert len(b["history"]) == ROUNDS and b["accuracy"] == a["accuracy"]
    assert _ledger_events(killed) == _ledger_events(whole) == [ROUNDS, ROUNDS]  # the repeated round cost nothing
    with (
        np.load(whole / "server_view" / "final_model.npz") as x,
        np.load(killed / "server_view" / "final_model.npz") as y,
    ):
        assert x.files == y.files
        for key in x.files:
            np.testing.assert_array_equal(x[key], y[key])
    received = sorted(p.name for p in (killed / "server_view" / "received").iterdir())
    assert received == sorted(p.name for p in (whole / "server_view" / "received").iterdir())
    phases = [json.loads(line)["phase"] for line in (killed / "server_view" / "metrics.jsonl").read_text().splitlines()]
    # One reply per client and round (the repeated round's replies dropped), and each attempt's identify.
    assert phases.count("classifier") == 2 * ROUNDS and phases.count("identify") == 2 * 2
    assert os.path.isdir(killed / "checkpoint")


@pytest.mark.parametrize(("mode", "encoder"), [("latent-share", "public"), ("latent-fedavg", "federated")])
def test_resuming_from_the_last_checkpoint_restores_encoder_latents_and_model(
    runs: Runs, link: LocalSuperLink, tmp_path: Path, mode: str, encoder: str
) -> None:
    """A run that died after its last step: the resume takes encoder, latents and model from the checkpoint."""
    done = runs[mode, encoder]
    copy = tmp_path / "copy"
    shutil.copytree(done, copy)
    (copy / "results.json").unlink()
    stage = json.loads((copy / "checkpoint" / "state.json").read_text())["stage"]
    assert stage["encoder_done"] and (stage["latents"] if mode == "latent-share" else stage["classifier_round"] == 2)
    cache = runs.factory.getbasetemp() / "shared-cache"
    cfg = {**FAST, "mode": mode, "encoder": encoder, "out-dir": str(copy), "cache-dir": str(cache), "resume": True}
    result = link.run(app_dir(), run_config=cfg, num_supernodes=FAST["num-clients"], timeout=600)
    assert "restored from the server view" in result.log
    a, b = (json.loads((d / "results.json").read_text()) for d in (done, copy))
    assert b["accuracy"] == a["accuracy"] and b["resumes"] == [{"from": stage}]
    assert [r.get("accuracy") for r in b["history"]] == [r.get("accuracy") for r in a["history"]]
    if mode == "latent-share":  # nothing was asked again: the releases came from the server view
        assert "latents of 2 clients restored from the server view" in result.log
