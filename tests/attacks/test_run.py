"""``fedlatent attack`` on real run directories: wiring, threat model, files written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import Runs

from fedlatent.attacks.run import run_attacks
from fedlatent.attacks.scoring import load_truth
from fedlatent.attacks.view import load_attacker_view
from fedlatent.cli import main

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("mode", "encoder", "only", "not_applicable"),
    [
        ("raw", "public", ["gradient-inversion", "membership", "latent-inversion"], {"latent-inversion"}),
        ("latent-fedavg", "public", ["gradient-inversion", "model-inversion"], set()),
        ("latent-share", "public", ["latent-inversion", "membership"], set()),
        ("latent-share", "local", ["latent-inversion"], set()),  # query-free: the encoder is secret
    ],
)
def test_attacks_run_on_what_the_server_saw(
    runs: Runs, tmp_path: Path, mode: str, encoder: str, only: list[str], not_applicable: set[str]
) -> None:
    run = tmp_path / "run"
    run.symlink_to(runs[mode, encoder], target_is_directory=True)
    lines: list[str] = []
    report = run_attacks(run, only=only, preset="quick", progress=lines.append)
    assert json.loads((run / "attacks.json").read_text()) == json.loads(json.dumps(report))
    assert report["mode"] == mode and set(report["attacks"]) == set(only)
    assert len([line for line in lines if line.startswith("[")]) == len(only)  # progress per attack
    for name, entry in report["attacks"].items():
        if name in not_applicable:
            assert entry["status"] == "not-applicable" and entry["reason"]
            continue
        assert entry["status"] == "done" and entry["settings"] and entry["seconds"] >= 0
        if name == "membership":
            assert 0.0 <= entry["auc"] <= 1.0 and 0.0 <= entry["shadow"]["tpr_at_0.01_fpr"] <= 1.0
            assert (run / "attacks" / "membership-roc.png").stat().st_size > 1000
        elif entry.get("ssim") is not None:
            assert -1.0 <= entry["ssim"] <= 1.0 and np.isfinite(entry["psnr"])
            assert "leakage_ssim" in entry
    if "latent-inversion" in only and not not_applicable:
        method = report["attacks"]["latent-inversion"]["method"]
        assert method == ("query-free" if encoder == "local" else "black-box")
        assert (run / "attacks" / "latent-inversion.png").stat().st_size > 1000


@pytest.mark.xdist_group("runs-latent-share-public")  # the federation it reads (conftest's grouping)
def test_the_attacker_view_holds_no_private_record(runs: Runs) -> None:
    run = runs["latent-share", "public"]
    view, truth = load_attacker_view(run), load_truth(run)
    private = {r.tobytes() for x in truth.client_x.values() for r in x.reshape(len(x), -1)}
    assert not any(r.tobytes() in private for r in view.aux_x.reshape(len(view.aux_x), -1))
    # Everything else the attacker holds is weights or latents, never image-shaped rows.
    held = [a for p in view.latents.values() for a in p] + [a for u in view.uploads for a in u.weights.values()]
    assert all(a.reshape(-1).size % 64 or not any(r.tobytes() in private for r in a.reshape(-1, 64)) for a in held)
    assert sum(len(z) for z, _ in view.latents.values()) == sum(len(x) for x in truth.client_x.values())


@pytest.mark.xdist_group("runs-raw-public")
def test_attack_command(runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["attack", str(tmp_path)]) == 2  # not a run directory: a clear error, nothing run
    assert "not a finished fedlatent run" in capsys.readouterr().err
    run = tmp_path / "run"
    run.symlink_to(runs["raw", "public"], target_is_directory=True)
    assert main(["attack", str(run), "--only", "membership", "--preset", "quick"]) == 0
    assert "AUC" in capsys.readouterr().out
    assert json.loads((run / "attacks.json").read_text())["attacks"]["membership"]["status"] == "done"
