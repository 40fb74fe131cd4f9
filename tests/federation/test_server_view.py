"""Tests for fedlatent.server_view: what is written is what is loaded back."""

from __future__ import annotations

import json

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

from fedlatent.federation.payloads import module_to_arrays
from fedlatent.federation.server_view import FORMAT_VERSION, ServerView, load_server_view
from fedlatent.learning.models import Encoder, LatentClassifier


def test_write_and_load_server_view(tmp_path):
    torch.manual_seed(0)
    encoder = module_to_arrays(Encoder(image_shape=(1, 8, 8), latent_dim=4, arch="conv"))
    clf = module_to_arrays(LatentClassifier(latent_dim=4, num_classes=10, hidden=(8,)))
    received = ArrayRecord({"w": Array(np.arange(6, dtype=np.float32).reshape(2, 3))})
    sent = ArrayRecord({"w": Array(np.full((2, 3), 0.5, np.float32))})
    public = np.array([3, 1, 4, 15, 9], dtype=np.int64)
    z = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    y = np.array([0, 9, 2, 2, 5], dtype=np.int64)

    root = tmp_path / "server_view"
    view = ServerView(root, settings={"mode": "latent-share", "seed": 3})
    view.public_index(public)
    view.encoder(encoder, arch={"arch": "conv", "latent_dim": 4})
    view.received("classifier", 1, 2, received)
    view.sent("classifier", 1, sent)
    view.latents(7, z, y)
    view.final_model(clf)
    view.metrics("classifier", 1, 1234, {"num-examples": 5, "loss": 0.5})
    view.rejected("classifier", 1, 999, "weight 'w' contains NaN or infinite values")
    view.close()

    loaded = load_server_view(root)
    manifest = loaded["manifest"]
    expected_files = {
        "public_index.npy",
        "encoder.npz",
        "received/classifier-r001-p002.npz",
        "sent/classifier-r001.npz",
        "latents/p007.npz",
        "final_model.npz",
    }
    assert set(manifest["files"]) == expected_files
    assert len(manifest["files"]) == len(expected_files)
    assert all((root / rel).is_file() for rel in manifest["files"])
    assert manifest["format"] == FORMAT_VERSION
    assert manifest["settings"] == {"mode": "latent-share", "seed": 3}
    assert manifest["encoder_arch"] == {"arch": "conv", "latent_dim": 4}
    assert manifest["rejected"] == [
        {"phase": "classifier", "round": 1, "node_id": 999, "reason": "weight 'w' contains NaN or infinite values"}
    ]

    np.testing.assert_array_equal(loaded["public_index"], public)
    assert loaded["public_index"].dtype == np.int64
    for rel, record in (
        ("encoder.npz", encoder),
        ("final_model.npz", clf),
        ("received/classifier-r001-p002.npz", received),
        ("sent/classifier-r001.npz", sent),
    ):
        assert list(loaded[rel]) == list(record.keys()), rel
        for key in record.keys():
            np.testing.assert_array_equal(loaded[rel][key], record[key].numpy())
            assert loaded[rel][key].dtype == record[key].numpy().dtype
    np.testing.assert_array_equal(loaded["latents/p007.npz"]["latents"], z)
    np.testing.assert_array_equal(loaded["latents/p007.npz"]["labels"], y)

    lines = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
    assert lines == [{"phase": "classifier", "round": 1, "node_id": 1234, "metrics": {"num-examples": 5, "loss": 0.5}}]


def test_empty_view(tmp_path):
    view = ServerView(tmp_path / "v", settings={})
    view.close()
    loaded = load_server_view(tmp_path / "v")
    assert loaded == {"manifest": {"format": FORMAT_VERSION, "settings": {}, "files": [], "rejected": []}}
    assert not (tmp_path / "v" / "metrics.jsonl").exists()


def test_manifest_written_only_on_close(tmp_path):
    view = ServerView(tmp_path / "v", settings={})
    view.public_index(np.arange(3))
    assert not (tmp_path / "v" / "manifest.json").exists()
    view.close()
    assert json.loads((tmp_path / "v" / "manifest.json").read_text())["files"] == ["public_index.npy"]
