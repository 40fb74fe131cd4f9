"""Tests for fedlatent.learning.cache: one training per key, never a foreign or stale entry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fedlatent.learning.cache import cached_training, data_digest


def test_cache_trains_once_per_key_and_never_serves_a_foreign_entry(tmp_path: Path) -> None:
    calls = []

    def make(seed: int) -> tuple[torch.nn.Module, object]:
        module = torch.nn.Linear(3, 2)

        def train() -> float:
            calls.append(seed)
            with torch.no_grad():
                module.weight.fill_(seed)
            return 0.5 + seed

        return module, train

    key = {"seed": 1, "data": data_digest(np.ones((2, 3), np.float32))}
    m1, t1 = make(1)
    assert cached_training(tmp_path, name="ae", key=key, module=m1, train=t1) == (1.5, False)
    m2, t2 = make(2)
    assert cached_training(tmp_path, name="ae", key=key, module=m2, train=t2) == (1.5, True)
    assert calls == [1] and torch.all(m2.weight == 1)
    other = {**key, "data": data_digest(np.zeros((2, 3), np.float32))}  # other data: another entry
    m3, t3 = make(3)
    assert cached_training(tmp_path, name="ae", key=other, module=m3, train=t3) == (3.5, False)
    # A stored entry whose key differs (collision, foreign file) is retrained, not served.
    entry = next(tmp_path.glob("ae-*.pt"))
    stored = torch.load(entry, weights_only=True)
    torch.save({**stored, "key": "something else"}, entry)
    m4, t4 = make(4)
    assert cached_training(tmp_path, name="ae", key=json.loads(stored["key"]), module=m4, train=t4)[1] is False
    m5, t5 = make(5)
    assert cached_training("", name="ae", key=key, module=m5, train=t5) == (5.5, False)  # no cache dir: train
