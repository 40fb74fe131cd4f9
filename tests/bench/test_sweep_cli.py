"""``fedlatent sweep`` for real: Flower runs, attacks, Ctrl-C after one point, resume, report."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SWEEP = """
[sweep]
attacks = "quick"
families = ["latent-inversion", "membership"]

[base]
dataset = "digits"
num-clients = 2
rounds = 1
local-epochs = 1
ae-epochs = 5
server-epochs = 5

[grid]
mode = ["raw", "latent-share"]
"""


def _sweep(spec: Path, out: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "fedlatent.cli", "sweep", str(spec), "--out", str(out)]

    # A shell without job control starts background jobs with SIGINT ignored, and Python then keeps it
    # ignored: a suite run as `pytest &` would send Ctrl-C to a sweep that cannot hear it.
    def hear_ctrl_c() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, preexec_fn=hear_ctrl_c
    )


@pytest.mark.slow
def test_a_sweep_interrupted_after_one_point_resumes_and_reports(tmp_path: Path) -> None:
    spec, out = tmp_path / "tiny.toml", tmp_path / "sweep"
    spec.write_text(SWEEP)
    proc = _sweep(spec, out)
    deadline = time.monotonic() + 900  # generous: a loaded machine (other jobs beside CI) is slow
    # Ctrl-C once the public-only bar and the first federated point are finished.
    while len(list(out.glob("points/*/point.json"))) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, log
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("points/*/point.json")}
    assert len(finished) == 2, log
    assert "rerun the same command to resume" in log

    proc = _sweep(spec, out)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log
    assert "3 points, 2 already finished, 1 to run" in log
    after = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("points/*/point.json")}
    assert len(after) == 3 and all(after[k] == v for k, v in finished.items())  # nothing finished was redone

    with (out / "points.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["mode"] for r in rows) == ["latent-share", "public-only", "raw"]
    bar = next(r for r in rows if r["mode"] == "public-only")
    for r in rows:
        assert abs(float(r["lift"]) - (float(r["accuracy"]) - float(bar["accuracy"]))) < 1e-12
    share = next(r for r in rows if r["mode"] == "latent-share")
    assert share["attacks.latent-inversion.status"] == "done" and share["inversion_leakage_ssim"] != ""
    for name in ("accuracy-vs-epsilon", "leakage-vs-epsilon", "frontier", "accuracy-per-round"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "| public-only |" in report and "claim 1" in report and "Threat model" in report
    assert "data:image/png;base64," in (out / "report.html").read_text()
    assert json.loads((out / "failed.json").read_text()) == {}
