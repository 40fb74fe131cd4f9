"""Scale: 1,000 simulated clients share their latents in one real Flower run on this machine.

Before the data store, every ClientApp message decoded the whole data set again and 1,000
clients did not finish one round; the per-message cost now is a look-up (``test_plan`` counts
the decodes). No time is asserted here: speed targets live in the benchmark.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedlatent.federation.server_view import load_server_view
from fedlatent.launch.superlink import LocalSuperLink
from fedlatent.runs import app_dir

pytestmark = pytest.mark.slow

CLIENTS = 1000


def test_a_thousand_clients_share_latents(link: LocalSuperLink, tmp_path: Path) -> None:
    cfg = {
        "dataset": "digits",
        "num-clients": CLIENTS,
        "mode": "latent-share",
        "encoder": "public",
        "ae-epochs": 2,
        "server-epochs": 2,
        "out-dir": str(tmp_path),
    }
    link.run(app_dir(), run_config=cfg, num_supernodes=CLIENTS, timeout=1500)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["num_clients"] == CLIENTS and results["records"]["public"] > 0
    view = load_server_view(tmp_path / "server_view")
    assert view["manifest"]["rejected"] == []
    shared = {int(k.split("/p")[1].split(".")[0]): v for k, v in view.items() if k.startswith("latents/")}
    assert sorted(shared) == list(range(CLIENTS))
    per_client = results["records"]["per_client"]
    assert [len(shared[p]["labels"]) for p in range(CLIENTS)] == per_client  # each sent its own partition
    total = np.concatenate([shared[p]["latents"] for p in range(CLIENTS)])
    assert total.shape == (results["records"]["private"], 32) and np.isfinite(total).all()
    assert results["bytes_downloaded"] > CLIENTS * 4 * 32  # every client got the encoder with its query
