"""Tests for fedlatent.report: the run directory contract."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from contract import RESULT_FIELDS

from fedlatent import __version__
from fedlatent.config import RunConfig
from fedlatent.federation.report import RunRecord
from fedlatent.federation.rundir import run_directory
from fedlatent.plan import make_plan

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("report")
    cfg = RunConfig.from_run_config(
        {
            "dataset": "digits",
            "max-train": 300,
            "num-clients": 3,
            "rounds": 3,
            "seed": 5,
            "mode": "latent-share",
            "out-dir": str(tmp_path / "run"),
        }
    )
    plan = make_plan(cfg)
    out = run_directory(cfg)
    history = [
        {"round": 1, "accuracy": 0.5, "train_loss": 1.2, "client_accuracy": {0: 0.4, 1: 0.6}},
        {"round": 2, "accuracy": 0.7, "train_loss": 0.8},
        {"round": 3, "accuracy": 0.8, "train_loss": 0.6},
    ]
    record = RunRecord(
        cfg=cfg, out=out, plan=plan, history=history, accuracy=0.8, client_accuracy={2: 0.9, 0: 0.7, 1: 0.8}
    )
    results = record.finish(bytes_up=1000, bytes_down=2000, seconds=1.5)
    return cfg, plan, out, results


def test_run_directory_uses_out_dir(tmp_path):
    cfg = RunConfig.from_run_config({"out-dir": str(tmp_path / "a" / "b")})
    out = run_directory(cfg)
    assert out == (tmp_path / "a" / "b").resolve() and out.is_dir()


def test_results_json(finished):
    cfg, plan, out, results = finished
    on_disk = json.loads((out / "results.json").read_text())  # strict JSON: no NaN
    assert on_disk == json.loads(json.dumps(results))
    missing = [k for k in RESULT_FIELDS if k not in on_disk]
    assert not missing
    assert on_disk["mode"] == "latent-share" and on_disk["encoder"] == "public"
    assert on_disk["dataset"] == "digits" and on_disk["num_clients"] == 3 and on_disk["rounds"] == 3
    assert on_disk["partition"] == "iid" and on_disk["seed"] == 5
    assert on_disk["accuracy"] == 0.8
    assert on_disk["accuracy_per_client"] == {"0": 0.7, "1": 0.8, "2": 0.9}
    assert on_disk["bytes_uploaded"] == 1000 and on_disk["bytes_downloaded"] == 2000
    assert on_disk["wall_seconds"] == 1.5
    assert [row["round"] for row in on_disk["history"]] == [1, 2, 3]
    assert on_disk["fedlatent_version"] == __version__
    # No DP in this run: the privacy fields must say so.
    assert on_disk["epsilon"] is None and on_disk["delta"] is None
    assert on_disk["end_to_end_dp"] is False
    assert on_disk["epsilon_per_client"] == {"0": None, "1": None, "2": None}
    assert on_disk["labels_in_clear"] is True
    infinite = {k for k, v in cfg.to_run_config().items() if v == float("inf")}
    assert infinite >= {"epsilon", "label-epsilon", "encoder-epsilon"}
    assert on_disk["config"] == {**cfg.to_run_config(), **dict.fromkeys(infinite, "inf")}
    assert RunConfig.from_run_config(on_disk["config"]) == cfg  # the written config reloads exactly
    records = on_disk["records"]
    assert records["public"] == len(plan.public_idx)
    assert records["private"] == sum(records["per_client"]) == 300 - len(plan.public_idx)


def test_raw_mode_has_no_encoder_and_labels_not_in_clear(tmp_path):
    cfg = RunConfig.from_run_config(
        {"mode": "raw", "partition": "dirichlet", "max-train": 300, "num-clients": 2, "out-dir": str(tmp_path)}
    )
    record = RunRecord(cfg=cfg, out=run_directory(cfg), plan=make_plan(cfg), accuracy=0.5)
    results = record.results(bytes_up=0, bytes_down=0, seconds=0.0)
    assert results["encoder"] is None and results["labels_in_clear"] is False
    assert results["alpha"] == cfg.alpha and results["accuracy_per_client"] is None


def test_private_index_covers_private_records_once(finished):
    cfg, plan, out, _ = finished
    files = sorted((out / "private_index").glob("client_*.npy"))
    assert [f.name for f in files] == ["client_000.npy", "client_001.npy", "client_002.npy"]
    parts = [np.load(f) for f in files]
    for part, expected in zip(parts, plan.client_idx, strict=True):
        np.testing.assert_array_equal(part, expected)
    everything = np.concatenate(parts)
    assert len(np.unique(everything)) == len(everything)  # each record once
    assert not np.intersect1d(everything, plan.public_idx).size  # disjoint from the public split
    n = len(plan.dataset.y_train)
    np.testing.assert_array_equal(np.sort(np.concatenate([everything, plan.public_idx])), np.arange(n))
    manifest = json.loads((out / "private_index" / "manifest.json").read_text())
    assert manifest["clients"] == 3 and manifest["dataset"] == "digits"


def test_history_csv(finished):
    _, _, out, _ = finished
    with (out / "history.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        columns = reader.fieldnames
    assert len(rows) == 3
    assert columns[0] == "round" and "client_accuracy" not in columns
    assert set(columns) == {"round", "accuracy", "train_loss"}
    assert [int(r["round"]) for r in rows] == [1, 2, 3]
    assert [float(r["accuracy"]) for r in rows] == [0.5, 0.7, 0.8]


def test_accuracy_png(finished):
    _, _, out, _ = finished
    png = out / "accuracy.png"
    assert png.is_file() and png.stat().st_size > 1000
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_public_only_reports_epsilon_zero_not_null():
    from fedlatent.config import RunConfig
    from fedlatent.federation.privacy_log import PrivacyLog
    from fedlatent.federation.report import privacy_summary

    summary = privacy_summary(RunConfig.from_run_config({"mode": "public-only", "num-clients": 3}), PrivacyLog())
    assert summary["epsilon"] == 0.0 and summary["epsilon_per_client"] == {"0": 0.0, "1": 0.0, "2": 0.0}
    assert summary["end_to_end_dp"] is True and "no private record" in summary["privacy_note"]


def test_rejected_replies_are_counted_by_phase_and_reason() -> None:
    from fedlatent.federation.report import rejected_summary

    oom = "client error: <class 'ray.exceptions.OutOfMemoryError'>:<'1 worker(s) were killed ...'>"
    rows = [
        {"phase": "classifier", "reason": oom},
        {"phase": "classifier", "reason": oom},
        {"phase": "share", "reason": "latents have shape (3, 5), expected (n, 32)"},
    ]
    out = rejected_summary(rows)
    assert out["total"] == 3 and out["by_phase"] == {"classifier": 2, "share": 1}
    assert out["by_reason"]["client error: <class 'ray.exceptions.OutOfMemoryError'>"] == 2
    assert rejected_summary([]) == {"total": 0, "by_phase": {}, "by_reason": {}}


@pytest.mark.parametrize(("encoder", "end_to_end"), [("scatternet", True), ("public", True), ("local", False)])
def test_only_an_encoder_that_saw_private_data_without_dp_breaks_the_guarantee(encoder: str, end_to_end: bool) -> None:
    from fedlatent.federation.privacy_log import PrivacyLog
    from fedlatent.federation.report import privacy_summary

    cfg = RunConfig.from_run_config({"mode": "latent-fedavg", "encoder": encoder, "num-clients": 2, "epsilon": 3.0})
    summary = privacy_summary(cfg, PrivacyLog(known={0: ["classifier"], 1: ["classifier"]}), [100, 100])
    assert summary["end_to_end_dp"] is end_to_end
    assert ("trained on private data without DP" in summary["privacy_note"]) is not end_to_end
