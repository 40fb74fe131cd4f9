"""The outside fuzz of the real ServerApp (``bench.server_fuzz``) on each of its seven reply paths.

Each path runs whole federations (the real server code, the real ClientApp in-process) with two
hostile nodes of six whose every reply is mutated; asserted: no run crashes, no reply the oracle
calls invalid is accepted or goes unrecorded, no valid one is refused, the privacy figures are the
clients' own, and every kind of mutation the path admits was sent (so that the test cannot pass
vacuously). Seeds are fixed: each test replays the same runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedlatent.bench.fuzz_judge import Delivery, judge, reason_class, verdict
from fedlatent.bench.fuzz_mutations import EITHER, GENERIC, VALID
from fedlatent.bench.server_fuzz import PATHS, fuzz

ARRAYS = {"array-dtype", "array-shape", "non-finite-array", "garbage-bytes", "lying-metadata", "array-keys"}
COMMON = {*GENERIC, "honest", "steal-partition"}
TRAIN = COMMON | ARRAYS | {"absurd-weights", "shrunk-update", "out-of-range"}
SHARE = COMMON | ARRAYS | {"label-out-of-range", "jittered-latents", "relabelled"}
DP = {"epsilon-zero", "epsilon-lower", "epsilon-higher", "noise-multiplier-zero", "noise-multiplier-halved"}
# Every kind each path admits, and the replies it takes to send them all (the least-sent kind goes first).
EXPECTED = {
    "train-plain": (TRAIN | {"large-loss"}, 120),
    "train-dp": (TRAIN | DP, 120),
    "client-level-dp": (TRAIN | {"large-loss"}, 120),
    "share-plain": (SHARE | {"absurd-latents"}, 120),
    "share-dp": (SHARE | DP | {"absurd-latents", "out-of-range", "noise-std-zero", "noise-std-halved"}, 120),
    "evaluate-rounds": (TRAIN | {"large-loss", "edge-accuracy"}, 140),
    "final-evaluate": (SHARE | {"absurd-latents-unbounded", "large-loss", "edge-accuracy", "out-of-range"}, 120),
}


SLOW = {"train-dp", "final-evaluate"}  # DP-SGD replies (per-sample gradients); local autoencoders: 10-35 s


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p in SLOW else p for p in PATHS])
def test_hostile_replies_on_every_path_are_refused_and_honest_ones_kept(path: str, tmp_path: Path) -> None:
    kinds, replies = EXPECTED[path]
    tally = fuzz(path, replies=replies, seed=1, out=tmp_path, rate=1.0)
    assert tally["failures"] == []
    assert (tally["crashes"], tally["violations_accepted"], tally["valid_refused"], tally["unrecorded"]) == (0, 0, 0, 0)
    assert tally["privacy"]["checked"] == tally["runs"] and tally["privacy"]["problems"] == 0
    assert set(tally["kinds"]) == kinds  # every kind sent, and no honest client failed ("client-error")
    for kind, entry in tally["kinds"].items():
        if kind in EITHER:  # either fate is right; each one is recorded
            assert entry["accepted"] + entry["refused"] == entry["sent"], (kind, entry)
            continue
        assert entry["accepted" if kind in VALID else "refused"] == entry["sent"], (kind, entry)
        assert kind in VALID or sum(entry["reasons"].values()) == entry["sent"], (kind, entry)
    assert tally["identify"]["replies"] >= 6 * tally["runs"] and tally["identify"]["mutated"] > 0


def test_the_judge_matches_replies_to_the_server_view_and_flags_each_kind_of_failure(tmp_path: Path) -> None:
    view = tmp_path / "server_view"
    view.mkdir()
    (view / "metrics.jsonl").write_text('{"phase": "train", "round": 1, "node_id": 7, "metrics": {}}\n' * 2)
    rejected = [{"phase": "train", "round": 1, "node_id": 8, "reason": "count 3 != 4"}]
    (view / "manifest.json").write_text(json.dumps({"rejected": rejected}))
    deliveries = [Delivery("train", 1, 7, "honest"), Delivery("train", 1, 7, "duplicate"),
                  Delivery("train", 1, 8, "count-lie"), Delivery("train", 1, 9, "error")]  # fmt: skip
    fates, stray = judge(view, deliveries)
    assert [(d.kind, fate) for d, fate, _ in fates] == [
        ("honest", "accepted"), ("duplicate", "accepted"), ("count-lie", "refused"), ("error", "unrecorded")
    ]  # fmt: skip
    assert [verdict(d.kind, fate) for d, fate, _ in fates] == ["", "violations_accepted", "", "unrecorded"]
    assert verdict("honest", "refused") == "valid_refused" and stray == []
    expected = "num-examples # != # records of partition #"
    assert reason_class("num-examples 190 != 191 records of partition 3") == expected
