"""What a client keeps on its own disk for one run: its privacy ledger and its last release per phase.

Why: Flower keeps a node's ``context.state`` in the SuperNode's memory, for one Flower run. A
resumed fedlatent run (``fedlatent run --resume DIR``) is a new Flower run with fresh states, so
a ledger kept only there would restart at ε = 0, the one thing a client must never allow. A
client with a store (node-config ``state-dir`` on its own machine, else run-config
``client-state-dir``, which local simulations set) keeps, under ``<dir>/<run-key>/p<partition>/``::

    <name>.npz                  its last release of ``train-encoder``, ``train-classifier`` or
                                ``share-latents``: round, digest of the request, metrics, arrays,
                                and the ledger after the step that paid for it
    ledger.json                 the newest ledger again, written after that release
    local-encoder.npz           its local encoder (``encoder = local``) and the reply that reported it

A request it already answered (same phase, round and request digest) is answered again with the
same release: sending a release twice is post-processing and costs no ε, so a round that the
server repeats after a crash never spends twice, and the resumed run ends where an uninterrupted
one would. The run key comes from the server's checkpoint, so a new run never reads an old
run's store. Writes are atomic (temporary file, then rename).

A release and the ledger that paid for it are one commit (one rename), written before the reply
leaves: a crash before it loses both, and the reply never left, so nothing was spent; a crash
after it keeps both. Two files written one after the other would have a window in which the
ledger counts a step whose release is lost, and the repeated round would be charged twice
(a kill in that window once made a resumed run end on another model). Every ledger written
carries a sequence number and ``ledger()`` returns the newest, wherever it lies.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Arrays = dict[str, np.ndarray]
_HEAD = "__release__"  # the release's round, digest and metrics, as JSON, inside its own .npz


@dataclass(frozen=True)
class Release:
    """One reply a client sent: what it answered (round, request digest) and what it sent."""

    round: int
    digest: str
    metrics: dict[str, float]
    arrays: dict[str, Arrays]  # ArrayRecord name -> its arrays, in order


class ClientStore:
    """One client's directory for one run (see module docstring)."""

    def __init__(self, root: str | Path, *, run_key: str, partition: int) -> None:
        if not run_key or not run_key.isalnum():
            raise ValueError(f"run key must be a non-empty alphanumeric string, got {run_key!r}")
        self.path = Path(root) / run_key / f"p{partition:05d}"
        self.path.mkdir(parents=True, exist_ok=True)

    def ledger(self) -> dict[str, Any] | None:
        """The newest persisted ledger state (``Ledger.to_config``), or None before the first private step."""
        newest = max(self._ledgers(), key=lambda entry: entry[0], default=None)
        return newest[1] if newest is not None else None

    def _ledgers(self) -> list[tuple[int, dict[str, Any]]]:
        """Every (sequence number, ledger state) on disk: ledger.json's and those inside releases."""
        found = []
        path = self.path / "ledger.json"
        if path.is_file():
            entry = json.loads(path.read_text())
            found.append((int(entry["seq"]), entry["state"]))
        for release in self.path.glob("*.npz"):
            with np.load(release) as npz:
                if (entry := json.loads(str(npz[_HEAD])).get("ledger")) is not None:
                    found.append((int(entry["seq"]), entry["state"]))
        return found

    def _next_seq(self) -> int:
        return 1 + max((seq for seq, _ in self._ledgers()), default=0)

    def _write_ledger(self, seq: int, state: Mapping[str, Any]) -> None:
        _write_text(self.path / "ledger.json", json.dumps({"seq": seq, "state": dict(state)}))

    def release(self, name: str) -> Release | None:
        """The last release stored under ``name`` (a phase, or ``local-encoder``), or None."""
        path = self.path / f"{name}.npz"
        if not path.is_file():
            return None
        with np.load(path) as npz:
            head = json.loads(str(npz[_HEAD]))
            arrays: dict[str, Arrays] = {record: {} for record in head["records"]}
            for key in npz.files:
                if key != _HEAD:
                    record, _, array = key.partition("/")
                    arrays[record][array] = npz[key]
        return Release(round=int(head["round"]), digest=str(head["digest"]), metrics=head["metrics"], arrays=arrays)

    def save_release(self, name: str, release: Release, *, ledger: Mapping[str, Any] | None = None) -> None:
        """Store ``release`` as the last one under ``name``, with the ``ledger`` that paid for it, in one file.

        One file, so never half of one release and half of another, nor a ledger without its release.
        """
        head: dict[str, Any] = {"round": release.round, "digest": release.digest, "metrics": release.metrics,
                                "records": list(release.arrays)}  # fmt: skip
        seq = self._next_seq() if ledger is not None else 0
        if ledger is not None:
            head["ledger"] = {"seq": seq, "state": dict(ledger)}
        flat = {f"{record}/{key}": value for record, arrays in release.arrays.items() for key, value in arrays.items()}
        tmp = self.path / f".{name}.npz.tmp{os.getpid()}"
        with tmp.open("wb") as f:
            np.savez(f, **{_HEAD: np.array(json.dumps(head))}, **flat)  # type: ignore[arg-type]
        os.replace(tmp, self.path / f"{name}.npz")  # the commit
        if ledger is not None:
            self._write_ledger(seq, ledger)  # a readable copy; a crash before it loses nothing (``ledger()``)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
