"""The server view: exactly what the server received in a run, plus what it knows.

Attacks (``fedlatent.attacks``) read this directory and the public split, nothing else:
the interface enforces the honest-but-curious threat model. Layout (all arrays ``.npz``):

    server_view/
      manifest.json          run settings the attacker knows, and an index of the files
      public_index.npy       indices (into the training set) of the public split = aux data
      encoder.npz            the frozen encoder, when the server holds one (public, federated)
      received/<phase>-r<round>-p<partition>.npz   every accepted weight upload
      sent/<phase>-r<round>.npz                    the global weights the server sent
      latents/p<partition>.npz                     shared latents + labels (latent-share)
      final_model.npz        the final classifier
      metrics.jsonl          every metric record received, with phase/round/partition

Everything in ``received``/``latents``/``metrics.jsonl`` passed ``payloads`` checks first;
rejected messages are listed in ``manifest.json`` under ``rejected`` with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord

from fedlatent.federation import payloads as P

FORMAT_VERSION = 1


class ServerView:
    """Writer for one run's ``server_view/`` directory (explicit object, no globals)."""

    def __init__(self, root: Path, *, settings: Mapping[str, Any]) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "settings": dict(settings),
            "files": [],
            "rejected": [],
        }
        self.metrics_lines = 0  # lines of metrics.jsonl written by this run (a checkpoint records it)

    def _save(self, rel: str, arrays: Mapping[str, np.ndarray]) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **dict(arrays))  # type: ignore[arg-type]
        self.manifest["files"].append(rel)

    def public_index(self, idx: np.ndarray) -> None:
        """Record which training records are public (the attacker's auxiliary data)."""
        np.save(self.root / "public_index.npy", idx)
        self.manifest["files"].append("public_index.npy")

    def encoder(self, record: ArrayRecord, *, arch: Mapping[str, Any]) -> None:
        """The frozen encoder the server holds, with its architecture."""
        self._save("encoder.npz", P.record_numpy(record))
        self.manifest["encoder_arch"] = dict(arch)

    def received(self, phase: str, rnd: int, partition: int, record: ArrayRecord) -> None:
        """A client's accepted weight upload."""
        self._save(f"received/{phase}-r{rnd:03d}-p{partition:03d}.npz", P.record_numpy(record))

    def sent(self, phase: str, rnd: int, record: ArrayRecord) -> None:
        """The global weights broadcast in a round."""
        self._save(f"sent/{phase}-r{rnd:03d}.npz", P.record_numpy(record))

    def secure_sum(self, rnd: int, total: np.ndarray, partitions: list[int]) -> None:
        """The only thing SecAgg+ lets the server see of a round: the sum, and whose vectors it holds."""
        self._save(f"secure/r{rnd:03d}.npz", {"sum": total, "partitions": np.asarray(partitions, dtype=np.int64)})

    def latents(self, partition: int, latents: np.ndarray, labels: np.ndarray) -> None:
        """A client's accepted latent release."""
        self._save(f"latents/p{partition:03d}.npz", {"latents": latents, "labels": labels})

    def final_model(self, record: ArrayRecord) -> None:
        """The trained classifier at the end of the run."""
        self._save("final_model.npz", P.record_numpy(record))

    def metrics(self, phase: str, rnd: int, node_id: int, values: Mapping[str, Any]) -> None:
        """One metric record as received."""
        line = {"phase": phase, "round": rnd, "node_id": node_id, "metrics": dict(values)}
        with (self.root / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(line) + "\n")
        self.metrics_lines += 1

    def rejected(self, phase: str, rnd: int, node_id: int, reason: str) -> None:
        """A reply that failed the checks (kept out of training and out of the view)."""
        self.manifest["rejected"].append({"phase": phase, "round": rnd, "node_id": node_id, "reason": reason})

    def load(self, rel: str) -> ArrayRecord:
        """An array file this view wrote (e.g. ``encoder.npz``), as the record it was written from."""
        if rel not in self.manifest["files"]:
            raise FileNotFoundError(f"{rel} is not in the server view {self.root}")
        with np.load(self.root / rel) as npz:
            return P.numpy_record({k: npz[k] for k in npz.files})

    def stored_latents(self) -> dict[int, dict[str, np.ndarray]]:
        """Every latent release in the view, by partition (what a resumed latent-share run pools)."""
        out = {}
        for rel in self.manifest["files"]:
            if rel.startswith("latents/p"):
                with np.load(self.root / rel) as npz:
                    out[int(rel.removeprefix("latents/p").removesuffix(".npz"))] = {k: npz[k] for k in npz.files}
        return out

    def restore(self, manifest: Mapping[str, Any], *, metrics_lines: int) -> None:
        """Continue a view as a checkpoint left it: its manifest, and nothing received after it.

        Files the manifest does not list and metric lines past ``metrics_lines`` came from the
        step the run was killed in; that step is redone, so they are removed rather than kept twice.
        """
        self.manifest = json.loads(json.dumps(dict(manifest)))  # a copy the run can extend
        kept = set(self.manifest["files"]) | {"manifest.json", "metrics.jsonl"}
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and path.relative_to(self.root).as_posix() not in kept:
                path.unlink()
        log = self.root / "metrics.jsonl"
        lines = log.read_text().splitlines(keepends=True) if log.is_file() else []
        log.write_text("".join(lines[:metrics_lines]))
        self.metrics_lines = metrics_lines

    def close(self) -> None:
        """Write ``manifest.json``."""
        (self.root / "manifest.json").write_text(json.dumps(self.manifest, indent=2))


def load_server_view(root: str | Path) -> dict[str, Any]:
    """Load a server view: the manifest plus every array file, keyed by relative path.

    Returns
    -------
    dict
        ``{"manifest": {...}, "public_index": ndarray, "<rel path>": {name: ndarray}}``.
    """
    root = Path(root)
    manifest = json.loads((root / "manifest.json").read_text())
    view: dict[str, Any] = {"manifest": manifest}
    for rel in manifest["files"]:
        if rel.endswith(".npy"):
            view[rel.removesuffix(".npy")] = np.load(root / rel)
        else:
            with np.load(root / rel) as npz:
                view[rel] = {k: npz[k] for k in npz.files}
    return view
