"""What a client keeps across restarts, and the secrecy of its DP noise, through the real ClientApp handlers.

The handlers are called as Flower calls them (a Message and the node's Context), without a
federation: a repeated request is answered with the same release at no new ε, a resumed run
never starts a client's ledger again at 0, and the noise of a release cannot be recomputed
from the run's public settings unless ``reproducible-noise`` says so (and the results then
say the run is not DP).
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomllib
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.metadata import Metadata
from flwr.clientapp import ClientApp

from fedlatent.config import RunConfig
from fedlatent.federation import payloads as P
from fedlatent.federation.client_store import ClientStore, Release
from fedlatent.federation.privacy_log import PrivacyLog
from fedlatent.federation.report import privacy_summary
from fedlatent.learning.seeding import generator
from fedlatent.learning.training import encode
from fedlatent.plan import build_classifier, build_encoder, make_plan, release_noise_std
from fedlatent.privacy.ledger import Ledger
from fedlatent.privacy.mechanisms import gaussian_release


def _load_client_app() -> ClientApp:
    """The ClientApp as Flower finds it: the component pyproject.toml names (nothing imports the apps)."""
    components = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    module, _, name = components["components"]["clientapp"].partition(":")
    return getattr(importlib.import_module(module), name)


APP = _load_client_app()
BASE = {"dataset": "digits", "mode": "raw", "num-clients": 2, "local-epochs": 1, "rounds": 3}


def _cfg(**keys: Any) -> RunConfig:
    return RunConfig.from_run_config({**BASE, **{k.replace("_", "-"): v for k, v in keys.items()}})


def _context(cfg: RunConfig, pid: int = 0, **node: Any) -> Context:
    return Context(run_id=1, node_id=7, node_config={"partition-id": pid, "num-partitions": 2, **node},
                   state=RecordDict(), run_config=cfg.to_run_config())  # fmt: skip


def _message(kind: str, content: RecordDict, **config: Any) -> Message:
    content[P.CONFIG] = ConfigRecord({"run-key": "abc123", "resumed": False, **config})
    meta = Metadata(run_id=1, message_id="m", src_node_id=0, dst_node_id=7, reply_to_message_id="", group_id="1",
                    created_at=time.time(), ttl=60.0, message_type=kind)  # fmt: skip
    return Message(content=content, metadata=meta)


def _train(cfg: RunConfig, rnd: int, **config: Any) -> Message:
    model = build_classifier(cfg, make_plan(cfg).dataset)
    content = RecordDict({P.ARRAYS: P.module_to_arrays(model)})
    return _message("train", content, phase=P.PHASE_CLASSIFIER, **{"server-round": rnd, **config})


def _share(cfg: RunConfig) -> Message:
    encoder = build_encoder(cfg, make_plan(cfg).dataset)
    return _message("query.share_latents", RecordDict({P.ARRAYS: P.module_to_arrays(encoder)}))


def _weights(reply: Message) -> dict[str, np.ndarray]:
    return P.record_numpy(reply.content.array_records[P.ARRAYS])


def _spent(reply: Message) -> float:
    return P.metric(reply.content, "epsilon-spent")


def test_the_store_keeps_a_ledger_and_the_last_release_of_each_phase(tmp_path) -> None:
    store = ClientStore(tmp_path, run_key="r1", partition=3)
    assert store.ledger() is None and store.release("train-classifier") is None
    arrays = {P.ARRAYS: {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(2, np.float32)}}
    release = Release(round=2, digest="d", metrics={"x": 1.5}, arrays=arrays)
    store.save_release("train-classifier", release, ledger={"budget": 3.0})
    again = ClientStore(tmp_path, run_key="r1", partition=3)  # a fresh process of the same client
    assert again.ledger() == {"budget": 3.0}
    kept = again.release("train-classifier")
    assert kept is not None and (kept.round, kept.digest, kept.metrics) == (2, "d", {"x": 1.5})
    assert list(kept.arrays[P.ARRAYS]) == ["w", "b"]  # order kept: it is the model's state_dict order
    np.testing.assert_array_equal(kept.arrays[P.ARRAYS]["w"], arrays[P.ARRAYS]["w"])
    assert ClientStore(tmp_path, run_key="r2", partition=3).ledger() is None  # another run starts clean
    assert not list(again.path.glob(".*tmp*"))  # every write went through a rename
    with pytest.raises(ValueError, match="alphanumeric"):
        ClientStore(tmp_path, run_key="../escape", partition=0)


def test_a_repeated_round_gets_the_same_release_and_costs_no_epsilon(tmp_path) -> None:
    cfg = _cfg(epsilon=3.0, client_state_dir=str(tmp_path))
    first = APP(_train(cfg, 1), _context(cfg))
    ledger = Ledger.from_config(ClientStore(tmp_path, run_key="abc123", partition=0).ledger() or {})
    assert len(ledger.history) == 1 and ledger.spent() == pytest.approx(_spent(first))
    # The server crashed after the client answered; the resumed run asks round 1 again from a fresh state.
    repeated = APP(_train(cfg, 1, resumed=True), _context(cfg))
    assert _spent(repeated) == _spent(first)
    for key, value in _weights(first).items():
        np.testing.assert_array_equal(_weights(repeated)[key], value)
    ledger = Ledger.from_config(ClientStore(tmp_path, run_key="abc123", partition=0).ledger() or {})
    assert len(ledger.history) == 1  # no second charge
    second = APP(_train(cfg, 2), _context(cfg))  # a new round is a new release, and costs
    assert _spent(second) > _spent(first)


class _Crash(BaseException):
    """A power cut inside the handler: nothing after it runs (not an Exception, so nothing catches it)."""


@pytest.mark.parametrize("where", ["before the commit", "after the commit"])
def test_a_crash_anywhere_in_a_private_step_charges_the_repeated_round_once(
    tmp_path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """The release and its ledger are one commit: a crash never leaves a charge without its release.

    Before the commit nothing is kept (the reply never left: nothing was spent) and the round is
    computed again; after it, the stored release is sent again. Either way one step in the ledger.
    """
    cfg = _cfg(epsilon=3.0, client_state_dir=str(tmp_path))
    store = ClientStore(tmp_path, run_key="abc123", partition=0)
    target = "savez" if where == "before the commit" else "_write_ledger"
    owner: Any = np if target == "savez" else ClientStore

    def cut(*args: Any, **kwargs: Any) -> None:
        raise _Crash

    with monkeypatch.context() as patch:
        patch.setattr(owner, target, cut)
        with pytest.raises(_Crash):
            APP(_train(cfg, 1), _context(cfg))
    assert (store.release("train-classifier") is None) == (where == "before the commit")
    assert (store.ledger() is None) == (where == "before the commit")  # no charge without its release
    repeated = APP(_train(cfg, 1, resumed=True), _context(cfg))
    ledger = Ledger.from_config(store.ledger() or {})
    assert len(ledger.history) == 1 and _spent(repeated) == pytest.approx(ledger.spent())
    assert ClientStore(tmp_path, run_key="abc123", partition=0).ledger() == store.ledger()


def test_the_newest_ledger_wins_wherever_it_lies(tmp_path) -> None:
    store = ClientStore(tmp_path, run_key="r1", partition=0)
    release = Release(round=1, digest="d", metrics={}, arrays={P.ARRAYS: {"w": np.zeros(2, np.float32)}})
    store.save_release("train-encoder", release, ledger={"n": 1})
    store.save_release("train-classifier", release, ledger={"n": 2})
    assert store.ledger() == {"n": 2}
    (store.path / "ledger.json").unlink()  # as if the crash came between the release and its copy
    assert store.ledger() == {"n": 2}
    store.save_release("train-encoder", release, ledger={"n": 3})  # newer, in the file written first
    assert store.ledger() == {"n": 3}
    store.save_release("share-latents", release)  # a release no private step paid for changes nothing
    assert store.ledger() == {"n": 3}


def test_a_resumed_client_without_a_store_refuses_to_restart_its_ledger() -> None:
    cfg = _cfg(epsilon=3.0)
    with pytest.raises(RuntimeError, match="ledger in memory only"):
        APP(_train(cfg, 2, resumed=True), _context(cfg))
    APP(_train(cfg, 1), _context(cfg))  # a first run starts a ledger as before


def test_a_nodes_own_state_dir_wins_over_the_run_config(tmp_path) -> None:
    cfg = _cfg(epsilon=3.0, client_state_dir=str(tmp_path / "server-said"))
    APP(_train(cfg, 1), _context(cfg, **{"state-dir": str(tmp_path / "mine")}))
    assert (tmp_path / "mine" / "abc123" / "p00000" / "ledger.json").is_file()
    assert not (tmp_path / "server-said").exists()


def test_a_local_encoder_is_trained_once_per_run(tmp_path) -> None:
    cfg = _cfg(mode="latent-fedavg", encoder="local", ae_epochs=2, client_state_dir=str(tmp_path))
    query = _message("query.local_encoder", RecordDict())
    first, second = _context(cfg), _context(cfg)
    APP(query, first)
    reply = APP(query, second)  # a resumed run's fresh state: the same encoder, not a new one
    assert reply.content.array_records == {}  # the encoder never leaves the client
    a, b = (P.record_numpy(ctx.state.array_records["encoder"]) for ctx in (first, second))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_release_noise_is_secret_unless_reproducible_noise_and_then_the_run_is_not_dp() -> None:
    cfg = _cfg(mode="latent-share", epsilon=3.0)
    released = [P.record_numpy(APP(_share(cfg), _context(cfg)).content.array_records[P.LATENTS])
                for _ in range(2)]  # fmt: skip
    assert not np.allclose(released[0]["latents"], released[1]["latents"])  # fresh noise each time

    # What an attacker who read the settings would compute: the release with noise from the public seed.
    plan = make_plan(cfg)
    encoder = P.load_arrays(build_encoder(cfg, plan.dataset), P.arrays(_share(cfg).content))
    clean = encode(encoder, plan.client(0)[0])
    guess = gaussian_release(
        clean, clip=cfg.latent_clip, std=release_noise_std(cfg), generator=generator(cfg.seed, 0, 0, 3)
    )
    assert not np.allclose(guess.numpy(), released[0]["latents"], atol=1e-3)

    open_cfg = _cfg(mode="latent-share", epsilon=3.0, reproducible_noise=True)
    exposed = P.record_numpy(APP(_share(open_cfg), _context(open_cfg)).content.array_records[P.LATENTS])
    np.testing.assert_allclose(exposed["latents"], guess.numpy(), atol=1e-5)  # the attack works: no DP
    summary = privacy_summary(open_cfg, PrivacyLog(known={0: ["share-latents"], 1: ["share-latents"]}))
    assert summary["end_to_end_dp"] is False and summary["noise_secret"] is False
    assert "NO differential privacy" in summary["privacy_note"]
    assert privacy_summary(_cfg(epsilon=3.0, mode="raw"), PrivacyLog(known={0: ["classifier"]}))["noise_secret"] is True


def test_dp_sgd_batches_and_noise_are_not_the_public_seeds() -> None:
    cfg = _cfg(mode="raw", epsilon=3.0)
    updates = [_weights(APP(_train(cfg, 1), _context(cfg))) for _ in range(2)]
    assert any(not np.array_equal(updates[0][k], updates[1][k]) for k in updates[0])
    open_cfg = _cfg(mode="raw", epsilon=3.0, reproducible_noise=True)
    same = [_weights(APP(_train(open_cfg, 1), _context(open_cfg))) for _ in range(2)]
    assert all(np.array_equal(same[0][k], same[1][k]) for k in same[0])
