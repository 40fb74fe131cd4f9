"""Shared fixtures: one private SuperLink per session, and each federation run at most once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fedlatent.launch.superlink import LocalSuperLink
from fedlatent.runs import app_dir


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under xdist (``-n 2 --dist loadgroup``), the tests that read one shared federation run on one worker.

    Each worker has its own session: split, they would run that federation twice. The group is the
    (mode, encoder) a test is parametrized with; a test that names its federation in its body says
    so with its own ``xdist_group`` mark.
    """
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "runs" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("xdist_group"):
            combo = (params["mode"], params["encoder"]) if {"mode", "encoder"} <= set(params) else ("any",)
            item.add_marker(pytest.mark.xdist_group("runs-" + "-".join(combo)))


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models on 2 shared cores: extra intra-op threads only add contention (3-30x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Small but not trivial: 2 clients, 2 rounds, encoders trained long enough to be useful.
FAST = {
    "dataset": "digits",
    "num-clients": 2,
    "rounds": 2,
    "ae-epochs": 30,
    "encoder-rounds": 2,
    "local-epochs": 2,
    "server-epochs": 10,
}
COMBOS = [("raw", "public")] + [
    (m, e) for m in ("latent-fedavg", "latent-share") for e in ("public", "federated", "local", "scatternet")
]


@pytest.fixture(scope="session")
def link(tmp_path_factory: pytest.TempPathFactory):
    with LocalSuperLink(flwr_home=tmp_path_factory.mktemp("flwr-home")) as superlink:
        yield superlink


class Runs(dict):  # type: ignore[type-arg]
    """Run directory per (mode, encoder), each federation run once, on first use."""

    def __init__(self, link: LocalSuperLink, factory: pytest.TempPathFactory) -> None:
        super().__init__()
        self.link, self.factory = link, factory

    def __missing__(self, key: tuple[str, str]) -> Path:
        mode, encoder = key
        out = self.factory.mktemp(f"{mode}-{encoder}")
        # One cache for the session: partitions, the public autoencoder and ScatterNet features are
        # made once (keyed, so every run still gets exactly its own), not in every process.
        cache = self.factory.getbasetemp() / "shared-cache"  # test_resume continues these runs with this cache
        cfg = {**FAST, "mode": mode, "encoder": encoder, "out-dir": str(out), "cache-dir": str(cache)}
        self.link.run(app_dir(), run_config=cfg, num_supernodes=FAST["num-clients"], timeout=900)
        self[key] = out
        return out


@pytest.fixture(scope="session")
def runs(link: LocalSuperLink, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(link, tmp_path_factory)
